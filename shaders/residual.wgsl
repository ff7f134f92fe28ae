// Twins of `ops::residual_add` (x += y), `ops::swiglu` (x = silu(y) · x, SwiGLU's product of
// gate y and up x) and `ops::add_rows`, the ActAdd injection:
// x[r, :] += table[row_map[r], :] unless row_map[r] is 0xFFFFFFFF.
//
// Injection tables and row maps of a step live in one arena buffer, bound twice (as f32 and as
// u32); `table_offset` and `map_offset` locate this injection's table and map in it.

struct Params {
    /// residual_add: element count; add_rows: rows.
    rows: u32,
    c: u32,
    table_offset: u32,
    map_offset: u32,
}

const NO_ROW: u32 = 0xFFFFFFFFu;

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

@group(1) @binding(0) var<storage, read_write> x_inj: array<f32>;    // [R, C]
@group(1) @binding(1) var<storage, read> table: array<f32>;          // [K, C] at table_offset
@group(1) @binding(2) var<storage, read> row_map: array<u32>;        // [R] at map_offset

@compute @workgroup_size(64)
fn add_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.c || r >= p.rows) {
        return;
    }
    let m = row_map[p.map_offset + r];
    if (m == NO_ROW) {
        return;
    }
    x_inj[r * p.c + i] += table[p.table_offset + m * p.c + i];
}
