//! The WGSL live source: renders `shaders/live.wgsl` into an offscreen texture every
//! frame — the picked image with a time-based effect, or a generated pattern — so that
//! the stream has motion. The target is RGBA8, RGBA16F or RGBA32F ([`LIVE_FORMATS`]), and
//! frames carry it as it is. Resources are made once; each frame writes 16 bytes of
//! uniforms and records one render pass (two for RGBA32F, whose target egui cannot
//! sample: the second draws the same into an RGBA8 texture for the preview).

use crate::frame::PixelFormat;

/// The live shader's source, checked by the shader validation test.
pub const LIVE_SHADER_WGSL: &str = include_str!("../../shaders/live.wgsl");

/// The pixel formats the live shader renders into, the first the default.
pub const LIVE_FORMATS: [PixelFormat; 3] = [
    PixelFormat::Rgba8,
    PixelFormat::Rgba16F,
    PixelFormat::Rgba32F,
];

/// The texture format the live shader renders `format` into, if it is one of
/// [`LIVE_FORMATS`].
pub fn live_texture_format(format: PixelFormat) -> Option<wgpu::TextureFormat> {
    match format {
        PixelFormat::Rgba8 => Some(wgpu::TextureFormat::Rgba8Unorm),
        PixelFormat::Rgba16F => Some(wgpu::TextureFormat::Rgba16Float),
        PixelFormat::Rgba32F => Some(wgpu::TextureFormat::Rgba32Float),
        _ => None,
    }
}

/// What the live shader draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveMode {
    /// The source image with a ripple and a glow that move with time.
    Image = 0,
    /// A generated colour field with a sweeping bar (the source is ignored).
    Pattern = 1,
}

/// A render target and the pipeline that draws into it.
struct Target {
    pipeline: wgpu::RenderPipeline,
    texture: wgpu::Texture,
    view: wgpu::TextureView,
}

/// The pipeline, its target texture and the bind group for the current source.
pub struct LiveShader {
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    target: Target,
    /// For a target egui cannot sample with its filtering sampler (RGBA32F): the same
    /// picture in RGBA8, for the preview only.
    preview: Option<Target>,
    format: PixelFormat,
}

impl LiveShader {
    /// Builds the pipeline and a `width` x `height` RGBA8 target that samples `source`.
    pub fn new(
        device: &wgpu::Device,
        source: &wgpu::TextureView,
        width: u32,
        height: u32,
    ) -> LiveShader {
        LiveShader::with_format(device, source, width, height, PixelFormat::Rgba8)
    }

    /// [`LiveShader::new`] with a target of `format`, one of [`LIVE_FORMATS`] (any other
    /// is taken as RGBA8).
    pub fn with_format(
        device: &wgpu::Device,
        source: &wgpu::TextureView,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> LiveShader {
        let (format, texture_format) = match live_texture_format(format) {
            Some(texture_format) => (format, texture_format),
            None => (PixelFormat::Rgba8, wgpu::TextureFormat::Rgba8Unorm),
        };
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("texstream live shader"),
            source: wgpu::ShaderSource::Wgsl(LIVE_SHADER_WGSL.into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("texstream live bind group layout"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: true },
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 2,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("texstream live pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("texstream live sampler"),
            address_mode_u: wgpu::AddressMode::ClampToEdge,
            address_mode_v: wgpu::AddressMode::ClampToEdge,
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("texstream live uniforms"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind_group = bind(device, &layout, source, &sampler, &uniforms);
        let size = (width, height);
        let target = Target::new(device, &module, &pipeline_layout, texture_format, size);
        let filterable = texture_format.sample_type(None, Some(device.features()))
            == Some(wgpu::TextureSampleType::Float { filterable: true });
        let preview = (!filterable).then(|| {
            let rgba8 = wgpu::TextureFormat::Rgba8Unorm;
            Target::new(device, &module, &pipeline_layout, rgba8, size)
        });
        LiveShader {
            layout,
            sampler,
            uniforms,
            bind_group,
            target,
            preview,
            format,
        }
    }

    /// Samples another source from now on, into a target of the given size (re-made
    /// only if the size changed).
    pub fn set_source(
        &mut self,
        device: &wgpu::Device,
        source: &wgpu::TextureView,
        width: u32,
        height: u32,
    ) {
        self.bind_group = bind(device, &self.layout, source, &self.sampler, &self.uniforms);
        for target in std::iter::once(&mut self.target).chain(self.preview.as_mut()) {
            target.resize(device, (width, height));
        }
    }

    /// Records the render of time `time_secs` into the target.
    pub fn render(
        &self,
        queue: &wgpu::Queue,
        encoder: &mut wgpu::CommandEncoder,
        time_secs: f32,
        mode: LiveMode,
    ) {
        let mut params = [0u8; 16];
        params[0..4].copy_from_slice(&time_secs.to_le_bytes());
        params[4..8].copy_from_slice(&(mode as u32).to_le_bytes());
        params[8..12].copy_from_slice(&(self.target.texture.width() as f32).to_le_bytes());
        params[12..16].copy_from_slice(&(self.target.texture.height() as f32).to_le_bytes());
        queue.write_buffer(&self.uniforms, 0, &params);
        for target in std::iter::once(&self.target).chain(self.preview.as_ref()) {
            target.draw(encoder, &self.bind_group);
        }
    }

    /// The texture the live source renders into (read it back to stream it).
    pub fn target(&self) -> &wgpu::Texture {
        &self.target.texture
    }

    /// A texture egui can show of what the live source renders: the target itself, or
    /// its RGBA8 copy where egui cannot sample the target's format.
    pub fn preview_target(&self) -> &wgpu::Texture {
        &self.preview.as_ref().unwrap_or(&self.target).texture
    }

    /// The pixel format of the target, and so of the frames read back from it.
    pub fn format(&self) -> PixelFormat {
        self.format
    }
}

impl Target {
    fn new(
        device: &wgpu::Device,
        module: &wgpu::ShaderModule,
        pipeline_layout: &wgpu::PipelineLayout,
        format: wgpu::TextureFormat,
        size: (u32, u32),
    ) -> Target {
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("texstream live pipeline"),
            layout: Some(pipeline_layout),
            vertex: wgpu::VertexState {
                module,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            fragment: Some(wgpu::FragmentState {
                module,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(format.into())],
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        let (texture, view) = make_target(device, size, format);
        Target {
            pipeline,
            texture,
            view,
        }
    }

    /// Re-makes the texture if its size changed.
    fn resize(&mut self, device: &wgpu::Device, size: (u32, u32)) {
        if (self.texture.width(), self.texture.height()) != size {
            (self.texture, self.view) = make_target(device, size, self.texture.format());
        }
    }

    fn draw(&self, encoder: &mut wgpu::CommandEncoder, bind_group: &wgpu::BindGroup) {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("texstream live pass"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &self.view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

fn bind(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    source: &wgpu::TextureView,
    sampler: &wgpu::Sampler,
    uniforms: &wgpu::Buffer,
) -> wgpu::BindGroup {
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("texstream live bind group"),
        layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(source),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: wgpu::BindingResource::Sampler(sampler),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: uniforms.as_entire_binding(),
            },
        ],
    })
}

fn make_target(
    device: &wgpu::Device,
    size: (u32, u32),
    format: wgpu::TextureFormat,
) -> (wgpu::Texture, wgpu::TextureView) {
    super::texture_2d(
        device,
        "texstream live target",
        size,
        format,
        wgpu::TextureUsages::RENDER_ATTACHMENT
            | wgpu::TextureUsages::COPY_SRC
            | wgpu::TextureUsages::TEXTURE_BINDING,
    )
}
