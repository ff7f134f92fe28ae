//! The CPU reference kernels: plain loops, each the twin of a WGSL shader in `shaders/` with the
//! same name and argument order. They are the oracle the GPU kernels are tested against.
//!
//! Dimension key: R rows (tokens of every sequence in a step, flattened), C channels,
//! K/N a matmul's input/output width, V vocab, S cache slots, TM cache length per slot,
//! NH query heads, NKV key/value heads, HD head size, QKV = (NH + 2·NKV)·HD a fused qkv row,
//! KV = NKV·HD a cache row, D rotary channels per head.
//!
//! `exp` and `tanh` come from `libm`, not the platform, and sums run in a fixed order, so the
//! reference is bit-identical natively and in wasm (the page's CPU engine): same recipe and
//! seed, same tokens in the CLI and the page.

use crate::backend::Mode;

pub mod backward;

/// out[r, :] = wte[tokens[r], :] + wpe[positions[r], :] (wpe only for learned positions)
pub fn embed(out: &mut [f32], tokens: &[u32], positions: &[u32], wte: &[f32], wpe: Option<&[f32]>, c: usize) {
    for (r, (&tok, &pos)) in tokens.iter().zip(positions).enumerate() {
        let (t, p) = (tok as usize * c, pos as usize * c);
        for i in 0..c {
            out[r * c + i] = wte[t + i] + wpe.map_or(0.0, |w| w[p + i]);
        }
    }
}

/// out[r, :] = (inp[r, :] - mean) / sqrt(var + eps) * weight + bias, per row of width C.
pub fn layernorm(out: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], c: usize, eps: f32) {
    for (o, x) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)) {
        let mean = x.iter().sum::<f32>() / c as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            o[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
        }
    }
}

/// out[r, :] = inp[r, :] / sqrt(mean(inp[r, :]²) + eps) * weight, per row of width C (Llama's
/// `LlamaRMSNorm`: no mean subtracted, no bias).
pub fn rmsnorm(out: &mut [f32], inp: &[f32], weight: &[f32], c: usize, eps: f32) {
    for (o, x) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)) {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / c as f32;
        let rstd = 1.0 / (ms + eps).sqrt();
        for i in 0..c {
            o[i] = x[i] * rstd * weight[i];
        }
    }
}

/// out[R, N] = inp[R, K] · weight[K, N] + bias[N]. GPT-2's Conv1D layout: weight is [in, out].
pub fn matmul(out: &mut [f32], inp: &[f32], weight: &[f32], bias: Option<&[f32]>, k: usize, n: usize) {
    for (o, x) in out.chunks_exact_mut(n).zip(inp.chunks_exact(k)) {
        match bias {
            Some(b) => o.copy_from_slice(b),
            None => o.fill(0.0),
        }
        for (i, &xi) in x.iter().enumerate() {
            let w = &weight[i * n..(i + 1) * n];
            for j in 0..n {
                o[j] += xi * w[j];
            }
        }
    }
}

/// GPT-2's `gelu_new`: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in place.
pub fn gelu(x: &mut [f32]) {
    const S: f32 = 0.797_884_6; // sqrt(2 / pi)
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + libm::tanhf(S * (u + 0.044715 * u * u * u)));
    }
}

/// PyTorch's exact GELU: 0.5 x (1 + erf(x / sqrt 2)), in place (GPT-NeoX's `gelu`).
pub fn gelu_erf(x: &mut [f32]) {
    const R: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + libm::erff(u * R));
    }
}

/// SwiGLU's product: up[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + exp(−g)).
pub fn swiglu(up: &mut [f32], gate: &[f32]) {
    for (u, &g) in up.iter_mut().zip(gate) {
        *u *= g / (1.0 + libm::expf(-g));
    }
}

/// The attention's shapes: NH query heads and NKV key/value heads of HD channels, caches of TM
/// positions per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnDims {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub tm: usize,
}

impl AttnDims {
    /// A fused qkv row: q | k | v.
    pub fn qkv_width(&self) -> usize {
        (self.n_head + 2 * self.n_kv_head) * self.head_dim
    }
    /// A cache row.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_dim
    }
}

