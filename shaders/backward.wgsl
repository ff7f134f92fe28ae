// Twins of `ops::backward`: the activation gradients of the forward kernels (the matmul's is
// `matmul` over the transposed weight, see `transpose_f16`), for MELBO's tape
// (`GpuEngine::tape_forward` / `tape_backward`). Weights are frozen, so only input gradients
// are computed; an input read by several ops sums their gradients (kernels that say `+=`).
// One `Params` for every entry point; each uses the fields it names.
//
// The attention's backward is two passes without atomics: `attention_probs_backward` writes
// each (head, query) row of P = softmax(q·kᵀ·scale) and dS = P·(dP − Σ P·dP)·scale into
// [NH, T, T] buffers; `attention_qkv_backward` then gives every channel of every qkv row to one
// invocation, which sums its own products (dQ from dS and K, dK from dSᵀ and Q, dV from Pᵀ and
// dZ, over the query heads of its key/value head), so no two invocations write one address.
// The rotary backward is `rope` (rope.wgsl) with the sine table negated: the inverse rotation.

struct Params {
    /// Rows of the pass (T: the prompt's tokens at positions 0..T).
    rows: u32,
    /// A row's width (norms, elementwise), or K (transpose_f16: the source is [K, N]).
    width: u32,
    /// transpose_f16: N.
    n: u32,
    /// norm_backward: 1 RMSNorm; gelu, gelu_backward: 2 tanh GELU, 4 erf GELU.
    flags: u32,
    eps: f32,
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    /// attention_probs_backward, attention_qkv_backward: the first row of the prompt (`rows` its
    /// tokens) in qkv, dz and dqkv, which hold a batch of prompts; P and dS hold this one.
    row0: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const FLAG_RMS: u32 = 1u;
const FLAG_GELU_ERF: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;

// ---- norm_backward: dx[r, :] += the LayerNorm (or RMSNorm) input gradient of dy[r, :] at x.
// LayerNorm: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·weight, x̂ = (x − mean)·rstd.
// RMSNorm: dx = rstd·g − x·rstd³·mean(g·x). One workgroup per row, as layernorm.wgsl.

@group(1) @binding(0) var<storage, read_write> n_dx: array<f32>;  // [R, C]
@group(1) @binding(1) var<storage, read> n_dy: array<f32>;        // [R, C]
@group(1) @binding(2) var<storage, read> n_x: array<f32>;         // [R, C]
@group(1) @binding(3) var<storage, read> n_weight: array<f32>;    // [C]

const NWG: u32 = 16u;
var<workgroup> partial: array<f32, NWG>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < NWG; i++) {
        total += partial[i];
    }
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(NWG)
fn norm_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wg.x;
    if (r >= p.rows) {
        return;
    }
    let c = p.width;
    let base = r * c;
    let rms = (p.flags & FLAG_RMS) != 0u;
    var mean = 0.0;
    if (!rms) {
        var s = 0.0;
        for (var i = lid; i < c; i += NWG) {
            s += n_x[base + i];
        }
        mean = workgroup_sum(s, lid) / f32(c);
    }
    var sq = 0.0;
    for (var i = lid; i < c; i += NWG) {
        let d = n_x[base + i] - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(sq, lid) / f32(c) + p.eps);
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = lid; i < c; i += NWG) {
        let g = n_dy[base + i] * n_weight[i];
        sg += g;
        if (rms) {
            sgx += g * n_x[base + i];
        } else {
            sgx += g * (n_x[base + i] - mean) * rstd;
        }
    }
    let mg = workgroup_sum(sg, lid) / f32(c);
    let mgx = workgroup_sum(sgx, lid) / f32(c);
    for (var i = lid; i < c; i += NWG) {
        let g = n_dy[base + i] * n_weight[i];
        if (rms) {
            n_dx[base + i] += rstd * g - n_x[base + i] * rstd * rstd * rstd * mgx;
        } else {
            let xhat = (n_x[base + i] - mean) * rstd;
            n_dx[base + i] += rstd * (g - mg - xhat * mgx);
        }
    }
}

// ---- transpose_f16: the f16 weight [K, N8] (matmul.wgsl's layout) transposed to [N, K8],
// so the input gradient dx += dy · Wᵀ is matmul.wgsl's `matmul` over it (with its accumulate
// flag): the forward's register tiles and lane-consecutive weight reads, instead of a strided
// read per row (which was 75% of a training step on lavapipe). One invocation per u32 (two f16)
// of the output; padding is zero.

@group(1) @binding(0) var<storage, read_write> t_dst: array<u32>;   // [N, K8 · 4]
@group(1) @binding(1) var<storage, read> t_src: array<u32>;         // [K, N8 · 4]

