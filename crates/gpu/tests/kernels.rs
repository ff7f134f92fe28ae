//! Every WGSL kernel against its `tiller_core::ops` twin on seeded random data, with awkward
//! shapes: T = 1, 7, 65 rows; C = 64, 80, 768, 1600; head sizes 16, 20 and 64; key/value heads
//! 1, 2 and 8 under grouped-query attention; partial rotary; widths that are not multiples of
//! the workgroup or of the K tile. Weights are rounded to f16 for both sides, so
//! the only differences are f32 summation order.

mod common;

use common::{assert_close, gpu, round_f16, Harness, Rng};
use tiller_core::arch::{Rope, RopeScaling};
use tiller_core::ops::{self, AttnDims, RowMeta};
use tiller_core::Mode;
use tiller_gpu::kernels::{
    pack_f16_rows, pack_wte_chunk, AttentionBuffers, AttentionParams, EmbedBuffers, EmbedParams, GatherBuffers, HookParams,
    InterveneBuffers, KvWriteBuffers, LayernormBuffers, LayernormParams, LogitsBuffers, LogitsParams, MatmulBuffers, MatmulParams,
    ResidualBuffers, ResidualParams, RopeBuffers, RopeParams,
};

fn harness() -> Option<Harness> {
    gpu().map(Harness::new)
}

#[test]
fn embed_matches_reference_across_wte_chunks() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(1);
    for (t, c) in [(1, 64), (7, 80), (65, 768)] {
        let (v, p) = (300, 100);
        let wte = round_f16(&rng.vec(v * c, 1.0));
        let wpe = round_f16(&rng.vec(p * c, 1.0));
        let tokens: Vec<u32> = (0..t).map(|_| rng.below(v as u32)).collect();
        let positions: Vec<u32> = (0..t).map(|_| rng.below(p as u32)).collect();
        let mut want = vec![0.0; t * c];
        ops::embed(&mut want, &tokens, &positions, &wte, Some(&wpe), c);
        let mut want_rotary = vec![0.0; t * c];
        ops::embed(&mut want_rotary, &tokens, &positions, &wte, None, c);

        // wte in two chunks, split at an awkward row, as the engine does for large vocabularies.
        let split = 123;
        let (tok_b, pos_b, wpe_b) = (h.u32s(&tokens), h.u32s(&positions), h.f16s(&wpe));
        for (learned, want) in [(1, &want), (0, &want_rotary)] {
            let out = h.zeros(t * c);
            let mut rec = h.recorder();
            for (start, len) in [(0, split), (split, v - split)] {
                let chunk = h.bytes(&pack_wte_chunk(&wte[start * c..(start + len) * c], len, c));
                let g = h
                    .kernels
                    .bind_embed(&h.gpu.device, &EmbedBuffers { out: &out, tokens: &tok_b, positions: &pos_b, wte: &chunk, wpe: &wpe_b });
                let p = EmbedParams { rows: t as u32, c: c as u32, vocab_start: start as u32, vocab_len: len as u32, learned };
                h.kernels.embed(&mut rec, &g, &p);
            }
            h.submit(rec);
            assert_close(&format!("embed T={t} C={c} learned={learned}"), &h.read(&out, t * c), want, 0.0, 0.0);
        }
    }
}

#[test]
fn layernorm_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(2);
    for (t, c) in [(1, 64), (7, 80), (65, 768), (7, 1600)] {
        // An offset and spread like GPT-2's residual stream.
        let inp: Vec<f32> = rng.vec(t * c, 4.0).iter().map(|x| x + 3.0).collect();
        let weight = rng.vec(c, 1.0);
        let bias = rng.vec(c, 0.5);
        for (rms, eps) in [(0, 1e-5), (1, 1e-6), (0, 1e-3)] {
            let mut want = vec![0.0; t * c];
            if rms == 1 {
                ops::rmsnorm(&mut want, &inp, &weight, c, eps);
            } else {
                ops::layernorm(&mut want, &inp, &weight, &bias, c, eps);
            }
            let out = h.zeros(t * c);
            let (i, w, b) = (h.f32s(&inp), h.f32s(&weight), h.f32s(&bias));
            let g = h.kernels.bind_layernorm(&h.gpu.device, &LayernormBuffers { out: &out, inp: &i, weight: &w, bias: &b });
            let mut rec = h.recorder();
            h.kernels.layernorm(&mut rec, &g, &LayernormParams { rows: t as u32, c: c as u32, eps, rms });
            h.submit(rec);
            assert_close(&format!("layernorm T={t} C={c} rms={rms} eps={eps}"), &h.read(&out, t * c), &want, 1e-5, 1e-5);
        }
    }
}

