//! The CPU reference kernels: plain loops, each the twin of a WGSL shader in `shaders/` with the
//! same name and argument order. They are the oracle the GPU kernels are tested against.
//!
//! Dimension key: R rows (tokens of every sequence in a step, flattened), C channels,
//! K/N a matmul's input/output width, V vocab, S cache slots, TM cache length per slot,
//! NH heads, HD head size (C / NH).
//!
//! `exp` and `tanh` come from `libm`, not the platform, and sums run in a fixed order, so the
//! reference is bit-identical natively and in wasm (the page's CPU engine): same recipe and
//! seed, same tokens in the CLI and the page.

use crate::config::LAYER_NORM_EPS;

/// out[r, :] = wte[tokens[r], :] + wpe[positions[r], :]
pub fn embed(out: &mut [f32], tokens: &[u32], positions: &[u32], wte: &[f32], wpe: &[f32], c: usize) {
    for (r, (&tok, &pos)) in tokens.iter().zip(positions).enumerate() {
        let (t, p) = (tok as usize * c, pos as usize * c);
        for i in 0..c {
            out[r * c + i] = wte[t + i] + wpe[p + i];
        }
    }
}

/// out[r, :] = (inp[r, :] - mean) / sqrt(var + 1e-5) * weight + bias, per row of width C.
pub fn layernorm(out: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], c: usize) {
    for (o, x) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)) {
        let mean = x.iter().sum::<f32>() / c as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let rstd = 1.0 / (var + LAYER_NORM_EPS).sqrt();
        for i in 0..c {
            o[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
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

/// x[R, C] += y[R, C]
pub fn residual_add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// x[r, :] += table[row_map[r], :] for every row whose map entry is not `u32::MAX`.
/// This is the ActAdd injection: the caller maps (sequence, position) to a row of the
/// steering table.
pub fn add_rows(x: &mut [f32], table: &[f32], row_map: &[u32], c: usize) {
    for (xr, &m) in x.chunks_exact_mut(c).zip(row_map) {
        if m != u32::MAX {
            let t = &table[m as usize * c..(m as usize + 1) * c];
            for i in 0..c {
                xr[i] += t[i];
            }
        }
    }
}

/// Where each row of a step lives: its cache slot and absolute position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMeta {
    pub slot: u32,
    pub pos: u32,
}

/// Writes the keys and values of qkv[R, 3C] into the caches k_cache, v_cache [S, TM, C] at
/// (slot, pos) of each row.
pub fn kv_write(k_cache: &mut [f32], v_cache: &mut [f32], qkv: &[f32], rows: &[RowMeta], c: usize, tm: usize) {
    for (r, m) in rows.iter().enumerate() {
        let dst = (m.slot as usize * tm + m.pos as usize) * c;
        let src = r * 3 * c;
        k_cache[dst..dst + c].copy_from_slice(&qkv[src + c..src + 2 * c]);
        v_cache[dst..dst + c].copy_from_slice(&qkv[src + 2 * c..src + 3 * c]);
    }
}

/// Causal attention of each row's query over its slot's cache positions 0..=pos.
/// out[R, C]: head h occupies channels h*HD..(h+1)*HD. Softmax subtracts the max first.
#[allow(clippy::too_many_arguments)] // the kernel's operands, named as in the WGSL
pub fn attention(out: &mut [f32], qkv: &[f32], k_cache: &[f32], v_cache: &[f32], rows: &[RowMeta], c: usize, nh: usize, tm: usize) {
    let hd = c / nh;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0.0f32; tm];
    for (r, m) in rows.iter().enumerate() {
        let base = m.slot as usize * tm * c;
        let len = m.pos as usize + 1;
        for h in 0..nh {
            let q = &qkv[r * 3 * c + h * hd..r * 3 * c + (h + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for t in 0..len {
                let k = &k_cache[base + t * c + h * hd..base + t * c + (h + 1) * hd];
                let s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                scores[t] = s;
                max = max.max(s);
            }
            let mut sum = 0.0;
            for s in &mut scores[..len] {
                *s = libm::expf(*s - max);
                sum += *s;
            }
            let o = &mut out[r * c + h * hd..r * c + (h + 1) * hd];
            o.fill(0.0);
            for t in 0..len {
                let w = scores[t] / sum;
                let v = &v_cache[base + t * c + h * hd..base + t * c + (h + 1) * hd];
                for i in 0..hd {
                    o[i] += w * v[i];
                }
            }
        }
    }
}

/// out[R, V] = inp[R, C] · wte[V, C]ᵀ (the tied LM head).
pub fn logits(out: &mut [f32], inp: &[f32], wte: &[f32], c: usize, v: usize) {
    for (o, x) in out.chunks_exact_mut(v).zip(inp.chunks_exact(c)) {
        for j in 0..v {
            let w = &wte[j * c..(j + 1) * c];
            o[j] = x.iter().zip(w).map(|(a, b)| a * b).sum();
        }
    }
}
