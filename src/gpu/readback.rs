//! Pipelined texture readback: `copy_texture_to_buffer` into a ring of staging buffers
//! (made once, re-made only when the size changes), `map_async`, and a non-blocking poll
//! that turns a mapped buffer into a [`Frame`] with one copy, hashed in the same pass.

use super::{pixel_format, GpuError, RowLayout};
use crate::frame::{Frame, FrameGeometry, FramePool, PixelFormat};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// The copy is recorded in an encoder that has not been submitted yet.
    Copied,
    /// Submitted; `map_async` is pending.
    Mapping,
    /// Mapped and ready to read.
    Ready,
}

struct Slot {
    buffer: Option<(wgpu::Buffer, RowLayout)>,
    state: State,
    /// The submission that holds its copy, once submitted (to wait for that one only).
    submission: Option<wgpu::SubmissionIndex>,
    seq: u64,
    capture_us: u64,
    format: PixelFormat,
}

/// A ring of 2–3 staging buffers, so the GPU copies one frame while the CPU reads the
/// previous one and nothing waits.
pub struct Readback {
    slots: Vec<Slot>,
    done_tx: flume::Sender<(usize, bool)>,
    done_rx: flume::Receiver<(usize, bool)>,
}

impl Readback {
    /// A ring of `ring` buffers (at least 1; 2 or 3 pipeline well).
    pub fn new(ring: usize) -> Readback {
        let ring = ring.max(1);
        let (done_tx, done_rx) = flume::bounded(ring);
        Readback {
            slots: (0..ring)
                .map(|_| Slot {
                    buffer: None,
                    state: State::Free,
                    submission: None,
                    seq: 0,
                    capture_us: 0,
                    format: PixelFormat::Rgba8,
                })
                .collect(),
            done_tx,
            done_rx,
        }
    }