struct MatmulCase {
    rows: usize,
    k: usize,
    n: usize,
    bias: bool,
    gelu: bool,
}

fn check_matmul(h: &mut Harness, rng: &mut Rng, case: MatmulCase) {
    check_matmul_act(h, rng, case, false);
}

fn check_matmul_act(h: &mut Harness, rng: &mut Rng, case: MatmulCase, erf: bool) {
    let MatmulCase { rows, k, n, bias, gelu } = case;
    let inp = rng.vec(rows * k, 1.0);
    let weight = round_f16(&rng.vec(k * n, 1.0 / (k as f32).sqrt()));
    let b = rng.vec(n, 0.5);
    let mut want = vec![0.0; rows * n];
    ops::matmul(&mut want, &inp, &weight, bias.then_some(&b[..]), k, n);
    if gelu && erf {
        ops::gelu_erf(&mut want);
    } else if gelu {
        ops::gelu(&mut want);
    }
    let out = h.zeros(rows * n);
    let (i, w, bb) = (h.f32s(&inp), h.bytes(&pack_f16_rows(&weight, k, n)), h.f32s(&b));
    let g = h.kernels.bind_matmul(&h.gpu.device, &MatmulBuffers { out: &out, inp: &i, weight: &w, bias: &bb });
    let act = if erf { MatmulParams::GELU_ERF } else { MatmulParams::GELU };
    let flags = if bias { MatmulParams::BIAS } else { 0 } | if gelu { act } else { 0 };
    let mut rec = h.recorder();
    h.kernels.matmul(&mut rec, &g, &MatmulParams { rows: rows as u32, k: k as u32, n: n as u32, flags });
    h.submit(rec);
    let what = format!("matmul R={rows} K={k} N={n} bias={bias} gelu={gelu} erf={erf}");
    assert_close(&what, &h.read(&out, rows * n), &want, 2e-6 * (k as f32).sqrt(), 1e-5);
}

#[test]
fn matmul_matches_reference_on_awkward_shapes() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(3);
    let cases = [
        // T = 1, K not a multiple of the 64-wide K tile, N/2 not a multiple of the workgroup.
        MatmulCase { rows: 1, k: 80, n: 240, bias: true, gelu: false },
        MatmulCase { rows: 7, k: 64, n: 66, bias: false, gelu: false },
        // N not a multiple of 8: rows of the weight are padded.
        MatmulCase { rows: 5, k: 70, n: 42, bias: true, gelu: true },
        MatmulCase { rows: 65, k: 80, n: 320, bias: true, gelu: true },
        MatmulCase { rows: 2, k: 768, n: 2304, bias: true, gelu: false },
        MatmulCase { rows: 6, k: 1600, n: 1600, bias: true, gelu: false },
        MatmulCase { rows: 65, k: 768, n: 3072, bias: true, gelu: true },
        MatmulCase { rows: 3, k: 6400, n: 1600, bias: true, gelu: false },
    ];
    for case in cases {
        check_matmul(&mut h, &mut rng, case);
    }
}

/// The exact (erf) GELU of GPT-NeoX, fused like the tanh one, on decode and prompt tiles.
#[test]
fn matmul_gelu_erf_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(31);
    for (rows, k, n) in [(1, 64, 256), (7, 80, 42), (65, 64, 320)] {
        check_matmul_act(&mut h, &mut rng, MatmulCase { rows, k, n, bias: true, gelu: true }, true);
    }
}

/// GELU's cube must be x*x*x: pow(x, 3.0) is undefined for negative x in WGSL.
#[test]
fn matmul_gelu_handles_large_negative_and_positive_inputs() {
    let Some(mut h) = harness() else { return };
    // Identity weights: out = gelu(inp + bias), with inputs out to ±40 where tanh saturates.
    let n = 128;
    let inp: Vec<f32> = (0..n).map(|i| (i as f32 - 64.0) * 0.625).collect();
    let mut eye = vec![0.0f32; n * n];
    for i in 0..n {
        eye[i * n + i] = 1.0;
    }
    let mut want = inp.clone();
    ops::gelu(&mut want);
    let out = h.zeros(n);
    let (i, w, b) = (h.f32s(&inp), h.bytes(&pack_f16_rows(&eye, n, n)), h.f32s(&vec![0.0; n]));
    let g = h.kernels.bind_matmul(&h.gpu.device, &MatmulBuffers { out: &out, inp: &i, weight: &w, bias: &b });
    let mut rec = h.recorder();
    let flags = MatmulParams::BIAS | MatmulParams::GELU;
    h.kernels.matmul(&mut rec, &g, &MatmulParams { rows: 1, k: n as u32, n: n as u32, flags });
    h.submit(rec);
    assert_close("gelu over [-40, 40]", &h.read(&out, n), &want, 1e-6, 1e-5);
}

