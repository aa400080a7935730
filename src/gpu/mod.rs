//! wgpu only: headless device set-up, row-padding math, pipelined readback into frames,
//! the persistent upload texture and the thread that stages frames for it, and the WGSL
//! live source. No sockets, no egui.

mod display;
mod layout;
mod live;
mod readback;
mod upload;
mod upload_thread;

pub use display::{DisplayRange, SHOWN_BYTES_PER_PIXEL};
pub use layout::{RowLayout, COPY_ALIGN};
pub use live::{live_texture_format, LiveMode, LiveShader, LIVE_FORMATS, LIVE_SHADER_WGSL};
pub use readback::Readback;
pub use upload::{StageCounters, Staged, Stager, UploadTexture, Uploaded, UPLOAD_RING};
pub use upload_thread::{StageResult, UploadThread};

use crate::frame::PixelFormat;

/// What can go wrong on the GPU side.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found ({0}); install a Vulkan driver, for example Mesa's lavapipe: apt-get install mesa-vulkan-drivers")]
    NoAdapter(String),
    #[error("cannot open the GPU device: {0}")]
    Device(String),
    #[error("{width}x{height} is larger than this GPU's largest texture ({max}x{max})")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
    #[error("uploading to the GPU failed: {0}")]
    Upload(String),
}

/// A device and queue for work without a window (tests, benchmarks, headless readback).
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
}

impl Gpu {
    /// Opens the first adapter wgpu finds, a software one (lavapipe) included.
    pub fn headless() -> Result<Gpu, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("texstream headless device"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(Gpu {
            device,
            queue,
            info,
        })
    }
}

/// The texture format frames of `format` are shown in: BGRA8 frames byte for byte in a
/// BGRA8 texture, every other format in RGBA8 (as it is, or expanded on the way by
/// `display::expand_row`).
pub fn texture_format(format: PixelFormat) -> wgpu::TextureFormat {
    match format {
        PixelFormat::Bgra8 => wgpu::TextureFormat::Bgra8Unorm,
        _ => wgpu::TextureFormat::Rgba8Unorm,
    }
}

/// The frame format for a texture format, if frames can carry it as it is.
pub fn pixel_format(format: wgpu::TextureFormat) -> Option<PixelFormat> {
    match format {
        wgpu::TextureFormat::Rgba8Unorm | wgpu::TextureFormat::Rgba8UnormSrgb => {
            Some(PixelFormat::Rgba8)
        }
        wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb => {
            Some(PixelFormat::Bgra8)
        }
        wgpu::TextureFormat::Rgba16Float => Some(PixelFormat::Rgba16F),
        wgpu::TextureFormat::Rgba32Float => Some(PixelFormat::Rgba32F),
        _ => None,
    }
}

/// Refuses sizes the device cannot hold in one texture, with a clear error.
pub fn check_texture_size(device: &wgpu::Device, width: u32, height: u32) -> Result<(), GpuError> {
    let max = device.limits().max_texture_dimension_2d;
    if width == 0 || height == 0 || width > max || height > max {
        return Err(GpuError::TooLarge { width, height, max });
    }
    Ok(())
}

/// A 2D texture of one mip level and its default view: every texture here is one.
pub fn texture_2d(
    device: &wgpu::Device,
    label: &str,
    (width, height): (u32, u32),
    format: wgpu::TextureFormat,
    usage: wgpu::TextureUsages,
) -> (wgpu::Texture, wgpu::TextureView) {
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage,
        view_formats: &[],
    });
    let view = texture.create_view(&wgpu::TextureViewDescriptor {
        label: Some(label),
        ..Default::default()
    });
    (texture, view)
}
