// Twins of `ops::matmul` (with `ops::gelu` fused on request) and `ops::logits`:
//     matmul: out[R, N] = inp[R, K] · weight[K, N] + bias[N]  (GPT-2's Conv1D layout, [in, out])
//     logits: out[R, V] = inp[rows, C] · wte[V, C]ᵀ            (the tied LM head)
// Both are one product over f16 weights stored [K, N]: rows of N8 = ceil(N / 8) `vec4<u32>`
// words, eight f16 columns a word, zero-padded past N (`kernels::pack_f16_rows`); the engine
// stores wte transposed, [C, V], in that layout (`kernels::pack_wte_chunk`).
//
// Register tiles, no workgroup memory and no barriers. An invocation owns TILE_WORDS words of
// eight adjacent columns (words j and j + WG) for TILE_ROWS rows, and per input channel k loads
// each of its weight words once and uses it for every row of the tile. Neighbouring invocations
// read neighbouring words. Why this shape, on CPU-backed WebGPU (see BENCHMARKS.md):
// - a storage load whose address differs between invocations is the expensive operation
//   (lavapipe loops over the SIMD lanes for each loaded component, SwiftShader gathers), so a
//   load brings eight weights and each weight serves TILE_ROWS rows; `inp[...]` is the same
//   address for the whole workgroup and costs little;
// - accumulators are named variables, not an array: a loop over an array of accumulators is
//   not unrolled by these compilers, which then keep the array in memory (2.5-4× slower);
// - barriers are expensive on both (each switches between the workgroup's SIMD groups);
// - K_STEP input channels per loop step update each accumulator once per step.
// Decode steps (R ≤ a few rows) use a one-row, one-word tile, so N / 8 invocations share the
// work; prompt passes use 16 rows × 2 words. Accumulation is f32. The tiles, K steps and
// workgroup sizes are chosen in `kernels.rs` from measurements on lavapipe and SwiftShader.

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    /// matmul: bit 0 adds the bias, bit 1 applies GELU (tanh form), bit 2 exact (erf) GELU,
    /// bit 3 adds the product to `out` instead of replacing it (MELBO's backward, `dx += dy · Wᵀ`).
    /// logits: where this wte chunk's columns start in `out`.
    flags_or_vocab_start: u32,
    /// logits: the row stride of `out` (the full vocabulary); unused by matmul.
    out_stride: u32,
}

/// Invocations per workgroup: the engine uses 16 for matmul (GPT-2's narrow layers, N = C, then
/// still give a 2-core adapter a dozen workgroups to share) and 64 for logits (N = V).
override WG: u32 = 64u;
const MAX_TILE_ROWS: u32 = 16u;
const FLAG_BIAS: u32 = 1u;
const FLAG_GELU: u32 = 2u;
const FLAG_GELU_ERF: u32 = 4u;
const FLAG_ACCUMULATE: u32 = 8u;

/// Rows per tile: 1, 2, 4, 8 or 16.
override TILE_ROWS: u32 = 1u;
/// Column words per invocation: 1 or 2.
override TILE_WORDS: u32 = 1u;
/// Input channels per step of the K loop: 1, 2 or 4. More channels per step load and store a
/// (spilled) accumulator less often but keep more weights live.
override K_STEP: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(1) @binding(0) var<storage, read_write> out: array<f32>;   // [R, N]  (logits: [*, V])
@group(1) @binding(1) var<storage, read> inp: array<f32>;         // [R, K]  (logits: [*, C])
@group(1) @binding(2) var<storage, read> weight: array<vec4<u32>>; // [K, N8] (logits: a wte chunk [C, L8])
// matmul
@group(1) @binding(3) var<storage, read> bias: array<f32>;        // [N]
// logits
@group(1) @binding(3) var<storage, read> row_index: array<u32>;   // [R] rows of `inp` to use

/// Sixteen columns of one row: word 0 in lo0/hi0, word 1 (TILE_WORDS = 2) in lo1/hi1.
struct Cols {
    lo0: vec4<f32>,
    hi0: vec4<f32>,
    lo1: vec4<f32>,
    hi1: vec4<f32>,
}

/// acc + a.x·w[0] + a.y·w[1] + a.z·w[2] + a.w·w[3], for the first K_STEP of the four input
/// channels (the others are zero), so a spilled accumulator is loaded and stored once per step.
fn madd4(acc: Cols, a: vec4<f32>, w: array<Cols, 4>) -> Cols {
    var o = acc;
    o.lo0 += a.x * w[0].lo0 + a.y * w[1].lo0 + a.z * w[2].lo0 + a.w * w[3].lo0;
    o.hi0 += a.x * w[0].hi0 + a.y * w[1].hi0 + a.z * w[2].hi0 + a.w * w[3].hi0;
    if (TILE_WORDS > 1u) {
        o.lo1 += a.x * w[0].lo1 + a.y * w[1].lo1 + a.z * w[2].lo1 + a.w * w[3].lo1;
        o.hi1 += a.x * w[0].hi1 + a.y * w[1].hi1 + a.z * w[2].hi1 + a.w * w[3].hi1;
    }
    return o;
}