struct AttentionCase {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    slots: usize,
    tm: usize,
    /// (slot, first position, count): rows of the step, in order.
    seqs: Vec<(u32, u32, u32)>,
}

fn case_rows(seqs: &[(u32, u32, u32)]) -> Vec<RowMeta> {
    seqs.iter().flat_map(|&(slot, start, n)| (start..start + n).map(move |pos| RowMeta { slot, pos })).collect()
}

fn check_attention(h: &mut Harness, rng: &mut Rng, case: &AttentionCase) {
    let AttentionCase { n_head, n_kv_head, head_dim, slots, tm, .. } = *case;
    let dims = AttnDims { n_head, n_kv_head, head_dim, tm };
    let (qkv_w, kv, q_w) = (dims.qkv_width(), dims.kv_width(), n_head * head_dim);
    let rows = case_rows(&case.seqs);
    let r = rows.len();
    let qkv = rng.vec(r * qkv_w, 1.0);
    // Earlier positions hold what previous steps cached.
    let mut k_cache = rng.vec(slots * tm * kv, 1.0);
    let mut v_cache = rng.vec(slots * tm * kv, 1.0);
    let (k_gpu, v_gpu) = (h.f32s(&k_cache), h.f32s(&v_cache));
    ops::kv_write(&mut k_cache, &mut v_cache, &qkv, &rows, dims);
    let mut want = vec![0.0; r * q_w];
    ops::attention(&mut want, &qkv, &k_cache, &v_cache, &rows, dims);

    let meta: Vec<u32> = rows.iter().flat_map(|m| [m.slot, m.pos]).collect();
    let (qkv_b, meta_b, out) = (h.f32s(&qkv), h.u32s(&meta), h.zeros(r * q_w));
    let d = &h.gpu.device;
    let kv_g = h.kernels.bind_kv_write(d, &KvWriteBuffers { k_cache: &k_gpu, v_cache: &v_gpu, qkv: &qkv_b, rows: &meta_b });
    let att_g = h.kernels.bind_attention(d, &AttentionBuffers { out: &out, qkv: &qkv_b, k_cache: &k_gpu, v_cache: &v_gpu, rows: &meta_b });
    let p =
        AttentionParams { rows: r as u32, n_head: n_head as u32, n_kv_head: n_kv_head as u32, head_dim: head_dim as u32, tm: tm as u32 };
    let mut rec = h.recorder();
    h.kernels.kv_write(&mut rec, &kv_g, &p);
    h.kernels.attention(&mut rec, &att_g, &p);
    h.submit(rec);
    let what = format!("NH={n_head} NKV={n_kv_head} HD={head_dim} seqs={:?}", case.seqs);
    assert_close(&format!("kv_write k {what}"), &h.read(&k_gpu, slots * tm * kv), &k_cache, 0.0, 0.0);
    assert_close(&format!("kv_write v {what}"), &h.read(&v_gpu, slots * tm * kv), &v_cache, 0.0, 0.0);
    assert_close(&format!("attention {what}"), &h.read(&out, r * q_w), &want, 1e-5, 1e-4);
}

#[test]
fn attention_matches_reference_for_prompts_and_decode() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(4);
    let mha = |c: usize, n_head: usize, slots, tm, seqs| AttentionCase { n_head, n_kv_head: n_head, head_dim: c / n_head, slots, tm, seqs };
    let cases = [
        // Head size 16: one decode row deep into its slot.
        mha(64, 4, 3, 80, vec![(2, 40, 1)]),
        // Head size 16: a 7-token prompt and a decode row in another slot.
        mha(64, 4, 3, 80, vec![(0, 0, 7), (1, 12, 1)]),
        // Head size 64: a 65-token prompt (more keys than invocations).
        mha(768, 12, 2, 70, vec![(1, 0, 65)]),
        // Rows past the 2048-key tile of workgroup memory: the online softmax across tiles.
        mha(64, 4, 1, 4100, vec![(0, 2040, 3), (0, 3000, 1), (0, 4000, 1)]),
        // Head size 64 with C = 1600 (25 heads): batch of different lengths.
        mha(1600, 25, 3, 130, vec![(0, 0, 3), (2, 60, 7), (1, 129, 1)]),
        // Head size 20 (C = 80, 4 heads): continuation of a prompt.
        mha(80, 4, 1, 100, vec![(0, 30, 65)]),
    ];
    for case in &cases {
        check_attention(&mut h, &mut rng, case);
    }
}

