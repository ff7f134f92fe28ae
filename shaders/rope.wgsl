// Twin of `ops::rope`: rotary position embedding of the q and k heads of a qkv buffer, in place.
// In each of the NH + NKV rotated heads of a row, channel i < D/2 pairs with i + D/2 (Hugging
// Face's `rotate_half`): (a, b) → (a cos − b sin, b cos + a sin) at angle pos · inv_freq[i];
// channels D.. of a head pass unchanged (GPT-NeoX's partial rotary). The cos and sin tables
// [P, D/2] are computed once per `reset` on the CPU in f64 and rounded to f32, exactly the
// reference's tables, so the two engines rotate by the same numbers.
//
// One invocation per (pair, row, head): 2 loads and 2 stores of the activations and 2 table
// reads per pair; a memory-bound pass over 2·(NH + NKV)·D/2 values a row, small beside the qkv
// matmul that produced them.

struct Params {
    rows: u32,
    /// NH + NKV: the q heads, then the k heads, are contiguous at the start of a row.
    heads: u32,
    head_dim: u32,
    /// The width of a qkv row.
    qkv_width: u32,
    /// D/2
    half: u32,
}

struct RowMeta {
    slot: u32,
    pos: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(1) @binding(0) var<storage, read_write> qkv: array<f32>;  // [R, QKV]
@group(1) @binding(1) var<storage, read> cos_t: array<f32>;      // [P, D/2]
@group(1) @binding(2) var<storage, read> sin_t: array<f32>;      // [P, D/2]
@group(1) @binding(3) var<storage, read> rows: array<RowMeta>;   // [R]

@compute @workgroup_size(WG)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    let h = gid.z;
    if (i >= p.half || r >= p.rows || h >= p.heads) {
        return;
    }
    let t = rows[r].pos * p.half + i;
    let c = cos_t[t];
    let s = sin_t[t];
    let base = r * p.qkv_width + h * p.head_dim;
    let a = qkv[base + i];
    let b = qkv[base + i + p.half];
    qkv[base + i] = a * c - b * s;
    qkv[base + i + p.half] = b * c + a * s;
}
