//! Each backward kernel of backward.wgsl against its CPU twin in `tiller_core::ops::backward`,
//! on awkward shapes: widths that are not multiples of the workgroup or of a weight word,
//! one-row passes, grouped-query heads, partial rotary, activations far into the tails. (The
//! twins themselves are checked against finite differences in tiller-core's backward.rs.)

mod common;

use common::{assert_close, gpu, round_f16, Harness, Rng};
use tiller_core::arch::{Rope, RopeScaling};
use tiller_core::ops::{self, backward, AttnDims, RowMeta};
use tiller_gpu::kernels::{
    f16_row_words, pack_f16_rows, AttentionBackwardBuffers, BackwardParams, MatmulBuffers, MatmulParams, NormBackwardBuffers, RopeBuffers,
    RopeParams,
};

fn harness() -> Option<Harness> {
    gpu().map(Harness::new)
}

#[test]
fn norm_backward_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(11);
    for (r, c, rms) in [(1, 3, false), (5, 37, false), (3, 64, true), (7, 129, true), (2, 768, false)] {
        let x = rng.vec(r * c, 3.0);
        let dy = rng.vec(r * c, 1.0);
        let w = rng.vec(c, 1.5);
        let start = rng.vec(r * c, 0.5); // dx accumulates
        let mut want = start.clone();
        if rms {
            backward::rmsnorm_backward(&mut want, &dy, &x, &w, c, 1e-5);
        } else {
            backward::layernorm_backward(&mut want, &dy, &x, &w, c, 1e-5);
        }
        let (dx_b, dy_b, x_b, w_b) = (h.f32s(&start), h.f32s(&dy), h.f32s(&x), h.f32s(&w));
        let g = h.kernels.bind_norm_backward(&h.gpu.device, &NormBackwardBuffers { dx: &dx_b, dy: &dy_b, x: &x_b, weight: &w_b });
        let p = BackwardParams {
            rows: r as u32,
            width: c as u32,
            flags: if rms { BackwardParams::RMS } else { 0 },
            eps: 1e-5,
            ..Default::default()
        };
        let mut rec = h.recorder();
        h.kernels.norm_backward(&mut rec, &g, &p);
        h.submit(rec);
        assert_close(&format!("norm_backward R={r} C={c} rms={rms}"), &h.read(&dx_b, r * c), &want, 1e-5, 1e-4);
    }
}

/// The matmul's input gradient on the GPU: the weight transposed (`transpose_f16`), then
/// `matmul` with its accumulate flag, against `matmul_backward`.
#[test]
fn matmul_backward_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(12);
    // (R, K, N): widths that are not multiples of 8 (padded words), one row, rows past a tile
    for (r, k, n) in [(1, 1, 1), (3, 17, 5), (4, 70, 33), (2, 65, 192), (5, 48, 88), (19, 37, 13), (16, 64, 768)] {
        let w = round_f16(&rng.vec(k * n, 1.0));
        let dy = rng.vec(r * n, 1.0);
        let start = rng.vec(r * k, 0.5);
        let mut want = start.clone();
        backward::matmul_backward(&mut want, &dy, &w, k, n);
        let (dx_b, dy_b, w_b) = (h.f32s(&start), h.f32s(&dy), h.bytes(&pack_f16_rows(&w, k, n)));
        let wt_b = h.zeros(n * f16_row_words(k));
        let tg = h.kernels.bind_transpose_f16(&h.gpu.device, &wt_b, &w_b);
        let bias = h.zeros(4);
        let mg = h.kernels.bind_matmul(&h.gpu.device, &MatmulBuffers { out: &dx_b, inp: &dy_b, weight: &wt_b, bias: &bias });
        let mut rec = h.recorder();
        h.kernels.transpose_f16(&mut rec, &tg, &BackwardParams { width: k as u32, n: n as u32, ..Default::default() });
        h.kernels.matmul(&mut rec, &mg, &MatmulParams { rows: r as u32, k: n as u32, n: k as u32, flags: MatmulParams::ACCUMULATE });
        h.submit(rec);
        // the transpose is exact: Wᵀ packed is the transposed matrix packed
        let wt: Vec<f32> = (0..n * k).map(|x| w[(x % k) * n + x / k]).collect();
        assert_eq!(
            h.read(&wt_b, n * f16_row_words(k)),
            bytemuck::cast_slice::<u8, f32>(&pack_f16_rows(&wt, n, k)).to_vec(),
            "transpose_f16 K={k} N={n}"
        );
        assert_close(&format!("dx += dy · Wᵀ R={r} K={k} N={n}"), &h.read(&dx_b, r * k), &want, 1e-5, 1e-5);
    }
}

