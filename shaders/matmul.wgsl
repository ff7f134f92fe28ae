// Twin of `ops::matmul` (and `ops::gelu` fused on request):
//     out[R, N] = inp[R, K] · weight[K, N] + bias[N]        (GPT-2's Conv1D layout, [in, out])
//
// Weights are f16, packed two per u32 along N, so one u32 load gives an invocation its two
// adjacent output columns and neighbouring invocations read neighbouring words (coalesced).
// Accumulation is f32. A workgroup computes TILE_ROWS rows × 2·WG columns: the rows' inputs are
// staged in workgroup memory KT channels at a time and every weight word loaded is used
// TILE_ROWS times. Decode steps (R ≤ a few) use TILE_ROWS = 1, prompt passes a taller tile.

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    /// bit 0: add bias; bit 1: apply GELU (tanh form) to the result.
    flags: u32,
}

const WG: u32 = 64u;
const KT: u32 = 64u;
const MAX_TILE_ROWS: u32 = 8u;
const FLAG_BIAS: u32 = 1u;
const FLAG_GELU: u32 = 2u;

/// Rows per workgroup, 1..=MAX_TILE_ROWS.
override TILE_ROWS: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(1) @binding(0) var<storage, read_write> out: array<f32>;   // [R, N]
@group(1) @binding(1) var<storage, read> inp: array<f32>;         // [R, K]
@group(1) @binding(2) var<storage, read> weight: array<u32>;      // [K, N/2] f16 pairs
@group(1) @binding(3) var<storage, read> bias: array<f32>;        // [N]

var<workgroup> a_tile: array<f32, MAX_TILE_ROWS * KT>;            // [TILE_ROWS, KT]

// GPT-2's gelu_new. The cube is written as products: pow(x, 3) is undefined for x < 0 in WGSL
// and SwiftShader returns garbage for it. tanh's argument is clamped because some
// implementations compute tanh from exp and overflow to NaN; tanh(±10) is ±1 in f32 anyway.
fn gelu(x: vec2<f32>) -> vec2<f32> {
    let s = 0.7978846; // sqrt(2 / pi)
    let u = clamp(s * (x + 0.044715 * x * x * x), vec2(-10.0), vec2(10.0));
    return 0.5 * x * (1.0 + tanh(u));
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half_n = p.n / 2u;
    let j = wg.x * WG + lid; // column pair: columns 2j and 2j + 1
    let r0 = wg.y * TILE_ROWS;
    var acc: array<vec2<f32>, MAX_TILE_ROWS>;
    for (var k0 = 0u; k0 < p.k; k0 += KT) {
        for (var e = lid; e < TILE_ROWS * KT; e += WG) {
            let r = r0 + e / KT;
            let k = k0 + e % KT;
            var a = 0.0;
            if (r < p.rows && k < p.k) {
                a = inp[r * p.k + k];
            }
            a_tile[e] = a;
        }
        workgroupBarrier();
        if (j < half_n) {
            let k_len = min(KT, p.k - k0);
            for (var kk = 0u; kk < k_len; kk++) {
                let w = unpack2x16float(weight[(k0 + kk) * half_n + j]);
                for (var rr = 0u; rr < TILE_ROWS; rr++) {
                    acc[rr] += a_tile[rr * KT + kk] * w;
                }
            }
        }
        workgroupBarrier();
    }
    if (j >= half_n) {
        return;
    }
    var b = vec2(0.0);
    if ((p.flags & FLAG_BIAS) != 0u) {
        b = vec2(bias[2u * j], bias[2u * j + 1u]);
    }
    for (var rr = 0u; rr < TILE_ROWS; rr++) {
        let r = r0 + rr;
        if (r < p.rows) {
            var v = acc[rr] + b;
            if ((p.flags & FLAG_GELU) != 0u) {
                v = gelu(v);
            }
            out[r * p.n + 2u * j] = v.x;
            out[r * p.n + 2u * j + 1u] = v.y;
        }
    }
}
