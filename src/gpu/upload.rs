//! The viewer's one persistent texture: frames are written into it with
//! `Queue::write_texture`; it is re-created only when the size or format changes.

use super::{check_texture_size, texture_format, GpuError};
use crate::frame::{Frame, PixelFormat};

struct Current {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    width: u32,
    height: u32,
    format: PixelFormat,
}

/// A texture that always holds the newest uploaded frame.
#[derive(Default)]
pub struct UploadTexture {
    current: Option<Current>,
}

impl UploadTexture {
    pub fn new() -> UploadTexture {
        UploadTexture::default()
    }

    /// Writes `frame` into the texture, padding rows included as the frame carries them.
    /// Returns `true` when the texture was (re-)created, so that the caller registers
    /// the new one with egui; `false` for the usual case of the same texture.
    pub fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        frame: &Frame,
    ) -> Result<bool, GpuError> {
        let m = frame.meta();
        check_texture_size(device, m.width, m.height)?;
        let size = wgpu::Extent3d {
            width: m.width,
            height: m.height,
            depth_or_array_layers: 1,
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
            return Ok(false);
        };
        queue.write_texture(
            current.texture.as_image_copy(),
            frame.pixels(),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(m.bytes_per_row),
                rows_per_image: Some(m.height),
            },
            size,
        );
        Ok(!same)
    }

    /// Submits the pending `write_texture` copies and blocks until the GPU has done
    /// them: the whole cost of an upload, for benchmarks (`texstream bench --gpu`) and
    /// tests. Never on the UI thread, where the next frame's submit carries them.
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

    pub fn texture(&self) -> Option<&wgpu::Texture> {
        self.current.as_ref().map(|c| &c.texture)
    }

    pub fn view(&self) -> Option<&wgpu::TextureView> {
        self.current.as_ref().map(|c| &c.view)
    }
}