#[test]
fn gelu_forward_and_backward_match_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(13);
    let (r, f) = (3, 101);
    let mut pre = rng.vec(r * f, 5.0);
    pre[..4].copy_from_slice(&[0.0, -12.0, 12.0, 1e-4]);
    let d = rng.vec(r * f, 1.0);
    type Fwd = fn(&mut [f32]);
    type Bwd = fn(&mut [f32], &[f32]);
    for (flag, fwd, bwd) in [
        (MatmulParams::GELU, ops::gelu as Fwd, backward::gelu_backward as Bwd),
        (MatmulParams::GELU_ERF, ops::gelu_erf, backward::gelu_erf_backward),
    ] {
        let p = BackwardParams { rows: r as u32, width: f as u32, flags: flag, ..Default::default() };
        let mut want = pre.clone();
        fwd(&mut want);
        let x_b = h.f32s(&pre);
        let g = h.kernels.bind_gelu(&h.gpu.device, &x_b);
        let mut rec = h.recorder();
        h.kernels.gelu(&mut rec, &g, &p);
        h.submit(rec);
        assert_close(&format!("gelu flags {flag}"), &h.read(&x_b, r * f), &want, 1e-6, 1e-5);

        let mut want = d.clone();
        bwd(&mut want, &pre);
        let (d_b, pre_b) = (h.f32s(&d), h.f32s(&pre));
        let g = h.kernels.bind_gelu_backward(&h.gpu.device, &d_b, &pre_b);
        let mut rec = h.recorder();
        h.kernels.gelu_backward(&mut rec, &g, &p);
        h.submit(rec);
        assert_close(&format!("gelu_backward flags {flag}"), &h.read(&d_b, r * f), &want, 1e-6, 1e-5);
    }
}

#[test]
fn swiglu_backward_and_fill_zero_match_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(14);
    for (r, f) in [(1, 88), (7, 120)] {
        let mut gate = rng.vec(r * f, 6.0);
        gate[0] = -200.0;
        gate[1] = 200.0;
        let up = rng.vec(r * f, 2.0);
        let dout = rng.vec(r * f, 1.0);
        let dgate0 = rng.vec(r * f, 0.5);
        let (mut want_up, mut want_gate) = (dout.clone(), dgate0.clone());
        backward::swiglu_backward(&mut want_up, &mut want_gate, &gate, &up);
        let (dout_b, dgate_b, gate_b, up_b) = (h.f32s(&dout), h.f32s(&dgate0), h.f32s(&gate), h.f32s(&up));
        let g = h.kernels.bind_swiglu_backward(&h.gpu.device, &dout_b, &dgate_b, &gate_b, &up_b);
        let p = BackwardParams::rows(r as u32, f as u32);
        let mut rec = h.recorder();
        h.kernels.swiglu_backward(&mut rec, &g, &p);
        h.submit(rec);
        assert_close(&format!("swiglu_backward dup R={r} F={f}"), &h.read(&dout_b, r * f), &want_up, 1e-6, 1e-5);
        assert_close(&format!("swiglu_backward dgate R={r} F={f}"), &h.read(&dgate_b, r * f), &want_gate, 1e-6, 1e-5);
        let z = h.kernels.bind_fill_zero(&h.gpu.device, &dout_b);
        let mut rec = h.recorder();
        h.kernels.fill_zero(&mut rec, &z, &p);
        h.submit(rec);
        assert!(h.read(&dout_b, r * f).iter().all(|&x| x == 0.0), "fill_zero");
    }
}

