//! The CPU reference's backward kernels (`ops::backward`) against central finite differences
//! of their forward twins, on awkward shapes (odd widths, grouped-query heads, partial rotary,
//! one-row and many-row prompts); then the tape over whole blocks of every fixture family, and
//! MELBO's objective gradient, against finite differences of the forward.
//!
//! Each check takes a random linear readout L = Σ u·y of the op's output y and compares the
//! analytic input gradient with (L(x + εe) − L(x − εe)) / 2ε over every input (or a sample).
//! Forwards run in f32, so the tolerance is relative to the gradient's norm: 2e-3.

use tiller_core::golden::{load_fixture, MODELS};
use tiller_core::melbo::{self, Objective, TargetTokens};
use tiller_core::ops::{self, backward, AttnDims, RowMeta};
use tiller_core::sample::Rng;
use tiller_core::tape::Tape;

fn randn(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| ((rng.next_f64() * 2.0 - 1.0) * 1.7) as f32 * scale).collect()
}

fn readout(y: &[f32], u: &[f32]) -> f64 {
    y.iter().zip(u).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// The finite-difference gradient of x ↦ readout(f(x), u), at every input (or every
/// `stride`-th one), and the largest error relative to the analytic gradient's norm.
fn fd_error(x: &[f32], u: &[f32], f: impl Fn(&[f32]) -> Vec<f32>, analytic: &[f32], eps: f32, stride: usize) -> f64 {
    assert_eq!(analytic.len(), x.len());
    let scale = analytic.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt().max(1e-6);
    let mut worst = 0.0f64;
    for i in (0..x.len()).step_by(stride) {
        let mut xp = x.to_vec();
        xp[i] += eps;
        let mut xm = x.to_vec();
        xm[i] -= eps;
        let fd = (readout(&f(&xp), u) - readout(&f(&xm), u)) / (2.0 * eps as f64);
        worst = worst.max((fd - analytic[i] as f64).abs() / scale);
    }
    worst
}

const TOL: f64 = 2e-3;

#[test]
fn layernorm_and_rmsnorm_backward_match_finite_differences() {
    let mut rng = Rng::new(1, 0);
    for (r, c) in [(1, 3), (3, 37), (5, 64), (2, 129)] {
        let x = randn(&mut rng, r * c, 2.0);
        let w = randn(&mut rng, c, 1.0);
        let b = randn(&mut rng, c, 0.5);
        let u = randn(&mut rng, r * c, 1.0);
        let eps = 1e-5;
        let ln = |x: &[f32]| {
            let mut y = vec![0.0; x.len()];
            ops::layernorm(&mut y, x, &w, &b, c, eps);
            y
        };
        let mut dx = vec![0.5f32; r * c]; // accumulates
        backward::layernorm_backward(&mut dx, &u, &x, &w, c, eps);
        dx.iter_mut().for_each(|d| *d -= 0.5);
        let e = fd_error(&x, &u, ln, &dx, 1e-2, 1);
        assert!(e < TOL, "layernorm [{r}, {c}]: error {e}");

        let rms = |x: &[f32]| {
            let mut y = vec![0.0; x.len()];
            ops::rmsnorm(&mut y, x, &w, c, eps);
            y
        };
        let mut dx = vec![0.0f32; r * c];
        backward::rmsnorm_backward(&mut dx, &u, &x, &w, c, eps);
        let e = fd_error(&x, &u, rms, &dx, 1e-2, 1);
        assert!(e < TOL, "rmsnorm [{r}, {c}]: error {e}");
    }
}

#[test]
fn matmul_backward_is_dy_times_w_transposed() {
    let mut rng = Rng::new(2, 0);
    for (r, k, n) in [(1, 1, 1), (3, 17, 5), (4, 33, 70)] {
        let x = randn(&mut rng, r * k, 1.0);
        let w = randn(&mut rng, k * n, 1.0);
        let bias = randn(&mut rng, n, 1.0);
        let u = randn(&mut rng, r * n, 1.0);
        let f = |x: &[f32]| {
            let mut y = vec![0.0; r * n];
            ops::matmul(&mut y, x, &w, Some(&bias), k, n);
            y
        };
        let mut dx = vec![0.0f32; r * k];
        backward::matmul_backward(&mut dx, &u, &w, k, n);
        let e = fd_error(&x, &u, f, &dx, 1e-2, 1);
        assert!(e < TOL, "matmul [{r}, {k}] × [{k}, {n}]: error {e}");
    }
}

#[test]
fn activation_backwards_match_finite_differences() {
    let mut rng = Rng::new(3, 0);
    // a spread of inputs, the tails and zero included
    let mut x = randn(&mut rng, 61, 4.0);
    x.extend([0.0, -6.0, 6.0, 1e-3]);
    let u = randn(&mut rng, x.len(), 1.0);
    type Fwd = fn(&mut [f32]);
    type Bwd = fn(&mut [f32], &[f32]);
    for (name, fwd, bwd) in
        [("gelu", ops::gelu as Fwd, backward::gelu_backward as Bwd), ("gelu_erf", ops::gelu_erf, backward::gelu_erf_backward)]
    {
        let f = |x: &[f32]| {
            let mut y = x.to_vec();
            fwd(&mut y);
            y
        };
        let mut d = u.clone();
        bwd(&mut d, &x);
        let e = fd_error(&x, &u, f, &d, 1e-3, 1);
        assert!(e < TOL, "{name}: error {e}");
    }
    // SwiGLU: both inputs, gate then up
    let n = x.len();
    let up = randn(&mut rng, n, 2.0);
    let gate = x.clone();
    let mut dup = u.clone();
    let mut dgate = vec![0.0f32; n];
    backward::swiglu_backward(&mut dup, &mut dgate, &gate, &up);
    let by_gate = |g: &[f32]| {
        let mut y = up.clone();
        ops::swiglu(&mut y, g);
        y
    };
    let e = fd_error(&gate, &u, by_gate, &dgate, 1e-3, 1);
    assert!(e < TOL, "swiglu gate: error {e}");
    let by_up = |v: &[f32]| {
        let mut y = v.to_vec();
        ops::swiglu(&mut y, &gate);
        y
    };
    let e = fd_error(&up, &u, by_up, &dup, 1e-3, 1);
    assert!(e < TOL, "swiglu up: error {e}");
}

fn attention_forward(qkv: &[f32], t: usize, dims: AttnDims, rope: Option<(usize, &[f32], &[f32])>) -> Vec<f32> {
    let rows: Vec<RowMeta> = (0..t as u32).map(|pos| RowMeta { slot: 0, pos }).collect();
    let mut q = qkv.to_vec();
    if let Some((d, cos, sin)) = rope {
        ops::rope(&mut q, &rows, cos, sin, d, dims);
    }
    let (mut kc, mut vc) = (vec![0.0; t * dims.kv_width()], vec![0.0; t * dims.kv_width()]);
    ops::kv_write(&mut kc, &mut vc, &q, &rows, dims);
    let mut z = vec![0.0; t * dims.n_head * dims.head_dim];
    ops::attention(&mut z, &q, &kc, &vc, &rows, dims);
    z
}

#[test]
fn attention_and_rope_backward_match_finite_differences() {
    let mut rng = Rng::new(4, 0);
    // (T, NH, NKV, HD, rotary channels): multi-head, grouped-query, one position, partial rotary
    for (t, nh, nkv, hd, d) in [(1, 2, 2, 4, 0), (5, 3, 1, 6, 4), (7, 4, 2, 8, 8), (4, 2, 1, 5, 0)] {
        let dims = AttnDims { n_head: nh, n_kv_head: nkv, head_dim: hd, tm: t };
        let qkv = randn(&mut rng, t * dims.qkv_width(), 1.5);
        let u = randn(&mut rng, t * nh * hd, 1.0);
        let rope = tiller_core::arch::Rope { theta: 10000.0, rotary_dim: d, scaling: tiller_core::arch::RopeScaling::None };
        let (cos, sin) = rope.tables(t);
        let rope_arg = (d > 0).then_some((d, cos.as_slice(), sin.as_slice()));
        let rows: Vec<RowMeta> = (0..t as u32).map(|pos| RowMeta { slot: 0, pos }).collect();
        let mut rotated = qkv.clone();
        if d > 0 {
            ops::rope(&mut rotated, &rows, &cos, &sin, d, dims);
        }
        let mut dqkv = vec![0.0f32; qkv.len()];
        backward::attention_backward(&mut dqkv, &u, &rotated, t, dims);
        if d > 0 {
            backward::rope_backward(&mut dqkv, &rows, &cos, &sin, d, dims);
        }
        let e = fd_error(&qkv, &u, |x| attention_forward(x, t, dims, rope_arg), &dqkv, 1e-2, 1);
        assert!(e < TOL, "attention T {t}, {nh} heads ({nkv} kv) of {hd}, rotary {d}: error {e}");
    }
}

/// The tape's input gradient over whole blocks, on every fixture family, against finite
/// differences of its own forward (a sample of inputs), and its forward against the CPU
/// model's steered capture.
#[test]
fn the_tape_differentiates_whole_blocks_of_every_family() {
    for name in MODELS {
        let (mut m, _) = load_fixture(name).cpu_model();
        let spec = *m.weights().spec();
        let c = spec.n_embd;
        let tokens: Vec<u32> = vec![3, 17, 5, 2, 9];
        let (source, target) = (0, spec.n_layer - 1);
        let acts = pollster::block_on(melbo::prepare(&mut m, std::slice::from_ref(&tokens), source, target)).unwrap();
        let mut rng = Rng::new(5, 0);
        let theta = randn(&mut rng, c, 0.3);
        let w = m.weights();
        let (tape, h) = Tape::forward(w, &acts[0].x_source, &theta, source, target).unwrap();
        // the forward is the steered model's own
        let zero = vec![0.0f32; c];
        let (_, h0) = Tape::forward(w, &acts[0].x_source, &zero, source, target).unwrap();
        assert_eq!(h0, acts[0].h0_target, "{name}: the tape's forward is the CPU model's, bit for bit");
        let u = randn(&mut rng, h.len(), 1.0);
        let dx = tape.backward(&u);
        let f = |x: &[f32]| Tape::forward(w, x, &zero, source, target).unwrap().1;
        let x1: Vec<f32> = acts[0].x_source.chunks(c).flat_map(|r| r.iter().zip(&theta).map(|(a, b)| a + b)).collect();
        let e = fd_error(&x1, &u, f, &dx, 1e-2, 7);
        assert!(e < 5e-3, "{name}: tape over blocks {source}..{target}: error {e}");
    }
}

/// MELBO's f and ∂f/∂θ against finite differences along random directions, for p and q
/// other than 2 and the last-K token selection.
#[test]
fn melbo_objective_gradient_matches_finite_differences() {
    for name in MODELS {
        let (mut m, _) = load_fixture(name).cpu_model();
        let spec = *m.weights().spec();
        let c = spec.n_embd;
        let prompts = vec![vec![1, 4, 9, 16, 25, 36], vec![7, 3]];
        let acts = pollster::block_on(melbo::prepare(&mut m, &prompts, 1, spec.n_layer - 1)).unwrap();
        let mut rng = Rng::new(6, 0);
        let theta = randn(&mut rng, c, 1.0);
        for obj in [
            Objective::default(),
            Objective { p: 3.0, q: 1.0, tokens: TargetTokens::Last(2) },
            Objective { p: 1.5, q: 1.5, tokens: TargetTokens::All },
        ] {
            let mut tape = melbo::CpuTape::new(m.weights(), &acts, 1, spec.n_layer - 1);
            let (_, g) = pollster::block_on(melbo::objective_grad(&mut tape, &acts, &obj, &theta)).unwrap();
            let gn = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(gn > 0.0, "{name}: the gradient is not zero");
            for k in 0..3 {
                let dir = randn(&mut rng, c, 1.0);
                let at = |s: f32| {
                    let t: Vec<f32> = theta.iter().zip(&dir).map(|(a, b)| a + s * b).collect();
                    pollster::block_on(melbo::objective_grad(
                        &mut melbo::CpuTape::new(m.weights(), &acts, 1, spec.n_layer - 1),
                        &acts,
                        &obj,
                        &t,
                    ))
                    .unwrap()
                    .0
                };
                let eps = 1e-2;
                let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                let an: f64 = g.iter().zip(&dir).map(|(a, &b)| a * b as f64).sum();
                let dn = dir.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                assert!((fd - an).abs() < 3e-3 * gn * dn, "{name} {obj:?} direction {k}: fd {fd} analytic {an}");
            }
        }
    }
}