    /// Records a copy of `texture` into a free staging buffer. `Ok(false)` when every
    /// buffer is still in flight: the GPU is behind, and this frame is skipped.
    pub fn copy(
        &mut self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        texture: &wgpu::Texture,
        seq: u64,
        capture_us: u64,
    ) -> Result<bool, GpuError> {
        let format = pixel_format(texture.format()).ok_or_else(|| {
            GpuError::Readback(format!(
                "texture format {:?} is not one frames carry (RGBA8, BGRA8, RGBA16F, RGBA32F)",
                texture.format()
            ))
        })?;
        let Some(slot) = self.slots.iter_mut().find(|s| s.state == State::Free) else {
            return Ok(false);
        };
        let layout = RowLayout::with_bytes_per_pixel(
            texture.width(),
            texture.height(),
            format.bytes_per_pixel(),
        );
        if slot.buffer.as_ref().map(|(_, l)| *l) != Some(layout) {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("texstream readback staging buffer"),
                size: layout.buffer_size(),
                usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
                mapped_at_creation: false,
            });
            slot.buffer = Some((buffer, layout));
        }
        let Some((buffer, _)) = &slot.buffer else {
            return Ok(false);
        };
        encoder.copy_texture_to_buffer(
            texture.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(layout.padded_bytes_per_row),
                    rows_per_image: Some(layout.height),
                },
            },
            texture.size(),
        );
        slot.state = State::Copied;
        slot.seq = seq;
        slot.capture_us = capture_us;
        slot.format = format;
        Ok(true)
    }

    /// Call right after submitting the encoder passed to [`Readback::copy`]: starts
    /// mapping the buffers it copied into.
    pub fn submitted(&mut self) {
        self.start_mapping(None);
    }

    /// [`Readback::submitted`], knowing the submission: [`Readback::wait_oldest`] can
    /// then wait for that one alone, with a timeout.
    pub fn submitted_as(&mut self, submission: wgpu::SubmissionIndex) {
        self.start_mapping(Some(submission));
    }

    fn start_mapping(&mut self, submission: Option<wgpu::SubmissionIndex>) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.state != State::Copied {
                continue;
            }
            slot.submission = submission.clone();
            let Some((buffer, _)) = &slot.buffer else {
                continue;
            };
            let tx = self.done_tx.clone();
            buffer.map_async(wgpu::MapMode::Read, .., move |result| {
                let _ = tx.try_send((index, result.is_ok()));
            });
            slot.state = State::Mapping;
        }
    }

    /// Never blocks: polls the device once and returns the newest finished readback as
    /// a frame (older finished ones are released unread: newest wins).
    pub fn try_frame(
        &mut self,
        device: &wgpu::Device,
        pool: &FramePool,
    ) -> Result<Option<Frame>, GpuError> {
        device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        self.take_frame(pool)
    }

    /// Blocks until the readbacks in flight finish, then returns the newest. For tests,
    /// benchmarks and headless use, never the UI thread.
    pub fn wait_frame(
        &mut self,
        device: &wgpu::Device,
        pool: &FramePool,
    ) -> Result<Option<Frame>, GpuError> {
        self.wait_mapped(device)?;
        self.take_frame(pool)
    }

    /// Blocks until the readbacks in flight are mapped, without reading them: with
    /// [`Readback::take_frame`] after it, the wait for the GPU and the copy out of the
    /// staging buffer can be timed apart (`texstream bench --gpu`). Never the UI thread.
    pub fn wait_mapped(&mut self, device: &wgpu::Device) -> Result<(), GpuError> {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        Ok(())
    }

    /// Whether every buffer is in flight (a copy now would be skipped).
    pub fn is_full(&self) -> bool {
        self.slots.iter().all(|s| s.state != State::Free)
    }

    /// Waits at most `timeout` for the oldest readback in flight — for its own
    /// submission, not for everything submitted to the device; [`Readback::take_frame`]
    /// then has it. For a producer whose ring is full; never the UI thread.
    pub fn wait_oldest(
        &mut self,
        device: &wgpu::Device,
        timeout: std::time::Duration,
    ) -> Result<(), GpuError> {
        let oldest = self
            .slots
            .iter()
            .filter(|s| s.state == State::Mapping)
            .min_by_key(|s| s.seq)
            .map(|s| s.submission.clone());
        let Some(submission) = oldest else {
            return Ok(());
        };
        match device.poll(wgpu::PollType::Wait {
            submission_index: submission,
            timeout: Some(timeout),
        }) {
            Ok(_) | Err(wgpu::PollError::Timeout) => Ok(()),
            Err(e) => Err(GpuError::Readback(e.to_string())),
        }
    }

    /// Buffers copied or mapping, not yet read.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.state != State::Free).count()
    }

    /// The newest finished readback as a frame (one copy, hashed), without polling the
    /// device: call after [`Readback::wait_mapped`] or a poll of your own. Older
    /// finished ones are released unread: newest wins.
    pub fn take_frame(&mut self, pool: &FramePool) -> Result<Option<Frame>, GpuError> {
        self.take(pool, true)
    }

    /// [`Readback::take_frame`] in order: the oldest finished readback, the newer
    /// finished ones left for the next calls, so every frame submitted is taken
    /// (`texstream bench --gpu` publishes each one it renders).
    pub fn take_oldest(&mut self, pool: &FramePool) -> Result<Option<Frame>, GpuError> {
        self.take(pool, false)
    }

    fn take(&mut self, pool: &FramePool, newest_wins: bool) -> Result<Option<Frame>, GpuError> {
        let mut failed = false;
        for (index, ok) in self.done_rx.try_iter() {
            if let Some(slot) = self.slots.get_mut(index) {
                if ok {
                    slot.state = State::Ready;
                } else {
                    slot.state = State::Free;
                    failed = true;
                }
            }
        }
        if failed {
            return Err(GpuError::Readback("mapping a staging buffer failed".into()));
        }
        let ready = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == State::Ready);
        let picked = if newest_wins {
            ready.max_by_key(|(_, s)| s.seq)
        } else {
            ready.min_by_key(|(_, s)| s.seq)
        };
        let Some(picked) = picked.map(|(i, _)| i) else {
            return Ok(None);
        };
        let mut frame = None;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            // Newest wins releases every finished one; in order, the picked one alone.
            if slot.state != State::Ready || (index != picked && !newest_wins) {
                continue;
            }
            let Some((buffer, layout)) = &slot.buffer else {
                continue;
            };
            if index == picked {
                let view = buffer
                    .get_mapped_range(..)
                    .map_err(|e| GpuError::Readback(e.to_string()))?;
                let geometry = FrameGeometry {
                    width: layout.width,
                    height: layout.height,
                    format: slot.format,
                    bytes_per_row: layout.padded_bytes_per_row,
                };
                // The one copy on the sending side: mapped buffer → shared frame buffer.
                frame = Some(Frame::copied(
                    geometry,
                    slot.seq,
                    slot.capture_us,
                    &view,
                    pool,
                ));
                drop(view);
            }
            buffer.unmap();
            slot.state = State::Free;
            slot.submission = None;
        }
        Ok(frame)
    }
}
