//! A small in-window file picker: it works on any desktop, with no desktop portal or
//! toolkit dialog (no egui 0.37 file-dialog crate exists). Lists a folder, goes up and
//! down, takes a typed path; the listing is read only when the folder changes.

use std::path::{Path, PathBuf};

/// The picker's state; closed until [`FilePicker::open`].
#[derive(Default)]
pub struct FilePicker {
    open: bool,
    dir: PathBuf,
    entries: Vec<(String, bool)>,
    typed: String,
    error: Option<String>,
}

impl FilePicker {
    /// Opens the picker on `dir`.
    pub fn open(&mut self, dir: &Path) {
        self.open = true;
        self.go(dir.to_owned());
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    fn go(&mut self, dir: PathBuf) {
        match std::fs::read_dir(&dir) {
            Ok(read) => {
                let mut entries: Vec<(String, bool)> = read
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
                self.entries = entries;
                self.typed = dir.display().to_string();
                self.dir = dir;
                self.error = None;
            }
            Err(e) => self.error = Some(format!("cannot open {}: {e}", dir.display())),
        }
    }

    /// Draws the picker window; returns the file the user picked.
    pub fn picker_ui(&mut self, ctx: &egui::Context, title: &str) -> Option<PathBuf> {
        if !self.open {
            return None;
        }
        let mut picked = None;
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
                        let typed = PathBuf::from(self.typed.trim());
                        if typed.is_dir() {
                            go_to = Some(typed);
                        } else {
                            picked = Some(typed);
                        }
                    }
                });
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
            self.go(dir);
        }
        picked
    }
}
