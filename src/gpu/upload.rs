//! The viewer's one persistent texture, fed through a persistent ring of staging
//! buffers, in two halves that may run on two threads. [`Stager`] copies a frame once
//! into a buffer of the ring that is already mapped for writing (rows padded to wgpu's
//! 256-byte copy alignment on the way, when the frame's are not) and unmaps it: a
//! [`Staged`] frame. [`UploadTexture::show`] records and submits that buffer's
//! `copy_buffer_to_texture`; the buffer is mapped again for its next frame when the GPU
//! is done with it (when a `Staged` is dropped, shown or not). The window runs the first
//! half on its upload thread (`UploadThread`), so its UI pass never copies a frame;
//! [`UploadTexture::upload`] runs both in one call (`texstream bench --gpu`, tests).
//! Nothing frame-sized is allocated per frame (`Queue::write_texture` makes and maps a
//! new staging buffer on every call), and nothing waits: with every buffer still on its
//! way, a frame is left out (the next, newer one takes its place). The texture and the
//! buffers are re-made only when the size or format changes. Gray, RGB and float frames
//! are expanded to RGBA8 in the same copy (`display.rs`), floats through the display
//! range given.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use super::{check_texture_size, texture_format, GpuError, RowLayout};
use crate::frame::{Frame, PixelFormat};

struct Current {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    width: u32,
    height: u32,
    format: PixelFormat,
}

/// Staging buffers in the ring: one being copied by the GPU, one mapping back, one
/// ready for the next frame.
pub const UPLOAD_RING: usize = 3;

/// A staging buffer for frames of `layout`, mapped for writing from the start.
fn staging_buffer(device: &wgpu::Device, layout: RowLayout) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("texstream upload staging buffer"),
        size: layout.buffer_size(),
        usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: true,
    })
}

/// A buffer of the ring mapped again (or not), by (ring generation, index, mapped?).
type Mapped = (u64, usize, bool);

/// What the staging half did so far, readable from any thread.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Staging buffers made: [`UPLOAD_RING`] at most per frame size, whatever the
    /// number of frames.
    pub buffers_created: AtomicU64,
    /// Frames copied into a staging buffer, and their bytes.
    pub frames_staged: AtomicU64,
    pub bytes_staged: AtomicU64,
    /// Frames left out because every staging buffer was in flight.
    pub busy: AtomicU64,
}

struct Slot {
    buffer: wgpu::Buffer,
    /// Mapped for writing: ready for a frame. Otherwise staged, shown or mapping again.
    ready: bool,
}

/// The writing half of the ring: owns its buffers, copies frames into them.
pub struct Stager {
    /// The frame layout every buffer of the ring is made for.
    layout: Option<RowLayout>,
    ring: Vec<Slot>,
    mapped_tx: flume::Sender<Mapped>,
    mapped_rx: flume::Receiver<Mapped>,
    /// Changes when the ring is made anew (a new frame size).
    generation: u64,
    counters: Arc<StageCounters>,
    /// One row expanded to RGBA8, written into the mapped buffer whole (mapped memory
    /// may be write-combined); sized with the ring.
    row: Vec<u8>,
}

impl Default for Stager {
    fn default() -> Stager {
        // Room for a whole ring's reports, and as many of a ring let go of.
        let (mapped_tx, mapped_rx) = flume::bounded(2 * UPLOAD_RING);
        Stager {
            layout: None,
            ring: Vec::with_capacity(UPLOAD_RING),
            mapped_tx,
            mapped_rx,
            generation: 0,
            counters: Arc::default(),
            row: Vec::new(),
        }
    }
}

/// A frame copied into a staging buffer of the ring, unmapped, ready for its
/// `copy_buffer_to_texture` ([`UploadTexture::show`]). Dropped, shown or not, its buffer
/// is mapped again for the ring (its callback needs the device polled, which
/// [`Stager::stage`] does).
pub struct Staged {
    /// `None` once given back.
    buffer: Option<wgpu::Buffer>,
    layout: RowLayout,
    generation: u64,
    index: usize,
    mapped_tx: flume::Sender<Mapped>,
    frame: Frame,
    /// The display range a float frame was expanded with.
    range: Option<(f32, f32)>,
    copy_ms: f64,
    staged_on: std::thread::ThreadId,
    /// When the frame was taken for staging and when it was staged, µs since the epoch.
    taken_us: u64,
    staged_us: u64,
}

