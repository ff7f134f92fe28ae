// Twin of `ops::matmul` (and `ops::gelu` fused on request):
//     out[R, N] = inp[R, K] · weight[K, N] + bias[N]        (GPT-2's Conv1D layout, [in, out])
//
// Weights are f16 in rows of N8 = ceil(N / 8) `vec4<u32>` words (eight f16 columns a word,
// zero-padded past N; see `kernels::pack_matmul_weight`). An invocation owns eight adjacent
// output columns and reads one 16-byte word per input channel: on CPU-backed WebGPU every
// storage load has a high fixed cost, so a load must bring as many weights as it can, and
// neighbouring invocations still read neighbouring words (coalesced on GPUs).
// Accumulation is f32. A workgroup computes TILE_ROWS rows × 8·WG columns: the rows' inputs are
// staged in workgroup memory KT channels at a time and every weight word loaded is used
// TILE_ROWS times. Decode steps (R ≤ a few) use a short tile, prompt passes a tall one.

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
@group(1) @binding(2) var<storage, read> weight: array<vec4<u32>>; // [K, N8], 8 f16 a word
@group(1) @binding(3) var<storage, read> bias: array<f32>;        // [N]

var<workgroup> a_tile: array<f32, MAX_TILE_ROWS * KT>;            // [TILE_ROWS, KT]

// GPT-2's gelu_new. The cube is written as products: pow(x, 3) is undefined for x < 0 in WGSL
// and SwiftShader returns garbage for it. tanh's argument is clamped because some
// implementations compute tanh from exp and overflow to NaN; tanh(±10) is ±1 in f32 anyway.
fn gelu(x: vec4<f32>) -> vec4<f32> {
    let s = 0.7978846; // sqrt(2 / pi)
    let u = clamp(s * (x + 0.044715 * x * x * x), vec4(-10.0), vec4(10.0));
    return 0.5 * x * (1.0 + tanh(u));
}

fn finish(v: vec4<f32>, col: u32) -> vec4<f32> {
    var o = v;
    if ((p.flags & FLAG_BIAS) != 0u) {
        for (var i = 0u; i < 4u; i++) {
            if (col + i < p.n) {
                o[i] += bias[col + i];
            }
        }
    }
    if ((p.flags & FLAG_GELU) != 0u) {
        o = gelu(o);
    }
    return o;
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n8 = (p.n + 7u) / 8u;
    let j = wg.x * WG + lid; // columns 8j .. 8j + 8
    let r0 = wg.y * TILE_ROWS;
    var acc: array<vec4<f32>, 2u * MAX_TILE_ROWS>; // row rr: columns 8j.. in [2rr], 8j+4.. in [2rr+1]
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
        if (j < n8) {
            let k_len = min(KT, p.k - k0);
            for (var kk = 0u; kk < k_len; kk++) {
                let q = weight[(k0 + kk) * n8 + j];
                let w_lo = vec4(unpack2x16float(q.x), unpack2x16float(q.y));
                let w_hi = vec4(unpack2x16float(q.z), unpack2x16float(q.w));
                for (var rr = 0u; rr < TILE_ROWS; rr++) {
                    let a = a_tile[rr * KT + kk];
                    acc[2u * rr] += a * w_lo;
                    acc[2u * rr + 1u] += a * w_hi;
                }
            }
        }
        workgroupBarrier();
    }
    if (j >= n8) {
        return;
    }
    let col = 8u * j;
    for (var rr = 0u; rr < TILE_ROWS; rr++) {
        let r = r0 + rr;
        if (r < p.rows) {
            let lo = finish(acc[2u * rr], col);
            let hi = finish(acc[2u * rr + 1u], col + 4u);
            for (var i = 0u; i < 4u; i++) {
                if (col + i < p.n) {
                    out[r * p.n + col + i] = lo[i];
                }
                if (col + 4u + i < p.n) {
                    out[r * p.n + col + 4u + i] = hi[i];
                }
            }
        }
    }
}
