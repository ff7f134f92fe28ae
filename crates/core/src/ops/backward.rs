//! The CPU reference of the backward pass: for each forward op of `ops`, the gradient of a
//! loss with respect to the op's activation input, given the gradient with respect to its
//! output (weights are frozen, so no weight gradients). Each is the twin of a WGSL shader of
//! the same name to come, checked against finite differences in `tests/backward.rs`.
//!
//! Conventions: `d*` arguments are gradients. Functions whose output gradient is read and
//! whose input gradient is written say which they accumulate into (`+=`): the tape sums the
//! gradients of an activation read by several ops.
//!
//! Dimension key as in `ops`: R rows, C channels, K/N a matmul's input/output width,
//! NH/NKV/HD the attention's heads and head size, D rotary channels.

use super::{AttnDims, RowMeta};

/// dx[r, :] += LayerNorm's input gradient for dy[r, :], at input x (per row of width C):
/// with x̂ = (x − mean)·rstd and g = dy·weight, dx = rstd·(g − mean(g) − x̂·mean(g·x̂)).
pub fn layernorm_backward(dx: &mut [f32], dy: &[f32], x: &[f32], weight: &[f32], c: usize, eps: f32) {
    for ((d, g), x) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(x.chunks_exact(c)) {
        let mean = x.iter().sum::<f32>() / c as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        let (mut mg, mut mgx) = (0.0f32, 0.0f32);
        for i in 0..c {
            let gi = g[i] * weight[i];
            mg += gi;
            mgx += gi * (x[i] - mean) * rstd;
        }
        let (mg, mgx) = (mg / c as f32, mgx / c as f32);
        for i in 0..c {
            let xhat = (x[i] - mean) * rstd;
            d[i] += rstd * (g[i] * weight[i] - mg - xhat * mgx);
        }
    }
}

/// dx[r, :] += RMSNorm's input gradient for dy[r, :], at input x: with g = dy·weight,
/// dx = rstd·g − x·rstd³·mean(g·x).
pub fn rmsnorm_backward(dx: &mut [f32], dy: &[f32], x: &[f32], weight: &[f32], c: usize, eps: f32) {
    for ((d, g), x) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(x.chunks_exact(c)) {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / c as f32;
        let rstd = 1.0 / (ms + eps).sqrt();
        let mgx = (0..c).map(|i| g[i] * weight[i] * x[i]).sum::<f32>() / c as f32;
        let r3 = rstd * rstd * rstd;
        for i in 0..c {
            d[i] += rstd * g[i] * weight[i] - x[i] * r3 * mgx;
        }
    }
}

/// dx[R, K] += dy[R, N] · weight[K, N]ᵀ: the input gradient of `ops::matmul` (the bias has
/// none).
pub fn matmul_backward(dx: &mut [f32], dy: &[f32], weight: &[f32], k: usize, n: usize) {
    for (d, g) in dx.chunks_exact_mut(k).zip(dy.chunks_exact(n)) {
        for (i, di) in d.iter_mut().enumerate() {
            let w = &weight[i * n..(i + 1) * n];
            *di += g.iter().zip(w).map(|(a, b)| a * b).sum::<f32>();
        }
    }
}

/// d[i] ·= gelu_new′(x[i]), in place: the gradient through `ops::gelu` at its input x.
pub fn gelu_backward(d: &mut [f32], x: &[f32]) {
    const S: f32 = 0.797_884_6; // sqrt(2 / pi)
    for (g, &u) in d.iter_mut().zip(x) {
        let t = libm::tanhf(S * (u + 0.044715 * u * u * u));
        *g *= 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * S * (1.0 + 3.0 * 0.044715 * u * u);
    }
}

/// d[i] ·= gelu′(x[i]) = Φ(x) + x·φ(x), in place: the gradient through `ops::gelu_erf`.
pub fn gelu_erf_backward(d: &mut [f32], x: &[f32]) {
    const R: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const P: f32 = 0.398_942_3; // 1 / sqrt(2 pi)
    for (g, &u) in d.iter_mut().zip(x) {
        *g *= 0.5 * (1.0 + libm::erff(u * R)) + u * P * libm::expf(-0.5 * u * u);
    }
}