/// µs since the Unix epoch, the clock frames' capture timestamps are on.
pub(super) fn epoch_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Staged {
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// How long the copy into the staging buffer took.
    pub fn copy_ms(&self) -> f64 {
        self.copy_ms
    }

    /// When the frame was taken for staging (by default, when its copy began) and when
    /// it was staged, µs since the Unix epoch.
    pub fn taken_us(&self) -> u64 {
        self.taken_us
    }

    pub fn staged_us(&self) -> u64 {
        self.staged_us
    }

    /// Says when the frame was taken from the network, before it waited for a buffer.
    pub fn set_taken_us(&mut self, taken_us: u64) {
        self.taken_us = taken_us;
    }

    /// The thread the frame was copied on.
    pub fn staged_on(&self) -> std::thread::ThreadId {
        self.staged_on
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let (tx, generation, index) = (self.mapped_tx.clone(), self.generation, self.index);
            buffer.map_async(wgpu::MapMode::Write, .., move |result| {
                let _ = tx.try_send((generation, index, result.is_ok()));
            });
        }
    }
}

impl Stager {
    pub fn new() -> Stager {
        Stager::default()
    }

    pub fn counters(&self) -> &Arc<StageCounters> {
        &self.counters
    }

    /// Polls the device once, without waiting, and takes back the buffers mapped again
    /// since; one whose mapping failed is made anew.
    pub fn reclaim(&mut self, device: &wgpu::Device) -> Result<(), GpuError> {
        device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| GpuError::Upload(e.to_string()))?;
        let Some(layout) = self.layout else {
            return Ok(());
        };
        for (generation, index, ok) in self.mapped_rx.try_iter() {
            if generation != self.generation {
                continue; // a buffer of a ring let go of
            }
            if let Some(slot) = self.ring.get_mut(index) {
                if !ok {
                    slot.buffer = staging_buffer(device, layout);
                    self.counters.buffers_created.fetch_add(1, Relaxed);
                }
                slot.ready = true;
            }
        }
        Ok(())
    }

    /// Copies `frame` into a ready staging buffer (floats mapped through `range`) and
    /// unmaps it. `None` when every buffer is still on its way: the caller tries again
    /// later, with this frame or a newer one. Never blocks.
    pub fn stage(
        &mut self,
        device: &wgpu::Device,
        frame: &Frame,
        range: super::DisplayRange,
    ) -> Result<Option<Staged>, GpuError> {
        let m = frame.meta();
        check_texture_size(device, m.width, m.height)?;
        let layout = RowLayout::new(m.width, m.height);
        // Frames of another size: a new ring (buffers still in flight are let go of;
        // wgpu frees them when the GPU is done with them).
        if self.layout != Some(layout) {
            self.ring.clear();
            self.generation += 1;
            self.layout = Some(layout);
            self.row = vec![0; layout.unpadded_bytes_per_row as usize];
        }
        self.reclaim(device)?;
        let index = match self.ring.iter().position(|s| s.ready) {
            Some(index) => index,
            None if self.ring.len() < UPLOAD_RING => {
                self.ring.push(Slot {
                    buffer: staging_buffer(device, layout),
                    ready: true,
                });
                self.counters.buffers_created.fetch_add(1, Relaxed);
                self.ring.len() - 1
            }
            None => {
                self.counters.busy.fetch_add(1, Relaxed);
                return Ok(None);
            }
        };
        let started = Instant::now();
        let started_us = epoch_us();
        let slot = &mut self.ring[index];
        let range = m
            .format
            .is_float()
            .then(|| super::display::resolve(range, frame));
        {
            let mut mapped = slot
                .buffer
                .get_mapped_range_mut(..)
                .map_err(|e| GpuError::Upload(e.to_string()))?;
            // The one copy on the viewing side: the frame → staging memory.
            let pixels = frame.pixels();
            let src_row = m.bytes_per_row as usize;
            let dst_row = layout.padded_bytes_per_row as usize;
            if !super::display::shown_as_is(m.format) {
                // Expanded to RGBA8 a row at a time, each row written whole.
                for (y, src) in pixels
                    .chunks(src_row)
                    .take(layout.height as usize)
                    .enumerate()
                {
                    super::display::expand_row(
                        m.format,
                        &src[..m.row_bytes()],
                        &mut self.row,
                        range.unwrap_or((0.0, 1.0)),
                    );
                    let at = y * dst_row;
                    mapped
                        .slice(at..at + self.row.len())
                        .copy_from_slice(&self.row);
                }
            } else if src_row == dst_row {
                mapped.slice(..pixels.len()).copy_from_slice(pixels);
            } else {
                // Mapped memory may be write-combined: written, never read.
                let row = (layout.unpadded_bytes_per_row as usize).min(src_row);
                for (y, src) in pixels
                    .chunks(src_row)
                    .take(layout.height as usize)
                    .enumerate()
                {
                    let at = y * dst_row;
                    mapped.slice(at..at + row).copy_from_slice(&src[..row]);
                }
            }
        }
        slot.buffer.unmap();
        slot.ready = false;
        self.counters.frames_staged.fetch_add(1, Relaxed);
        self.counters
            .bytes_staged
            .fetch_add(layout.buffer_size(), Relaxed);
        Ok(Some(Staged {
            buffer: Some(slot.buffer.clone()),
            layout,
            generation: self.generation,
            index,
            mapped_tx: self.mapped_tx.clone(),
            frame: frame.clone(),
            range,
            copy_ms: started.elapsed().as_secs_f64() * 1e3,
            staged_on: std::thread::current().id(),
            taken_us: started_us,
            staged_us: epoch_us(),
        }))
    }
}