/// The attention's backward (both passes), then the rotary backward (rope with the sine
/// negated), against `attention_backward` and `rope_backward`.
#[test]
fn attention_and_rope_backward_match_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(15);
    // (T, NH, NKV, HD, rotary D)
    for (t, nh, nkv, hd, d) in [(1, 2, 2, 4, 0), (5, 3, 1, 16, 16), (9, 4, 2, 8, 4), (70, 2, 1, 6, 0), (33, 12, 12, 64, 64)] {
        let dims = AttnDims { n_head: nh, n_kv_head: nkv, head_dim: hd, tm: t };
        let width = dims.qkv_width();
        let qkv = rng.vec(t * width, 1.5);
        let dz = rng.vec(t * nh * hd, 1.0);
        let start = rng.vec(t * width, 0.5);
        let mut want = start.clone();
        backward::attention_backward(&mut want, &dz, &qkv, t, dims);
        let rope = Rope { theta: 10000.0, rotary_dim: d.max(2), scaling: RopeScaling::None };
        let (cos, sin) = rope.tables(t);
        let rows: Vec<RowMeta> = (0..t as u32).map(|pos| RowMeta { slot: 0, pos }).collect();
        if d > 0 {
            backward::rope_backward(&mut want, &rows, &cos, &sin, d, dims);
        }
        let (dqkv_b, qkv_b, dz_b) = (h.f32s(&start), h.f32s(&qkv), h.f32s(&dz));
        let (p_b, ds_b) = (h.zeros(nh * t * t), h.zeros(nh * t * t));
        let groups = h.kernels.bind_attention_backward(
            &h.gpu.device,
            &AttentionBackwardBuffers { p: &p_b, ds: &ds_b, qkv: &qkv_b, dz: &dz_b, dqkv: &dqkv_b },
        );
        let p = BackwardParams { rows: t as u32, n_head: nh as u32, n_kv_head: nkv as u32, head_dim: hd as u32, ..Default::default() };
        let mut rec = h.recorder();
        h.kernels.attention_backward(&mut rec, &groups, &p);
        if d > 0 {
            let neg: Vec<f32> = sin.iter().map(|s| -s).collect();
            let meta: Vec<u32> = rows.iter().flat_map(|m| [m.slot, m.pos]).collect();
            let (cos_b, sin_b, meta_b) = (h.f32s(&cos), h.f32s(&neg), h.u32s(&meta));
            let g = h.kernels.bind_rope(&h.gpu.device, &RopeBuffers { qkv: &dqkv_b, cos: &cos_b, sin: &sin_b, rows: &meta_b });
            let rp =
                RopeParams { rows: t as u32, heads: (nh + nkv) as u32, head_dim: hd as u32, qkv_width: width as u32, half: (d / 2) as u32 };
            h.kernels.rope(&mut rec, &g, &rp);
        }
        h.submit(rec);
        let what = format!("attention backward T={t} NH={nh} NKV={nkv} HD={hd} rotary {d}");
        assert_close(&what, &h.read(&dqkv_b, t * width), &want, 1e-5, 1e-4);
    }
}

#[test]
fn attention_backward_of_a_batch_runs_each_prompt_at_its_rows() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(16);
    // (prompt lengths, NH, NKV, HD): MELBO's tape runs a batch of prompts, one pass per prompt
    for (lens, nh, nkv, hd) in [(vec![3usize, 7, 1], 4, 2, 8), (vec![5, 5], 3, 1, 16), (vec![1, 66, 2], 2, 2, 6)] {
        let tmax = *lens.iter().max().unwrap();
        let rows: usize = lens.iter().sum();
        let dims = |t: usize| AttnDims { n_head: nh, n_kv_head: nkv, head_dim: hd, tm: t };
        let width = dims(1).qkv_width();
        let (qkv, dz, start) = (rng.vec(rows * width, 1.5), rng.vec(rows * nh * hd, 1.0), rng.vec(rows * width, 0.5));
        let mut want = start.clone();
        let mut r0 = 0;
        for &t in &lens {
            let mut part = want[r0 * width..(r0 + t) * width].to_vec();
            let dz_part = &dz[r0 * nh * hd..(r0 + t) * nh * hd];
            backward::attention_backward(&mut part, dz_part, &qkv[r0 * width..(r0 + t) * width], t, dims(t));
            want[r0 * width..(r0 + t) * width].copy_from_slice(&part);
            r0 += t;
        }
        let (dqkv_b, qkv_b, dz_b) = (h.f32s(&start), h.f32s(&qkv), h.f32s(&dz));
        let (p_b, ds_b) = (h.zeros(nh * tmax * tmax), h.zeros(nh * tmax * tmax));
        let groups = h.kernels.bind_attention_backward(
            &h.gpu.device,
            &AttentionBackwardBuffers { p: &p_b, ds: &ds_b, qkv: &qkv_b, dz: &dz_b, dqkv: &dqkv_b },
        );
        let mut rec = h.recorder();
        let mut row0 = 0u32;
        for &t in &lens {
            let p = BackwardParams {
                rows: t as u32,
                row0,
                n_head: nh as u32,
                n_kv_head: nkv as u32,
                head_dim: hd as u32,
                ..Default::default()
            };
            h.kernels.attention_backward(&mut rec, &groups, &p);
            row0 += t as u32;
        }
        h.submit(rec);
        let what = format!("attention backward of a batch {lens:?} NH={nh} NKV={nkv} HD={hd}");
        assert_close(&what, &h.read(&dqkv_b, rows * width), &want, 1e-5, 1e-4);
    }
}
