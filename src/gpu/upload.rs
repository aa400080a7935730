//! The viewer's one persistent texture, fed through a persistent ring of staging
//! buffers: a frame is copied once into a buffer that is already mapped for writing
//! (rows padded to wgpu's 256-byte copy alignment on the way, when the frame's are
//! not), a `copy_buffer_to_texture` is submitted, and the buffer is mapped again for
//! its next frame when the GPU is done with it. Nothing frame-sized is allocated per
//! frame (`Queue::write_texture` makes and maps a new staging buffer on every call),
//! and nothing waits: with every buffer still on its way, a frame is left out (the
//! next, newer one takes its place). The texture and the buffers are re-made only when
//! the size or format changes. Gray, RGB and float frames are expanded to RGBA8 in the
//! same copy (`display.rs`), floats through the display range set on the texture.

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StagingState {
    /// Mapped for writing: ready for a frame.
    Ready,
    /// Submitted (a copy from it is queued) and mapping again.
    InFlight,
}

struct Staging {
    buffer: wgpu::Buffer,
    state: StagingState,
}

/// A staging buffer for frames of `layout`, mapped for writing from the start.
fn staging_buffer(device: &wgpu::Device, layout: RowLayout) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("texstream upload staging buffer"),
        size: layout.buffer_size(),
        usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: true,
    })
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
pub struct UploadTexture {
    current: Option<Current>,
    /// The frame layout every buffer of the ring is made for.
    layout: Option<RowLayout>,
    ring: Vec<Staging>,
    /// Buffers mapped again, by (ring generation, index, mapped?).
    mapped_tx: flume::Sender<(u64, usize, bool)>,
    mapped_rx: flume::Receiver<(u64, usize, bool)>,
    /// Changes when the ring is made anew (a new frame size).
    generation: u64,
    buffers_created: u64,
    busy: u64,
    /// How float frames are mapped to 0–255.
    range: super::DisplayRange,
    /// The range the last float frame was shown with.
    shown_range: Option<(f32, f32)>,
    /// One row expanded to RGBA8, written into the mapped buffer whole (mapped memory
    /// may be write-combined); sized with the ring.
    row: Vec<u8>,
}

impl Default for UploadTexture {
    fn default() -> UploadTexture {
        // Room for a whole ring's reports, and as many of a ring let go of.
        let (mapped_tx, mapped_rx) = flume::bounded(2 * UPLOAD_RING);
        UploadTexture {
            current: None,
            layout: None,
            ring: Vec::with_capacity(UPLOAD_RING),
            mapped_tx,
            mapped_rx,
            generation: 0,
            buffers_created: 0,
            busy: 0,
            range: super::DisplayRange::Auto,
            shown_range: None,
            row: Vec::new(),
        }
    }
}

impl UploadTexture {
    pub fn new() -> UploadTexture {
        UploadTexture::default()
    }

    /// Copies `frame` into a ready staging buffer and submits its copy into the
    /// texture. Never blocks; polls the device once, without waiting, so buffers the GPU
    /// is done with come back.
    pub fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        frame: &Frame,
    ) -> Result<Uploaded, GpuError> {
        let m = frame.meta();
        check_texture_size(device, m.width, m.height)?;
        let layout = RowLayout::new(m.width, m.height);
        let size = wgpu::Extent3d {
            width: m.width,
            height: m.height,
            depth_or_array_layers: 1,
        };
        // Frames of another size: a new ring (buffers still in flight are let go of;
        // wgpu frees them when the GPU is done with them).
        if self.layout != Some(layout) {
            self.ring.clear();
            self.generation += 1;
            self.layout = Some(layout);
            self.row = vec![0; layout.unpadded_bytes_per_row as usize];
        }
        // Buffers mapped again since the last frame are ready; one whose mapping
        // failed is made anew.
        device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| GpuError::Upload(e.to_string()))?;
        for (generation, index, ok) in self.mapped_rx.try_iter() {
            if generation != self.generation {
                continue; // a buffer of a ring let go of
            }
            if let Some(staging) = self.ring.get_mut(index) {
                if !ok {
                    staging.buffer = staging_buffer(device, layout);
                    self.buffers_created += 1;
                }
                staging.state = StagingState::Ready;
            }
        }
        let index = match self
            .ring
            .iter()
            .position(|s| s.state == StagingState::Ready)
        {
            Some(index) => index,
            None if self.ring.len() < UPLOAD_RING => {
                self.ring.push(Staging {
                    buffer: staging_buffer(device, layout),
                    state: StagingState::Ready,
                });
                self.buffers_created += 1;
                self.ring.len() - 1
            }
            None => {
                self.busy += 1;
                return Ok(Uploaded::Busy);
            }
        };
        // The texture is (re-)made only for a frame that will be copied into it, so a
        // new one is always reported as such.
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
        let staging = &mut self.ring[index];
        let range = if m.format.is_float() {
            let range = super::display::resolve(self.range, frame);
            self.shown_range = Some(range);
            range
        } else {
            (0.0, 1.0)
        };
        {
            let mut mapped = staging
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
                        range,
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
        staging.buffer.unmap();
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("texstream upload"),
        });
        encoder.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: &staging.buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(layout.padded_bytes_per_row),
                    rows_per_image: Some(layout.height),
                },
            },
            current.texture.as_image_copy(),
            size,
        );
        queue.submit([encoder.finish()]);
        let (tx, generation) = (self.mapped_tx.clone(), self.generation);
        staging
            .buffer
            .map_async(wgpu::MapMode::Write, .., move |result| {
                let _ = tx.try_send((generation, index, result.is_ok()));
            });
        staging.state = StagingState::InFlight;
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
        self.buffers_created
    }

    /// Frames left out because every staging buffer was in flight.
    pub fn busy(&self) -> u64 {
        self.busy
    }

    /// How float frames are shown from the next upload on: the values mapped to black
    /// and full, or each frame's own smallest and largest.
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
