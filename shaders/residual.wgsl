// Twins of `ops::residual_add` (x += y) and `ops::swiglu` (x = silu(y) · x, SwiGLU's product
// of gate y and up x). The hooks' kernels (`intervene`, `gather`) and the cache copy of
// `fork_slot` are in hooks.wgsl.

struct Params {
    rows: u32,
    c: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(1) @binding(0) var<storage, read_write> x: array<f32>;        // [R, C]
@group(1) @binding(1) var<storage, read> y: array<f32>;              // [R, C]

@compute @workgroup_size(64)
fn residual_add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.c || r >= p.rows) {
        return;
    }
    x[r * p.c + i] += y[r * p.c + i];
}

@compute @workgroup_size(64)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.c || r >= p.rows) {
        return;
    }
    let g = y[r * p.c + i];
    x[r * p.c + i] *= g / (1.0 + exp(-g));
}