fn t_half(i: u32, j: u32, n_words: u32) -> f32 {
    let pair = unpack2x16float(t_src[i * n_words + j / 2u]);
    return select(pair.x, pair.y, (j & 1u) == 1u);
}

@compute @workgroup_size(64)
fn transpose_f16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x; // u32 index within an output row
    let j = gid.y; // output row: a column of the input
    let k = p.width;
    let n = p.n;
    let k_words = ((k + 7u) / 8u) * 4u;
    let n_words = ((n + 7u) / 8u) * 4u;
    if (w >= k_words || j >= n) {
        return;
    }
    let i0 = 2u * w;
    var lo = 0.0;
    var hi = 0.0;
    if (i0 < k) {
        lo = t_half(i0, j, n_words);
    }
    if (i0 + 1u < k) {
        hi = t_half(i0 + 1u, j, n_words);
    }
    t_dst[j * k_words + w] = pack2x16float(vec2<f32>(lo, hi));
}

// ---- gelu (in place, for the tape, which keeps the projection's output before it) and
// gelu_backward: d ·= gelu′(pre). Tanh form: 0.5(1 + t) + 0.5·x·(1 − t²)·s·(1 + 3·0.044715·x²),
// t = tanh(s·(x + 0.044715·x³)); erf form: Φ(x) + x·φ(x).

@group(1) @binding(0) var<storage, read_write> g_x: array<f32>;   // [R, W]
@group(1) @binding(1) var<storage, read> g_pre: array<f32>;       // [R, W]

fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return sign(x) * (1.0 - poly * exp(-a * a));
}

fn tanh_arg(x: f32) -> f32 {
    return clamp(0.7978846 * (x + 0.044715 * x * x * x), -10.0, 10.0);
}

@compute @workgroup_size(64)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.width || r >= p.rows) {
        return;
    }
    let k = r * p.width + i;
    let x = g_x[k];
    if ((p.flags & FLAG_GELU_ERF) != 0u) {
        g_x[k] = 0.5 * x * (1.0 + erf(x * 0.70710678));
    } else {
        g_x[k] = 0.5 * x * (1.0 + tanh(tanh_arg(x)));
    }
}

@compute @workgroup_size(64)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.width || r >= p.rows) {
        return;
    }
    let k = r * p.width + i;
    let x = g_pre[k];
    var d = 0.0;
    if ((p.flags & FLAG_GELU_ERF) != 0u) {
        d = 0.5 * (1.0 + erf(x * 0.70710678)) + x * 0.3989423 * exp(-0.5 * x * x);
    } else {
        let t = tanh(tanh_arg(x));
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978846 * (1.0 + 3.0 * 0.044715 * x * x);
    }
    g_x[k] *= d;
}

// ---- fill_zero: x = 0 (an overwritten activation's gradient, once it has been passed on).

@compute @workgroup_size(64)
fn fill_zero(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.width || r >= p.rows) {
        return;
    }
    g_x[r * p.width + i] = 0.0;
}

// ---- swiglu_backward: out = silu(gate)·up. dgate += dout·up·silu′(gate); dout becomes dup =
// dout·silu(gate) in place. silu′(g) = s·(1 + g·(1 − s)), s = sigmoid(g).

@group(1) @binding(0) var<storage, read_write> s_dout: array<f32>;   // [R, F]
@group(1) @binding(1) var<storage, read_write> s_dgate: array<f32>;  // [R, F]
@group(1) @binding(2) var<storage, read> s_gate: array<f32>;         // [R, F]
@group(1) @binding(3) var<storage, read> s_up: array<f32>;           // [R, F]

@compute @workgroup_size(64)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let r = gid.y;
    if (i >= p.width || r >= p.rows) {
        return;
    }
    let k = r * p.width + i;
    let g = s_gate[k];
    let s = 1.0 / (1.0 + exp(-g));
    let d = s_dout[k];
    s_dgate[k] += d * s_up[k] * s * (1.0 + g * (1.0 - s));
    s_dout[k] = d * g * s;
}

// ---- attention_probs_backward: per (query t, head h), P[h, t, s] and dS[h, t, s] for s ≤ t
// (zero past t), from qkv (after rotary) and dz, the gradient of the merged heads. Rows t and s
// are the prompt's, at rows row0 + t and row0 + s of qkv and dz.

@group(1) @binding(0) var<storage, read_write> a_p: array<f32>;    // [NH, T, T]
@group(1) @binding(1) var<storage, read_write> a_ds: array<f32>;   // [NH, T, T]
@group(1) @binding(2) var<storage, read> a_qkv: array<f32>;        // [T, QKV]
@group(1) @binding(3) var<storage, read> a_dz: array<f32>;         // [T, NH·HD]

