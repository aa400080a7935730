//! The WGSL live source: renders `shaders/live.wgsl` into an offscreen RGBA8 texture
//! every frame — the picked image with a time-based effect, or a generated pattern —
//! so that the stream has motion. Resources are made once; each frame writes 16 bytes
//! of uniforms and records one render pass.

/// The live shader's source, checked by the shader validation test.
pub const LIVE_SHADER_WGSL: &str = include_str!("../../shaders/live.wgsl");

/// What the live shader draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiveMode {
    /// The source image with a ripple and a glow that move with time.
    Image = 0,
    /// A generated colour field with a sweeping bar (the source is ignored).
    Pattern = 1,
}

/// The pipeline, its target texture and the bind group for the current source.
pub struct LiveShader {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    target: wgpu::Texture,
    target_view: wgpu::TextureView,
}

impl LiveShader {
    /// Builds the pipeline and a `width` x `height` target that samples `source`.
    pub fn new(
        device: &wgpu::Device,
        source: &wgpu::TextureView,
        width: u32,
        height: u32,
    ) -> LiveShader {
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
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("texstream live pipeline"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::TextureFormat::Rgba8Unorm.into())],
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
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
        let (target, target_view) = make_target(device, width, height);
        LiveShader {
            pipeline,
            layout,
            sampler,
            uniforms,
            bind_group,
            target,
            target_view,
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
        if (self.target.width(), self.target.height()) != (width, height) {
            (self.target, self.target_view) = make_target(device, width, height);
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
        params[8..12].copy_from_slice(&(self.target.width() as f32).to_le_bytes());
        params[12..16].copy_from_slice(&(self.target.height() as f32).to_le_bytes());
        queue.write_buffer(&self.uniforms, 0, &params);
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("texstream live pass"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &self.target_view,
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
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }

    /// The texture the live source renders into (read it back to stream it).
    pub fn target(&self) -> &wgpu::Texture {
        &self.target
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
    width: u32,
    height: u32,
) -> (wgpu::Texture, wgpu::TextureView) {
    super::texture_2d(
        device,
        "texstream live target",
        (width, height),
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureUsages::RENDER_ATTACHMENT
            | wgpu::TextureUsages::COPY_SRC
            | wgpu::TextureUsages::TEXTURE_BINDING,
    )
}