/// What [`UploadTexture::upload`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// Into a texture made for it (first frame, or a new size or format): register
    /// the new texture with egui.
    NewTexture,
    /// Into the texture already shown.
    Same,
    /// Left out: every staging buffer is still in flight (the GPU is behind). The
    /// texture still shows the frame before.
    Busy,
}

/// A texture that always holds the newest uploaded frame.
#[derive(Default)]
pub struct UploadTexture {
    current: Option<Current>,
    /// The staging half for [`UploadTexture::upload`], which does both in one call.
    stager: Stager,
    /// How float frames are mapped to 0–255.
    range: super::DisplayRange,
    /// The range the last float frame was shown with.
    shown_range: Option<(f32, f32)>,
}

impl UploadTexture {
    pub fn new() -> UploadTexture {
        UploadTexture::default()
    }

    /// Copies `frame` into a ready staging buffer and submits its copy into the
    /// texture: [`Stager::stage`] then [`UploadTexture::show`], on this thread. Never
    /// blocks; polls the device once, without waiting, so buffers the GPU is done with
    /// come back.
    pub fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        frame: &Frame,
    ) -> Result<Uploaded, GpuError> {
        match self.stager.stage(device, frame, self.range)? {
            Some(staged) => self.show(device, queue, staged),
            None => Ok(Uploaded::Busy),
        }
    }

    /// Records and submits the copy of a staged frame into the texture (made anew for
    /// a new size or format); the staging buffer then maps again for the ring. No
    /// pixel is touched here, and nothing waits.
    pub fn show(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        staged: Staged,
    ) -> Result<Uploaded, GpuError> {
        let m = staged.frame.meta();
        let layout = staged.layout;
        let Some(buffer) = &staged.buffer else {
            return Ok(Uploaded::Busy);
        };
        let same = self
            .current
            .as_ref()
            .is_some_and(|c| (c.width, c.height, c.format) == (m.width, m.height, m.format));
        if !same {
            let (texture, view) = super::texture_2d(
                device,
                "texstream received frame",
                (m.width, m.height),
                texture_format(m.format),
                wgpu::TextureUsages::TEXTURE_BINDING
                    | wgpu::TextureUsages::COPY_DST
                    | wgpu::TextureUsages::COPY_SRC,
            );
            self.current = Some(Current {
                texture,
                view,
                width: m.width,
                height: m.height,
                format: m.format,
            });
        }
        let Some(current) = &self.current else {
            return Ok(Uploaded::Busy);
        };
        if staged.range.is_some() {
            self.shown_range = staged.range;
        }
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("texstream upload"),
        });
        encoder.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(layout.padded_bytes_per_row),
                    rows_per_image: Some(layout.height),
                },
            },
            current.texture.as_image_copy(),
            wgpu::Extent3d {
                width: m.width,
                height: m.height,
                depth_or_array_layers: 1,
            },
        );
        queue.submit([encoder.finish()]);
        // `staged` is dropped here: its buffer maps again once the copy is done.
        Ok(if same {
            Uploaded::Same
        } else {
            Uploaded::NewTexture
        })
    }

    /// Blocks until the GPU has done every upload submitted: the whole cost of an
    /// upload, for benchmarks (`texstream bench --gpu`) and tests. Never on the UI
    /// thread.
    pub fn wait_uploaded(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<(), GpuError> {
        let index = queue.submit([]);
        device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| GpuError::Upload(e.to_string()))?;
        Ok(())
    }

    /// Staging buffers made so far: [`UPLOAD_RING`] at most per frame size, whatever
    /// the number of frames.
    pub fn buffers_created(&self) -> u64 {
        self.stager.counters.buffers_created.load(Relaxed)
    }

    /// Frames left out because every staging buffer was in flight.
    pub fn busy(&self) -> u64 {
        self.stager.counters.busy.load(Relaxed)
    }

    /// How float frames are shown from the next [`UploadTexture::upload`] on: the
    /// values mapped to black and full, or each frame's own smallest and largest.
    pub fn set_display_range(&mut self, range: super::DisplayRange) {
        self.range = range;
    }

    pub fn display_range(&self) -> super::DisplayRange {
        self.range
    }

    /// The range the last float frame was shown with (its own under `Auto`).
    pub fn shown_range(&self) -> Option<(f32, f32)> {
        self.shown_range
    }

    pub fn texture(&self) -> Option<&wgpu::Texture> {
        self.current.as_ref().map(|c| &c.texture)
    }

    pub fn view(&self) -> Option<&wgpu::TextureView> {
        self.current.as_ref().map(|c| &c.view)
    }
}