/// Input channels k .. k + K_STEP of the row starting at `base`; channels past K or past the
/// step read as zero.
fn inp4(base: u32, k: u32) -> vec4<f32> {
    let last = base + p.k - 1u;
    var a = vec4(inp[base + k], 0.0, 0.0, 0.0);
    if (K_STEP > 1u) {
        a.y = inp[min(base + k + 1u, last)];
    }
    if (K_STEP > 2u) {
        a.z = inp[min(base + k + 2u, last)];
        a.w = inp[min(base + k + 3u, last)];
    }
    return select(vec4(0.0), a, vec4(k) + vec4(0u, 1u, 2u, 3u) < vec4(p.k));
}

/// The weights of input channel k (clamped to the last) for the invocation's column words.
fn cols(k: u32, w0: u32, w1: u32, n8: u32) -> Cols {
    let row = min(k, p.k - 1u) * n8;
    var w: Cols;
    let q0 = unpack8(weight[row + w0]);
    w.lo0 = q0[0];
    w.hi0 = q0[1];
    if (TILE_WORDS > 1u) {
        let q1 = unpack8(weight[row + w1]);
        w.lo1 = q1[0];
        w.hi1 = q1[1];
    }
    return w;
}

fn unpack8(q: vec4<u32>) -> array<vec4<f32>, 2> {
    return array(vec4(unpack2x16float(q.x), unpack2x16float(q.y)), vec4(unpack2x16float(q.z), unpack2x16float(q.w)));
}

/// The tile's product: row rr of the result is inp[base[rr] .. base[rr] + K] · weight[:, words
/// j0 and j0 + WG]. Words past N8 are clamped to the last one (their columns are discarded).
fn product(base: array<u32, MAX_TILE_ROWS>, j0: u32, n8: u32) -> array<Cols, MAX_TILE_ROWS> {
    let w0 = min(j0, n8 - 1u);
    let w1 = min(j0 + WG, n8 - 1u);
    var t0 = Cols();
    var t1 = Cols();
    var t2 = Cols();
    var t3 = Cols();
    var t4 = Cols();
    var t5 = Cols();
    var t6 = Cols();
    var t7 = Cols();
    var t8 = Cols();
    var t9 = Cols();
    var t10 = Cols();
    var t11 = Cols();
    var t12 = Cols();
    var t13 = Cols();
    var t14 = Cols();
    var t15 = Cols();
    for (var k = 0u; k < p.k; k += K_STEP) {
        var w = array(cols(k, w0, w1, n8), Cols(), Cols(), Cols());
        if (K_STEP > 1u) {
            w[1] = cols(k + 1u, w0, w1, n8);
        }
        if (K_STEP > 2u) {
            w[2] = cols(k + 2u, w0, w1, n8);
            w[3] = cols(k + 3u, w0, w1, n8);
        }
        t0 = madd4(t0, inp4(base[0], k), w);
        if (TILE_ROWS > 1u) {
            t1 = madd4(t1, inp4(base[1], k), w);
        }
        if (TILE_ROWS > 2u) {
            t2 = madd4(t2, inp4(base[2], k), w);
            t3 = madd4(t3, inp4(base[3], k), w);
        }
        if (TILE_ROWS > 4u) {
            t4 = madd4(t4, inp4(base[4], k), w);
            t5 = madd4(t5, inp4(base[5], k), w);
            t6 = madd4(t6, inp4(base[6], k), w);
            t7 = madd4(t7, inp4(base[7], k), w);
        }
        if (TILE_ROWS > 8u) {
            t8 = madd4(t8, inp4(base[8], k), w);
            t9 = madd4(t9, inp4(base[9], k), w);
            t10 = madd4(t10, inp4(base[10], k), w);
            t11 = madd4(t11, inp4(base[11], k), w);
            t12 = madd4(t12, inp4(base[12], k), w);
            t13 = madd4(t13, inp4(base[13], k), w);
            t14 = madd4(t14, inp4(base[14], k), w);
            t15 = madd4(t15, inp4(base[15], k), w);
        }
    }
    return array(t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15);
}

// GPT-2's gelu_new. The cube is written as products: pow(x, 3) is undefined for x < 0 in WGSL
// and SwiftShader returns garbage for it. tanh's argument is clamped because some
// implementations compute tanh from exp and overflow to NaN; tanh(±10) is ±1 in f32 anyway.
fn gelu(x: f32) -> f32 {
    let s = 0.7978846; // sqrt(2 / pi)
    let u = clamp(s * (x + 0.044715 * x * x * x), -10.0, 10.0);
    return 0.5 * x * (1.0 + tanh(u));
}

// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7, below f32 GELU's own rounding at the
// sizes that matter); WGSL has no erf builtin. exp(-x²) underflows to 0 for |x| > 9: erf = ±1.
fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return sign(x) * (1.0 - poly * exp(-a * a));
}

// PyTorch's exact GELU (GPT-NeoX's `gelu`): 0.5 x (1 + erf(x / sqrt 2)).
fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf(x * 0.70710678));
}