/// Grouped-query attention: query heads share key/value heads (1, 2 and 8 of them) without
/// copies; head sizes 16, 64, 96 and 128 (Llama-3.2-1B has 32 q heads sharing 8 kv heads of 64).
#[test]
fn grouped_query_attention_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(41);
    let cases = [
        AttentionCase { n_head: 3, n_kv_head: 1, head_dim: 16, slots: 2, tm: 40, seqs: vec![(0, 0, 7), (1, 20, 1)] },
        AttentionCase { n_head: 4, n_kv_head: 2, head_dim: 16, slots: 1, tm: 80, seqs: vec![(0, 10, 65)] },
        AttentionCase { n_head: 32, n_kv_head: 8, head_dim: 64, slots: 2, tm: 48, seqs: vec![(0, 0, 5), (1, 47, 1)] },
        AttentionCase { n_head: 14, n_kv_head: 2, head_dim: 64, slots: 1, tm: 2100, seqs: vec![(0, 2050, 2)] },
        // Head size 128 (Llama-3.2-3B, Qwen2.5-1.5B): the 16-invocation pipeline.
        AttentionCase { n_head: 8, n_kv_head: 2, head_dim: 128, slots: 2, tm: 40, seqs: vec![(0, 0, 9), (1, 30, 1)] },
        AttentionCase { n_head: 4, n_kv_head: 4, head_dim: 96, slots: 1, tm: 2100, seqs: vec![(0, 2040, 3)] },
    ];
    for case in &cases {
        check_attention(&mut h, &mut rng, case);
    }
}

/// Rotary embedding of q and k in place: full (Llama, with llama3 scaling) and partial
/// (GPT-NeoX's quarter of each head), prompts and decode rows at awkward positions.
#[test]
fn rope_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(42);
    let llama3 = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 32.0 };
    // (NH, NKV, HD, rope, seqs)
    let cases = [
        (3, 1, 16, Rope { theta: 500000.0, rotary_dim: 16, scaling: llama3 }, vec![(0, 0, 7), (1, 33, 1)]),
        (4, 4, 16, Rope { theta: 10000.0, rotary_dim: 4, scaling: RopeScaling::None }, vec![(0, 5, 65)]),
        (32, 8, 64, Rope { theta: 500000.0, rotary_dim: 64, scaling: RopeScaling::Linear { factor: 2.0 } }, vec![(0, 0, 3), (1, 127, 1)]),
        (12, 12, 64, Rope { theta: 10000.0, rotary_dim: 16, scaling: RopeScaling::None }, vec![(1, 100, 2)]),
    ];
    for (n_head, n_kv_head, head_dim, rope, seqs) in cases {
        let dims = AttnDims { n_head, n_kv_head, head_dim, tm: 128 };
        let rows = case_rows(&seqs);
        let r = rows.len();
        let qkv = rng.vec(r * dims.qkv_width(), 1.0);
        let (cos, sin) = rope.tables(128);
        let mut want = qkv.clone();
        ops::rope(&mut want, &rows, &cos, &sin, rope.rotary_dim, dims);
        let meta: Vec<u32> = rows.iter().flat_map(|m| [m.slot, m.pos]).collect();
        let (qkv_b, cos_b, sin_b, meta_b) = (h.f32s(&qkv), h.f32s(&cos), h.f32s(&sin), h.u32s(&meta));
        let g = h.kernels.bind_rope(&h.gpu.device, &RopeBuffers { qkv: &qkv_b, cos: &cos_b, sin: &sin_b, rows: &meta_b });
        let p = RopeParams {
            rows: r as u32,
            heads: (n_head + n_kv_head) as u32,
            head_dim: head_dim as u32,
            qkv_width: dims.qkv_width() as u32,
            half: (rope.rotary_dim / 2) as u32,
        };
        let mut rec = h.recorder();
        h.kernels.rope(&mut rec, &g, &p);
        h.submit(rec);
        let what = format!("rope NH={n_head} NKV={n_kv_head} HD={head_dim} D={} seqs={seqs:?}", rope.rotary_dim);
        assert_close(&what, &h.read(&qkv_b, r * dims.qkv_width()), &want, 1e-6, 1e-6);
    }
}

