//! A small in-window file picker: it works on any desktop, with no desktop portal or
//! toolkit dialog (no egui 0.37 file-dialog crate exists). Lists a folder, goes up and
//! down, takes a typed path. Folders are read on the picker's own loader thread (one,
//! started with the picker's first use), never on the UI thread: a slow disk or a
//! network mount shows "reading…" while the window goes on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads one folder's listing: (name, is a folder), hidden names left out, folders
/// first; `None` when the path is no folder (a file, to be picked). Replaceable, to
/// test a slow disk.
pub type DirReader =
    Arc<dyn Fn(&Path) -> std::io::Result<Option<Vec<(String, bool)>>> + Send + Sync>;

/// What the loader found at the path asked.
type Listing = (PathBuf, std::io::Result<Option<Vec<(String, bool)>>>);

/// The picker's state; closed until [`FilePicker::open`].
pub struct FilePicker {
    open: bool,
    dir: PathBuf,
    entries: Vec<(String, bool)>,
    typed: String,
    error: Option<String>,
    /// The folder being read, if a read is under way.
    reading: Option<PathBuf>,
    read_dir: DirReader,
    loader: Option<Loader>,
}

/// The loader thread's two ends: one folder asked at a time (a newer ask replaces one
/// not yet started), listings back.
struct Loader {
    ask: flume::Sender<(PathBuf, egui::Context)>,
    /// The asking queue's other end, to take back an ask not yet started.
    unask: flume::Receiver<(PathBuf, egui::Context)>,
    listings: flume::Receiver<Listing>,
}

impl Default for FilePicker {
    fn default() -> FilePicker {
        FilePicker {
            open: false,
            dir: PathBuf::new(),
            entries: Vec::new(),
            typed: String::new(),
            error: None,
            reading: None,
            read_dir: Arc::new(read_listing),
            loader: None,
        }
    }
}

/// The listing of `dir` from the file system.
fn read_listing(dir: &Path) -> std::io::Result<Option<Vec<(String, bool)>>> {
    if !dir.is_dir() && dir.exists() {
        return Ok(None);
    }
    let mut entries: Vec<(String, bool)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().is_dir(),
            )
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    entries.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| a.0.to_lowercase().cmp(&b.0.to_lowercase()))
    });
    Ok(Some(entries))
}

impl FilePicker {
    /// Opens the picker on `dir`; its listing comes from the loader thread.
    pub fn open(&mut self, ctx: &egui::Context, dir: &Path) {
        self.open = true;
        self.typed = dir.display().to_string();
        self.go(ctx, dir.to_owned());
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Reads folders with `reader` instead of the file system (a slow one, in tests).
    pub fn set_dir_reader(&mut self, reader: DirReader) {
        self.read_dir = reader;
        self.loader = None;
    }

    /// Asks the loader for `dir`'s listing; the current one stays shown meanwhile.
    fn go(&mut self, ctx: &egui::Context, dir: PathBuf) {
        if self.loader.is_none() {
            self.loader = self.start_loader();
        }
        let Some(loader) = &self.loader else {
            self.error = Some("cannot start the folder reader".to_owned());
            return;
        };
        // Capacity 1: an ask not yet started is replaced by this newer one.
        let _ = loader.unask.try_recv();
        if loader.ask.try_send((dir.clone(), ctx.clone())).is_err() {
            self.error = Some("the folder reader is busy; try again".to_owned());
            return;
        }
        self.reading = Some(dir);
    }

    fn start_loader(&self) -> Option<Loader> {
        let (ask, asks) = flume::bounded::<(PathBuf, egui::Context)>(1);
        let asks_for_unask = asks.clone();
        let (listed, listings) = flume::bounded(1);
        let read_dir = self.read_dir.clone();
        std::thread::Builder::new()
            .name("texstream picker".into())
            .spawn(move || {
                // Ends when the picker (both of its ends of the queue) is gone.
                for (dir, ctx) in asks.iter() {
                    let listing = read_dir(&dir);
                    // Newest wins: a listing the UI has not taken yet is replaced.
                    let _ = listed.try_send((dir, listing));
                    ctx.request_repaint();
                }
            })
            .ok()?;
        Some(Loader {
            ask,
            unask: asks_for_unask,
            listings,
        })
    }

    /// Takes what the loader finished, if anything: a listing to show, or the file a
    /// typed path named (returned, picked).
    fn take_listing(&mut self) -> Option<PathBuf> {
        let loader = self.loader.as_ref()?;
        let mut picked = None;
        for (dir, listing) in loader.listings.try_iter() {
            if self.reading.as_ref() != Some(&dir) {
                continue; // an older ask, overtaken
            }
            self.reading = None;
            match listing {
                Ok(Some(entries)) => {
                    self.entries = entries;
                    self.typed = dir.display().to_string();
                    self.dir = dir;
                    self.error = None;
                }
                Ok(None) => picked = Some(dir),
                Err(e) => self.error = Some(format!("cannot open {}: {e}", dir.display())),
            }
        }
        picked
    }

    /// Draws the picker window; returns the file the user picked.
    pub fn picker_ui(&mut self, ctx: &egui::Context, title: &str) -> Option<PathBuf> {
        if !self.open {
            return None;
        }
        let mut picked = self.take_listing();
        let mut go_to = None;
        let mut open = self.open;
        egui::Window::new(title)
            .open(&mut open)
            .default_size([480.0, 400.0])
            .show(ctx, |ui| {
                ui.horizontal(|ui| {
                    if ui.button("Up").clicked() {
                        if let Some(parent) = self.dir.parent() {
                            go_to = Some(parent.to_owned());
                        }
                    }
                    let edit = ui.text_edit_singleline(&mut self.typed);
                    if edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                        // The loader finds out whether it is a folder (listed) or a
                        // file (picked): no file-system call here.
                        go_to = Some(PathBuf::from(self.typed.trim()));
                    }
                });
                if let Some(dir) = &self.reading {
                    ui.label(format!("reading {}…", dir.display()));
                }
                if let Some(error) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, error);
                }
                ui.separator();
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| {
                        for (name, is_dir) in &self.entries {
                            let label = if *is_dir {
                                format!("{name}/")
                            } else {
                                name.clone()
                            };
                            if ui.selectable_label(false, label).clicked() {
                                let path = self.dir.join(name);
                                if *is_dir {
                                    go_to = Some(path);
                                } else {
                                    picked = Some(path);
                                }
                            }
                        }
                    });
            });
        self.open = open && picked.is_none();
        if let Some(dir) = go_to {
            self.go(ctx, dir);
        }
        picked
    }
}