fn score(t: u32, s: u32, qo: u32, ko: u32, width: u32) -> f32 {
    var dot = 0.0;
    let qr = (p.row0 + t) * width + qo;
    let kr = (p.row0 + s) * width + ko;
    for (var i = 0u; i < p.head_dim; i++) {
        dot += a_qkv[qr + i] * a_qkv[kr + i];
    }
    return dot / sqrt(f32(p.head_dim));
}

@compute @workgroup_size(64)
fn attention_probs_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    let h = gid.y;
    let tn = p.rows;
    if (t >= tn || h >= p.n_head) {
        return;
    }
    let hd = p.head_dim;
    let q_w = p.n_head * hd;
    let kv = p.n_kv_head * hd;
    let width = q_w + 2u * kv;
    let kvh = h / (p.n_head / p.n_kv_head);
    let qo = h * hd;
    let ko = q_w + kvh * hd;
    let vo = q_w + kv + kvh * hd;
    let row = (h * tn + t) * tn;
    var mx = -3.0e38;
    for (var s = 0u; s <= t; s++) {
        mx = max(mx, score(t, s, qo, ko, width));
    }
    var sum = 0.0;
    for (var s = 0u; s <= t; s++) {
        let e = exp(score(t, s, qo, ko, width) - mx);
        a_p[row + s] = e;
        sum += e;
    }
    var pdp = 0.0;
    for (var s = 0u; s <= t; s++) {
        let pr = a_p[row + s] / sum;
        a_p[row + s] = pr;
        var dp = 0.0;
        for (var i = 0u; i < hd; i++) {
            dp += a_dz[(p.row0 + t) * q_w + qo + i] * a_qkv[(p.row0 + s) * width + vo + i];
        }
        a_ds[row + s] = dp;
        pdp += pr * dp;
    }
    let scale = 1.0 / sqrt(f32(hd));
    for (var s = 0u; s < tn; s++) {
        if (s <= t) {
            a_ds[row + s] = a_p[row + s] * (a_ds[row + s] - pdp) * scale;
        } else {
            a_p[row + s] = 0.0;
            a_ds[row + s] = 0.0;
        }
    }
}

// ---- attention_qkv_backward: dqkv[t, ch] += its gradient, one invocation per (ch, t):
// q channels Σ_{s ≤ t} dS[h, t, s]·k[s]; k channels Σ_{h of its group} Σ_{u ≥ t} dS[h, u, t]·q[u, h];
// v channels Σ_{h of its group} Σ_{u ≥ t} P[h, u, t]·dz[u, h].

@group(1) @binding(0) var<storage, read_write> b_dqkv: array<f32>; // [T, QKV]
@group(1) @binding(1) var<storage, read> b_p: array<f32>;          // [NH, T, T]
@group(1) @binding(2) var<storage, read> b_ds: array<f32>;         // [NH, T, T]
@group(1) @binding(3) var<storage, read> b_qkv: array<f32>;        // [T, QKV]
@group(1) @binding(4) var<storage, read> b_dz: array<f32>;         // [T, NH·HD]

@compute @workgroup_size(64)
fn attention_qkv_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ch = gid.x;
    let t = gid.y;
    let tn = p.rows;
    let hd = p.head_dim;
    let q_w = p.n_head * hd;
    let kv = p.n_kv_head * hd;
    let width = q_w + 2u * kv;
    if (ch >= width || t >= tn) {
        return;
    }
    let group = p.n_head / p.n_kv_head;
    var acc = 0.0;
    if (ch < q_w) {
        let h = ch / hd;
        let i = ch % hd;
        let ko = q_w + (h / group) * hd + i;
        let row = (h * tn + t) * tn;
        for (var s = 0u; s <= t; s++) {
            acc += b_ds[row + s] * b_qkv[(p.row0 + s) * width + ko];
        }
    } else if (ch < q_w + kv) {
        let g = (ch - q_w) / hd;
        let i = (ch - q_w) % hd;
        for (var h = g * group; h < (g + 1u) * group; h++) {
            for (var u = t; u < tn; u++) {
                acc += b_ds[(h * tn + u) * tn + t] * b_qkv[(p.row0 + u) * width + h * hd + i];
            }
        }
    } else {
        let g = (ch - q_w - kv) / hd;
        let i = (ch - q_w - kv) % hd;
        for (var h = g * group; h < (g + 1u) * group; h++) {
            for (var u = t; u < tn; u++) {
                acc += b_p[(h * tn + u) * tn + t] * b_dz[(p.row0 + u) * q_w + h * hd + i];
            }
        }
    }
    b_dqkv[(p.row0 + t) * width + ch] += acc;
}