/// SwiGLU's product silu(gate) · up, with gates far into both tails (exp must not overflow to NaN).
#[test]
fn swiglu_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(43);
    for (t, f) in [(1, 88), (7, 120), (65, 8192)] {
        let up = rng.vec(t * f, 2.0);
        let mut gate = rng.vec(t * f, 6.0);
        gate[0] = -200.0;
        gate[1] = 200.0;
        let mut want = up.clone();
        ops::swiglu(&mut want, &gate);
        let (ub, gb) = (h.f32s(&up), h.f32s(&gate));
        let g = h.kernels.bind_swiglu(&h.gpu.device, &ResidualBuffers { x: &ub, y: &gb });
        let mut rec = h.recorder();
        h.kernels.swiglu(&mut rec, &g, &ResidualParams::new(t as u32, f as u32));
        h.submit(rec);
        assert_close(&format!("swiglu T={t} F={f}"), &h.read(&ub, t * f), &want, 1e-6, 1e-5);
    }
}

#[test]
fn residual_add_matches_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(5);
    for (t, c) in [(1, 64), (7, 80), (65, 768)] {
        let x = rng.vec(t * c, 1.0);
        let y = rng.vec(t * c, 1.0);
        let mut want = x.clone();
        ops::residual_add(&mut want, &y);
        let (xb, yb) = (h.f32s(&x), h.f32s(&y));
        let g = h.kernels.bind_residual_add(&h.gpu.device, &ResidualBuffers { x: &xb, y: &yb });
        let mut rec = h.recorder();
        h.kernels.residual_add(&mut rec, &g, &ResidualParams::new(t as u32, c as u32));
        h.submit(rec);
        assert_close(&format!("residual_add T={t} C={c}"), &h.read(&xb, t * c), &want, 0.0, 0.0);
    }
}