/// The gradients through `ops::swiglu` (out = silu(gate)·up), at its inputs gate and up:
/// dgate += dout·up·silu′(gate), and dup = dout·silu(gate) written into `dout` in place.
/// silu′(g) = s·(1 + g·(1 − s)), s = sigmoid(g).
pub fn swiglu_backward(dout: &mut [f32], dgate: &mut [f32], gate: &[f32], up: &[f32]) {
    for (((d, dg), &g), &u) in dout.iter_mut().zip(dgate.iter_mut()).zip(gate).zip(up) {
        let s = 1.0 / (1.0 + libm::expf(-g));
        *dg += *d * u * s * (1.0 + g * (1.0 - s));
        *d *= g * s;
    }
}

/// The gradient through `ops::rope` in place: each rotated pair of dqkv's q and k heads is
/// rotated back by its angle, (da, db) = (dy_a cos + dy_b sin, dy_b cos − dy_a sin).
pub fn rope_backward(dqkv: &mut [f32], rows: &[RowMeta], cos: &[f32], sin: &[f32], d: usize, dims: AttnDims) {
    let (hd, half) = (dims.head_dim, d / 2);
    let heads = dims.n_head + dims.n_kv_head;
    let width = dims.qkv_width();
    for (r, m) in rows.iter().enumerate() {
        let t = m.pos as usize * half;
        for h in 0..heads {
            let v = &mut dqkv[r * width + h * hd..r * width + h * hd + d];
            for i in 0..half {
                let (a, b) = (v[i], v[i + half]);
                let (c, s) = (cos[t + i], sin[t + i]);
                v[i] = a * c + b * s;
                v[i + half] = b * c - a * s;
            }
        }
    }
}

/// dqkv[T, QKV] += the gradient of causal self-attention over one sequence of T rows at
/// positions 0..T (`ops::kv_write` then `ops::attention`, the keys and values being the rows'
/// own), for dz[T, NH·HD], at qkv (after rotary). Per query head h (key/value head g):
/// P = softmax(q·kᵀ·scale) over s ≤ t; dV[s] += Σ_t P[t,s]·dz[t]; dP[t,s] = dz[t]·v[s];
/// dS = P·(dP − Σ_s P·dP); dQ[t] += scale·Σ_s dS[t,s]·k[s]; dK[s] += scale·Σ_t dS[t,s]·q[t].
pub fn attention_backward(dqkv: &mut [f32], dz: &[f32], qkv: &[f32], t_len: usize, dims: AttnDims) {
    let (hd, nh) = (dims.head_dim, dims.n_head);
    let (kv, width, group) = (dims.kv_width(), dims.qkv_width(), dims.n_head / dims.n_kv_head);
    let q_w = nh * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut p = vec![0.0f32; t_len];
    let mut dp = vec![0.0f32; t_len];
    for h in 0..nh {
        let (qo, ko, vo) = (h * hd, q_w + (h / group) * hd, q_w + kv + (h / group) * hd);
        for t in 0..t_len {
            let q = &qkv[t * width + qo..t * width + qo + hd];
            let g = &dz[t * q_w + h * hd..t * q_w + (h + 1) * hd];
            let mut max = f32::NEG_INFINITY;
            for s in 0..=t {
                let k = &qkv[s * width + ko..s * width + ko + hd];
                p[s] = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                max = max.max(p[s]);
            }
            let mut sum = 0.0;
            for x in &mut p[..=t] {
                *x = libm::expf(*x - max);
                sum += *x;
            }
            let mut pdp = 0.0f32;
            for s in 0..=t {
                p[s] /= sum;
                let v = &qkv[s * width + vo..s * width + vo + hd];
                dp[s] = g.iter().zip(v).map(|(a, b)| a * b).sum();
                pdp += p[s] * dp[s];
                for i in 0..hd {
                    dqkv[s * width + vo + i] += p[s] * g[i];
                }
            }
            for s in 0..=t {
                let ds = p[s] * (dp[s] - pdp) * scale;
                if ds == 0.0 {
                    continue;
                }
                for i in 0..hd {
                    dqkv[t * width + qo + i] += ds * qkv[s * width + ko + i];
                    dqkv[s * width + ko + i] += ds * qkv[t * width + qo + i];
                }
            }
        }
    }
}
