// The hooks of the block program and the cache copy behind `Backend::fork_slot`.
//
// `intervene` is the twin of `ops::intervene`: channels col0..col0+width of row r of a slot
// [R, stride] become x + t, t or x · t (mode 0, 1, 2) with t = table[row_map[r]], unless
// row_map[r] is 0xFFFFFFFF. The ActAdd injection is mode 0 over whole rows.
//
// `gather` is the twin of `StepPlan::gather`: a capture's rows (indices into the step's rows)
// and channels, appended to the step's capture buffer at out_offset. `project` is its twin for
// a capture with a vector v: each row x becomes the two floats (x · v, ‖x‖).
//
// Tables, row maps and capture row lists of a step live in one arena buffer, bound as f32 and
// as u32; the offsets (in elements) locate each in it.

struct HookParams {
    /// Rows of the step (intervene) or of the capture (gather).
    rows: u32,
    /// The slot's row width.
    stride: u32,
    col0: u32,
    width: u32,
    /// intervene: the table; gather: the row list.
    table_offset: u32,
    /// intervene: the row map; gather: where the capture starts in the output.
    map_offset: u32,
    /// intervene: add, set or scale; project: the vector v (f32 bits in the arena).
    mode: u32,
    _pad: u32,
}

const NO_ROW: u32 = 0xFFFFFFFFu;
const ADD: u32 = 0u;
const SET: u32 = 1u;

@group(0) @binding(0) var<uniform> p: HookParams;

@group(1) @binding(0) var<storage, read_write> x: array<f32>;        // [R, stride]
@group(1) @binding(1) var<storage, read> table: array<f32>;          // [K, width] at table_offset
@group(1) @binding(2) var<storage, read> words: array<u32>;          // row map [R] at map_offset

@compute @workgroup_size(64)
fn intervene(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.width || r >= p.rows) {
        return;
    }
    let m = words[p.map_offset + r];
    if (m == NO_ROW) {
        return;
    }
    let t = table[p.table_offset + m * p.width + i];
    let at = r * p.stride + p.col0 + i;
    if (p.mode == ADD) {
        x[at] += t;
    } else if (p.mode == SET) {
        x[at] = t;
    } else {
        x[at] *= t;
    }
}

@group(1) @binding(0) var<storage, read_write> captured: array<f32>; // the step's captures
@group(1) @binding(1) var<storage, read> src: array<f32>;            // [R, stride]
@group(1) @binding(2) var<storage, read> rows: array<u32>;           // row list at table_offset

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let k = gid.y;
    if (i >= p.width || k >= p.rows) {
        return;
    }
    let r = rows[p.table_offset + k];
    captured[p.map_offset + k * p.width + i] = src[r * p.stride + p.col0 + i];
}

// One invocation per row, summing in f32 in channel order: no workgroup memory or barriers,
// which cost most on the CPU-backed adapters.
@compute @workgroup_size(64)
fn project(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    if (k >= p.rows) {
        return;
    }
    let base = rows[p.table_offset + k] * p.stride + p.col0;
    var dot = 0.0;
    var sq = 0.0;
    for (var i = 0u; i < p.width; i++) {
        let a = src[base + i];
        dot += a * bitcast<f32>(rows[p.mode + i]);
        sq += a * a;
    }
    captured[p.map_offset + 2u * k] = dot;
    captured[p.map_offset + 2u * k + 1u] = sqrt(sq);
}

struct CopyParams {
    /// Cache row width (NKV · HD).
    kv: u32,
    /// Rows to copy.
    len: u32,
    /// First element of the source slot and of the destination slot.
    src: u32,
    dst: u32,
}

@group(0) @binding(0) var<uniform> cp: CopyParams;
@group(1) @binding(0) var<storage, read_write> cache: array<f32>;   // [S, TM, KV]

@compute @workgroup_size(64)
fn copy_slot(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= cp.kv || t >= cp.len) {
        return;
    }
    cache[cp.dst + t * cp.kv + i] = cache[cp.src + t * cp.kv + i];
}