/// Rotary embedding of the q and k heads of qkv[R, QKV], in place, at each row's position:
/// in each head, channel i < D/2 pairs with i + D/2 (Hugging Face's `rotate_half`),
///     (a, b) → (a cos − b sin, b cos + a sin),  angle = pos · inv_freq[i];
/// channels D.. of a head pass unchanged (GPT-NeoX's partial rotary). cos, sin: [P, D/2].
pub fn rope(qkv: &mut [f32], rows: &[RowMeta], cos: &[f32], sin: &[f32], d: usize, dims: AttnDims) {
    let (hd, half) = (dims.head_dim, d / 2);
    let heads = dims.n_head + dims.n_kv_head; // q heads then k heads, contiguous
    let width = dims.qkv_width();
    for (r, m) in rows.iter().enumerate() {
        let t = m.pos as usize * half;
        for h in 0..heads {
            let v = &mut qkv[r * width + h * hd..r * width + h * hd + d];
            for i in 0..half {
                let (a, b) = (v[i], v[i + half]);
                let (c, s) = (cos[t + i], sin[t + i]);
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

/// x[R, C] += y[R, C]
pub fn residual_add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// An intervention on rows `[R, stride]`: channels `col0..col0 + width` of row r become
/// `x + t`, `t` or `x · t` (by `mode`) with `t = table[row_map[r]]` (`table` is `[K, width]`),
/// unless `row_map[r]` is `u32::MAX`. The ActAdd injection is `Mode::Add` over whole rows: the
/// caller maps (sequence, position) to a row of the steering table.
pub fn intervene(x: &mut [f32], stride: usize, col0: usize, width: usize, table: &[f32], row_map: &[u32], mode: Mode) {
    for (xr, &m) in x.chunks_exact_mut(stride).zip(row_map) {
        if m == u32::MAX {
            continue;
        }
        let t = &table[m as usize * width..(m as usize + 1) * width];
        let xs = &mut xr[col0..col0 + width];
        match mode {
            Mode::Add => xs.iter_mut().zip(t).for_each(|(x, t)| *x += t),
            Mode::Set => xs.copy_from_slice(t),
            Mode::Scale => xs.iter_mut().zip(t).for_each(|(x, t)| *x *= t),
        }
    }
}

/// Where each row of a step lives: its cache slot and absolute position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMeta {
    pub slot: u32,
    pub pos: u32,
}

/// Writes the keys and values of qkv[R, QKV] into the caches k_cache, v_cache [S, TM, KV] at
/// (slot, pos) of each row.
pub fn kv_write(k_cache: &mut [f32], v_cache: &mut [f32], qkv: &[f32], rows: &[RowMeta], dims: AttnDims) {
    let (kv, q, width) = (dims.kv_width(), dims.n_head * dims.head_dim, dims.qkv_width());
    for (r, m) in rows.iter().enumerate() {
        let dst = (m.slot as usize * dims.tm + m.pos as usize) * kv;
        let src = r * width + q;
        k_cache[dst..dst + kv].copy_from_slice(&qkv[src..src + kv]);
        v_cache[dst..dst + kv].copy_from_slice(&qkv[src + kv..src + 2 * kv]);
    }
}

/// Causal attention of each row's queries over its slot's cache positions 0..=pos.
/// out[R, NH·HD]: head h occupies channels h·HD..(h+1)·HD and reads key/value head
/// h / (NH / NKV) (grouped-query attention). Scale 1/sqrt(HD); softmax subtracts the max first.
pub fn attention(out: &mut [f32], qkv: &[f32], k_cache: &[f32], v_cache: &[f32], rows: &[RowMeta], dims: AttnDims) {
    let (hd, nh) = (dims.head_dim, dims.n_head);
    let (kv, width, group) = (dims.kv_width(), dims.qkv_width(), dims.n_head / dims.n_kv_head);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0.0f32; dims.tm];
    for (r, m) in rows.iter().enumerate() {
        let base = m.slot as usize * dims.tm * kv;
        let len = m.pos as usize + 1;
        for h in 0..nh {
            let q = &qkv[r * width + h * hd..r * width + (h + 1) * hd];
            let kh = (h / group) * hd;
            let mut max = f32::NEG_INFINITY;
            for t in 0..len {
                let k = &k_cache[base + t * kv + kh..base + t * kv + kh + hd];
                let s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                scores[t] = s;
                max = max.max(s);
            }
            let mut sum = 0.0;
            for s in &mut scores[..len] {
                *s = libm::expf(*s - max);
                sum += *s;
            }
            let o = &mut out[r * nh * hd + h * hd..r * nh * hd + (h + 1) * hd];
            o.fill(0.0);
            for t in 0..len {
                let w = scores[t] / sum;
                let v = &v_cache[base + t * kv + kh..base + t * kv + kh + hd];
                for i in 0..hd {
                    o[i] += w * v[i];
                }
            }
        }
    }
}

/// out[R, V] = inp[R, C] · wte[V, C]ᵀ (the LM head: the tied embedding, or `lm_head`).
pub fn logits(out: &mut [f32], inp: &[f32], wte: &[f32], c: usize, v: usize) {
    for (o, x) in out.chunks_exact_mut(v).zip(inp.chunks_exact(c)) {
        for j in 0..v {
            let w = &wte[j * c..(j + 1) * c];
            o[j] = x.iter().zip(w).map(|(a, b)| a * b).sum();
        }
    }
}