/// Row r of a matmul tile: bias and GELU as the flags ask, columns past N dropped.
fn matmul_row(r: u32, j0: u32, c: Cols) {
    matmul_word(r, j0, c.lo0, c.hi0);
    if (TILE_WORDS > 1u) {
        matmul_word(r, j0 + WG, c.lo1, c.hi1);
    }
}

fn matmul_word(r: u32, j: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (r >= p.rows) {
        return;
    }
    let flags = p.flags_or_vocab_start;
    for (var i = 0u; i < 8u; i++) {
        let col = 8u * j + i;
        if (col < p.n) {
            var o = select(hi[i % 4u], lo[i % 4u], i < 4u);
            if ((flags & FLAG_BIAS) != 0u) {
                o += bias[col];
            }
            if ((flags & FLAG_GELU) != 0u) {
                o = gelu(o);
            }
            if ((flags & FLAG_GELU_ERF) != 0u) {
                o = gelu_erf(o);
            }
            if ((flags & FLAG_ACCUMULATE) != 0u) {
                o += out[r * p.n + col];
            }
            out[r * p.n + col] = o;
        }
    }
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n8 = (p.n + 7u) / 8u;
    let j0 = wg.x * WG * TILE_WORDS + lid;
    let r0 = wg.y * TILE_ROWS;
    var base: array<u32, MAX_TILE_ROWS>; // where each row starts in `inp`; rows past R repeat the last
    for (var rr = 0u; rr < MAX_TILE_ROWS; rr++) {
        base[rr] = min(r0 + rr, p.rows - 1u) * p.k;
    }
    let t = product(base, j0, n8);
    // Constant indices only: a loop over the tile's rows here would put the whole tile in memory.
    matmul_row(r0, j0, t[0]);
    if (TILE_ROWS > 1u) {
        matmul_row(r0 + 1u, j0, t[1]);
    }
    if (TILE_ROWS > 2u) {
        matmul_row(r0 + 2u, j0, t[2]);
        matmul_row(r0 + 3u, j0, t[3]);
    }
    if (TILE_ROWS > 4u) {
        matmul_row(r0 + 4u, j0, t[4]);
        matmul_row(r0 + 5u, j0, t[5]);
        matmul_row(r0 + 6u, j0, t[6]);
        matmul_row(r0 + 7u, j0, t[7]);
    }
    if (TILE_ROWS > 8u) {
        matmul_row(r0 + 8u, j0, t[8]);
        matmul_row(r0 + 9u, j0, t[9]);
        matmul_row(r0 + 10u, j0, t[10]);
        matmul_row(r0 + 11u, j0, t[11]);
        matmul_row(r0 + 12u, j0, t[12]);
        matmul_row(r0 + 13u, j0, t[13]);
        matmul_row(r0 + 14u, j0, t[14]);
        matmul_row(r0 + 15u, j0, t[15]);
    }
}

/// Row r of a logits tile, written at its vocabulary columns of `out`.
fn logits_row(r: u32, j0: u32, c: Cols) {
    logits_word(r, j0, c.lo0, c.hi0);
    if (TILE_WORDS > 1u) {
        logits_word(r, j0 + WG, c.lo1, c.hi1);
    }
}

fn logits_word(r: u32, j: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (r >= p.rows) {
        return;
    }
    for (var i = 0u; i < 8u; i++) {
        let col = 8u * j + i;
        if (col < p.n) {
            out[r * p.out_stride + p.flags_or_vocab_start + col] = select(hi[i % 4u], lo[i % 4u], i < 4u);
        }
    }
}

@compute @workgroup_size(WG)
fn logits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n8 = (p.n + 7u) / 8u;
    let j0 = wg.x * WG * TILE_WORDS + lid;
    let r0 = wg.y * TILE_ROWS;
    var base: array<u32, MAX_TILE_ROWS>;
    for (var rr = 0u; rr < MAX_TILE_ROWS; rr++) {
        base[rr] = row_index[min(r0 + rr, p.rows - 1u)] * p.k;
    }
    let t = product(base, j0, n8);
    // Constant indices only: a loop over the tile's rows here would put the whole tile in memory.
    logits_row(r0, j0, t[0]);
    if (TILE_ROWS > 1u) {
        logits_row(r0 + 1u, j0, t[1]);
    }
    if (TILE_ROWS > 2u) {
        logits_row(r0 + 2u, j0, t[2]);
        logits_row(r0 + 3u, j0, t[3]);
    }
    if (TILE_ROWS > 4u) {
        logits_row(r0 + 4u, j0, t[4]);
        logits_row(r0 + 5u, j0, t[5]);
        logits_row(r0 + 6u, j0, t[6]);
        logits_row(r0 + 7u, j0, t[7]);
    }
    if (TILE_ROWS > 8u) {
        logits_row(r0 + 8u, j0, t[8]);
        logits_row(r0 + 9u, j0, t[9]);
        logits_row(r0 + 10u, j0, t[10]);
        logits_row(r0 + 11u, j0, t[11]);
        logits_row(r0 + 12u, j0, t[12]);
        logits_row(r0 + 13u, j0, t[13]);
        logits_row(r0 + 14u, j0, t[14]);
        logits_row(r0 + 15u, j0, t[15]);
    }
}
