// texstream live source: renders the picked image with a time-based ripple and glow
// (mode 0), or a generated colour field with a sweeping bar (mode 1), into an offscreen
// texture (RGBA8, RGBA16F or RGBA32F) that the sender reads back and streams. Colours are
// not clamped here: an RGBA8 target clamps them to 1 as it stores them, a float target
// keeps what lies past 1 (the glow on a bright image, the bar at 4).

struct Params {
    time_secs: f32,
    mode: u32,
    size: vec2<f32>,
};

@group(0) @binding(0) var source_tex: texture_2d<f32>;
@group(0) @binding(1) var source_sampler: sampler;
@group(0) @binding(2) var<uniform> params: Params;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// One triangle that covers the whole target.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    let corner = vec2<f32>(f32((index << 1u) & 2u), f32(index & 2u));
    var out: VertexOut;
    out.position = vec4<f32>(corner * 2.0 - 1.0, 0.0, 1.0);
    out.uv = vec2<f32>(corner.x, 1.0 - corner.y);
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let t = params.time_secs;
    // Sampled in uniform control flow, whatever the mode.
    let centred = in.uv - vec2<f32>(0.5);
    let radius = length(centred);
    let ripple = 0.008 * sin(radius * 48.0 - t * 5.0);
    let direction = centred / max(radius, 1e-4);
    let image = textureSample(source_tex, source_sampler, in.uv + direction * ripple).rgb;

    if (params.mode == 1u) {
        let colour = 0.5 + 0.5 * cos(vec3<f32>(t) + in.uv.xyx * 6.2831 + vec3<f32>(0.0, 2.094, 4.188));
        let bar = step(0.97, fract(in.uv.x - t * 0.25));
        return vec4<f32>(mix(colour, vec3<f32>(4.0), bar), 1.0);
    }
    let glow = 0.12 * (0.5 + 0.5 * sin(t * 2.0 + in.uv.y * 12.0));
    return vec4<f32>(image + glow * vec3<f32>(0.2, 0.5, 1.0), 1.0);
}