/// The hook kernels: `intervene` in each mode on whole rows and on a column slice (a head of
/// z) of awkward width, with its table and map at offsets inside one arena and some rows
/// unmapped; `gather` of picked rows and columns to an offset in the capture buffer, and
/// `project` of the same rows onto a vector.
#[test]
fn intervene_and_gather_match_reference() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(5);
    for (t, stride, col0, width) in [(1, 64, 0, 64), (7, 80, 20, 20), (65, 768, 704, 64), (9, 1600, 17, 33)] {
        let x = rng.vec(t * stride, 1.0);
        let k = 3;
        let table = rng.vec(k * width, 2.0);
        let row_map: Vec<u32> = (0..t).map(|i| if i % 3 == 1 { u32::MAX } else { (i % k) as u32 }).collect();
        let pad = 5;
        let mut arena: Vec<u32> = vec![0; pad];
        arena.extend(table.iter().map(|v| v.to_bits()));
        arena.extend_from_slice(&row_map);
        let ab = h.u32s(&arena);
        for mode in [Mode::Add, Mode::Set, Mode::Scale] {
            let mut want = x.clone();
            ops::intervene(&mut want, stride, col0, width, &table, &row_map, mode);
            let xb = h.f32s(&x);
            let g = h.kernels.bind_intervene(&h.gpu.device, &InterveneBuffers { x: &xb, table: &ab, row_map: &ab });
            let p = HookParams {
                rows: t as u32,
                stride: stride as u32,
                col0: col0 as u32,
                width: width as u32,
                table_offset: pad as u32,
                map_offset: (pad + k * width) as u32,
                mode: HookParams::mode(mode),
                _pad: 0,
            };
            let mut rec = h.recorder();
            h.kernels.intervene(&mut rec, &g, &p);
            h.submit(rec);
            assert_close(
                &format!("intervene {mode:?} T={t} stride={stride} cols {col0}+{width}"),
                &h.read(&xb, t * stride),
                &want,
                0.0,
                0.0,
            );
        }

        // Rows picked out of order, one twice, after 7 unrelated words, to output offset 11.
        let rows: Vec<u32> = [t - 1, 0, t / 2, 0].into_iter().map(|r| r as u32).collect();
        let mut words = vec![0u32; 7];
        words.extend_from_slice(&rows);
        let want: Vec<f32> =
            rows.iter().flat_map(|&r| &x[r as usize * stride + col0..r as usize * stride + col0 + width]).copied().collect();
        let (xb, wb, out) = (h.f32s(&x), h.u32s(&words), h.zeros(11 + rows.len() * width));
        let g = h.kernels.bind_gather(&h.gpu.device, &GatherBuffers { captured: &out, src: &xb, rows: &wb });
        let p = HookParams {
            rows: rows.len() as u32,
            stride: stride as u32,
            col0: col0 as u32,
            width: width as u32,
            table_offset: 7,
            map_offset: 11,
            ..Default::default()
        };
        let mut rec = h.recorder();
        h.kernels.gather(&mut rec, &g, &p);
        h.submit(rec);
        let got = h.read(&out, 11 + rows.len() * width);
        assert_close(&format!("gather T={t} stride={stride} cols {col0}+{width}"), &got[11..], &want, 0.0, 0.0);
        assert!(got[..11].iter().all(|&v| v == 0.0), "gather wrote before its offset");

        // project: the same rows onto a vector stored after them, (x · v, ‖x‖) per row, against
        // StepPlan::gather's f64 sums.
        let v = rng.vec(width, 1.0);
        let mut words = words.clone();
        let vector_at = words.len() as u32;
        words.extend(v.iter().map(|x| x.to_bits()));
        let want: Vec<f32> = rows
            .iter()
            .flat_map(|&r| {
                let x = &x[r as usize * stride + col0..r as usize * stride + col0 + width];
                let dot: f64 = x.iter().zip(&v).map(|(&a, &b)| a as f64 * b as f64).sum();
                [dot as f32, x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt() as f32]
            })
            .collect();
        let (wb, out) = (h.u32s(&words), h.zeros(11 + rows.len() * 2));
        let g = h.kernels.bind_gather(&h.gpu.device, &GatherBuffers { captured: &out, src: &xb, rows: &wb });
        let mut rec = h.recorder();
        h.kernels.project(&mut rec, &g, &HookParams { mode: vector_at, ..p });
        h.submit(rec);
        let got = h.read(&out, 11 + rows.len() * 2);
        // f32 sums in channel order: within a few ulps of ‖x‖‖v‖ per term.
        let scale = (width as f32).sqrt() * 4.0;
        assert_close(&format!("project T={t} stride={stride} cols {col0}+{width}"), &got[11..], &want, 1e-5 * scale, 1e-5);
        assert!(got[..11].iter().all(|&v| v == 0.0), "project wrote before its offset");
    }
}

#[test]
fn logits_match_reference_across_wte_chunks_and_row_picks() {
    let Some(mut h) = harness() else { return };
    let mut rng = Rng::new(6);
    for (t, c) in [(1, 64), (7, 80), (65, 768), (2, 1600)] {
        let v = 1000; // not a multiple of the workgroup
        let wte = round_f16(&rng.vec(v * c, 1.0));
        let rows_in = t + 2;
        let inp = rng.vec(rows_in * c, 1.0);
        // Pick rows out of order, as LogitRows::Last does.
        let picked: Vec<u32> = (0..t as u32).map(|i| (i * 7 + 1) % rows_in as u32).collect();
        let gathered: Vec<f32> = picked.iter().flat_map(|&r| inp[r as usize * c..(r as usize + 1) * c].to_vec()).collect();
        let mut want = vec![0.0; t * v];
        ops::logits(&mut want, &gathered, &wte, c, v);

        let out = h.zeros(t * v);
        let (ib, pb) = (h.f32s(&inp), h.u32s(&picked));
        let mut rec = h.recorder();
        let split = 517;
        for (start, len) in [(0, split), (split, v - split)] {
            let chunk = h.bytes(&pack_wte_chunk(&wte[start * c..(start + len) * c], len, c));
            let g = h.kernels.bind_logits(&h.gpu.device, &LogitsBuffers { out: &out, inp: &ib, row_index: &pb, wte: &chunk });
            let p = LogitsParams { rows: t as u32, c: c as u32, vocab_start: start as u32, vocab_len: len as u32, v: v as u32 };
            h.kernels.logits(&mut rec, &g, &p);
        }
        h.submit(rec);
        assert_close(&format!("logits T={t} C={c}"), &h.read(&out, t * v), &want, 2e-6 * (c as f32).sqrt(), 1e-5);
    }
}
