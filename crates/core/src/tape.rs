//! The CPU reference's tape: the family's block program (`arch::program`) run over blocks
//! `source … target − 1` of one prompt with a vector θ added to the residual stream before
//! block `source` (at every position), keeping what each op's backward needs, and the backward
//! pass through the same ops in reverse (`ops::backward`), for the gradient with respect to the
//! activations only (weights are frozen). MELBO ([`crate::melbo`]) differentiates its objective
//! through it.
//!
//! The forward calls the same kernels as [`crate::CpuModel`] in the same order, so `h_target`
//! here is bit-identical to a capture at (target, resid_pre) of a steered CPU step.
//!
//! Dimension key: T the prompt's tokens (positions 0..T), C channels; slot widths in
//! `arch::program::Slot::width`.

use std::collections::HashMap;

use crate::arch::program::{self, LinearParam, NormParam, Op, Slot};
use crate::arch::{Activation, ModelSpec, NormKind};
use crate::error::{Result, TillerError};
use crate::ops::{self, backward, AttnDims, RowMeta};
use crate::weights::CpuWeights;

/// What one op of the forward kept for its backward.
#[derive(Debug, Clone)]
enum Saved {
    Nothing,
    /// A norm's input [T, C].
    NormInput(Vec<f32>),
    /// A GELU projection's output before the GELU [T, F].
    PreGelu(Vec<f32>),
    /// Fused q | k | v after rotary [T, QKV]: the attention's queries, keys and values.
    Qkv(Vec<f32>),
    /// SwiGLU's gate and up [T, F] before their product.
    GateUp(Vec<f32>, Vec<f32>),
}

/// One prompt's forward over blocks `source..target`, with what its backward needs.
pub struct Tape<'w> {
    w: &'w CpuWeights,
    source: usize,
    target: usize,
    t: usize,
    rows: Vec<RowMeta>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Per block source..target, per op of the block.
    saved: Vec<Vec<Saved>>,
}

fn dims(s: &ModelSpec, t: usize) -> AttnDims {
    AttnDims { n_head: s.n_head, n_kv_head: s.n_kv_head, head_dim: s.head_dim, tm: t }
}

fn norm_weights(w: &CpuWeights, l: usize, param: NormParam) -> (&[f32], Option<&[f32]>) {
    let weight = w.layer(l, &format!("{}.weight", param.name()));
    let bias = (w.spec().norm.kind == NormKind::LayerNorm).then(|| w.layer(l, &format!("{}.bias", param.name())));
    (weight, bias)
}

fn linear_weight(w: &CpuWeights, l: usize, param: LinearParam) -> &[f32] {
    w.layer(l, &format!("{}.weight", param.name()))
}

impl<'w> Tape<'w> {
    /// Runs blocks `source..target` from `x_source` [T, C] (the residual stream before block
    /// `source`, as a capture at (source, resid_pre) reads it) plus `theta` [C] at every row;
    /// returns the tape and the residual stream before block `target` [T, C].
    pub fn forward(w: &'w CpuWeights, x_source: &[f32], theta: &[f32], source: usize, target: usize) -> Result<(Self, Vec<f32>)> {
        let spec = *w.spec();
        let c = spec.n_embd;
        if source >= target || target > spec.n_layer {
            return Err(TillerError::input(format!(
                "the tape runs blocks source..target with source < target ≤ {}; got {source}..{target}",
                spec.n_layer
            )));
        }
        if theta.len() != c || x_source.is_empty() || x_source.len() % c != 0 {
            return Err(TillerError::input(format!(
                "the tape needs θ of {c} channels and whole rows of the residual stream; got {} and {}",
                theta.len(),
                x_source.len()
            )));
        }
        let t = x_source.len() / c;
        if t > spec.n_positions {
            return Err(TillerError::input(format!("a prompt of {t} tokens is past the model's context of {}", spec.n_positions)));
        }
        let rows: Vec<RowMeta> = (0..t as u32).map(|pos| RowMeta { slot: 0, pos }).collect();
        let (rope_cos, rope_sin) = spec.rope().map(|r| r.tables(t)).unwrap_or_default();
        let mut tape = Tape { w, source, target, t, rows, rope_cos, rope_sin, saved: Vec::with_capacity(target - source) };
        let d = dims(&spec, t);
        let mut acts: HashMap<Slot, Vec<f32>> =
            Slot::ALL.iter().filter(|s| s.used(&spec)).map(|&s| (s, vec![0.0f32; t * s.width(&spec)])).collect();
        let mut x = x_source.to_vec();
        for row in x.chunks_exact_mut(c) {
            row.iter_mut().zip(theta).for_each(|(a, b)| *a += b);
        }
        acts.insert(Slot::X, x);
        let (mut k_cache, mut v_cache) = (vec![0.0f32; t * spec.kv_width()], vec![0.0f32; t * spec.kv_width()]);
        let block = program::block(&spec);
        for l in source..target {
            let mut saved = Vec::with_capacity(block.len());
            for op in &block {
                saved.push(match *op {
                    Op::Hook(_) => Saved::Nothing,
                    Op::Norm { src, dst, param } => {
                        let inp = take(&mut acts, src);
                        let (weight, bias) = norm_weights(w, l, param);
                        let out = slot(&mut acts, dst);
                        match bias {
                            Some(b) => ops::layernorm(out, &inp, weight, b, c, spec.norm.eps),
                            None => ops::rmsnorm(out, &inp, weight, c, spec.norm.eps),
                        }
                        acts.insert(src, inp.clone());
                        Saved::NormInput(inp)
                    }
                    Op::Linear { src, dst, param, gelu } => {
                        let inp = take(&mut acts, src);
                        let (k, n) = (src.width(&spec), dst.width(&spec));
                        let out = slot(&mut acts, dst);
                        let bias = w.layer(l, &format!("{}.bias", param.name()));
                        ops::matmul(out, &inp, linear_weight(w, l, param), Some(bias), k, n);
                        acts.insert(src, inp);
                        if gelu {
                            let out = slot(&mut acts, dst);
                            let pre = out.clone();
                            match spec.act {
                                Activation::GeluErf => ops::gelu_erf(out),
                                _ => ops::gelu(out),
                            }
                            Saved::PreGelu(pre)
                        } else {
                            Saved::Nothing
                        }
                    }
                    Op::Rope => {
                        let rd = spec.rope().map_or(0, |r| r.rotary_dim);
                        ops::rope(slot(&mut acts, Slot::Qkv), &tape.rows, &tape.rope_cos, &tape.rope_sin, rd, d);
                        Saved::Nothing
                    }
                    Op::KvWrite => {
                        ops::kv_write(&mut k_cache, &mut v_cache, slot(&mut acts, Slot::Qkv), &tape.rows, d);
                        Saved::Nothing
                    }
                    Op::Attention => {
                        let qkv = take(&mut acts, Slot::Qkv);
                        ops::attention(slot(&mut acts, Slot::Z), &qkv, &k_cache, &v_cache, &tape.rows, d);
                        acts.insert(Slot::Qkv, qkv.clone());
                        Saved::Qkv(qkv)
                    }
                    Op::SwiGlu => {
                        let gate = take(&mut acts, Slot::Gate);
                        let up = slot(&mut acts, Slot::Fc).clone();
                        ops::swiglu(slot(&mut acts, Slot::Fc), &gate);
                        acts.insert(Slot::Gate, gate.clone());
                        Saved::GateUp(gate, up)
                    }
                    Op::Add { dst, src } => {
                        let y = take(&mut acts, src);
                        ops::residual_add(slot(&mut acts, dst), &y);
                        acts.insert(src, y);
                        Saved::Nothing
                    }
                });
            }
            tape.saved.push(saved);
        }
        Ok((tape, take(&mut acts, Slot::X)))
    }

    /// Tokens of the prompt (T).
    pub fn len(&self) -> usize {
        self.t
    }

    pub fn is_empty(&self) -> bool {
        self.t == 0
    }

    /// The gradient with respect to the residual stream before block `source` (after θ was
    /// added) [T, C], given `dh` [T, C], the gradient with respect to the stream before block
    /// `target`. θ's gradient is its sum over rows ([`Tape::theta_grad`]).
    pub fn backward(&self, dh: &[f32]) -> Vec<f32> {
        let spec = *self.w.spec();
        let (c, t) = (spec.n_embd, self.t);
        let d = dims(&spec, t);
        let block = program::block(&spec);
        let mut g: HashMap<Slot, Vec<f32>> =
            Slot::ALL.iter().filter(|s| s.used(&spec)).map(|&s| (s, vec![0.0f32; t * s.width(&spec)])).collect();
        g.insert(Slot::X, dh.to_vec());
        for (l, saved) in (self.source..self.target).zip(&self.saved).rev() {
            for (op, kept) in block.iter().zip(saved).rev() {
                match (*op, kept) {
                    (Op::Add { dst, src }, _) => {
                        let gd = take(&mut g, dst);
                        ops::residual_add(slot(&mut g, src), &gd);
                        g.insert(dst, gd);
                    }
                    (Op::Linear { src, dst, param, .. }, kept) => {
                        let mut gd = take(&mut g, dst);
                        if let Saved::PreGelu(pre) = kept {
                            match spec.act {
                                Activation::GeluErf => backward::gelu_erf_backward(&mut gd, pre),
                                _ => backward::gelu_backward(&mut gd, pre),
                            }
                        }
                        let (k, n) = (src.width(&spec), dst.width(&spec));
                        backward::matmul_backward(slot(&mut g, src), &gd, linear_weight(self.w, l, param), k, n);
                        gd.fill(0.0);
                        g.insert(dst, gd);
                    }
                    (Op::SwiGlu, Saved::GateUp(gate, up)) => {
                        let mut gfc = take(&mut g, Slot::Fc);
                        backward::swiglu_backward(&mut gfc, slot(&mut g, Slot::Gate), gate, up);
                        g.insert(Slot::Fc, gfc);
                    }
                    (Op::Attention, Saved::Qkv(qkv)) => {
                        let mut gz = take(&mut g, Slot::Z);
                        backward::attention_backward(slot(&mut g, Slot::Qkv), &gz, qkv, t, d);
                        gz.fill(0.0);
                        g.insert(Slot::Z, gz);
                    }
                    (Op::Rope, _) => {
                        let rd = spec.rope().map_or(0, |r| r.rotary_dim);
                        backward::rope_backward(slot(&mut g, Slot::Qkv), &self.rows, &self.rope_cos, &self.rope_sin, rd, d);
                    }
                    (Op::Norm { src, dst, param }, Saved::NormInput(x)) => {
                        let mut gd = take(&mut g, dst);
                        let (weight, bias) = norm_weights(self.w, l, param);
                        match bias {
                            Some(_) => backward::layernorm_backward(slot(&mut g, src), &gd, x, weight, c, spec.norm.eps),
                            None => backward::rmsnorm_backward(slot(&mut g, src), &gd, x, weight, c, spec.norm.eps),
                        }
                        gd.fill(0.0);
                        g.insert(dst, gd);
                    }
                    // The keys and values the cache holds are the qkv rows' own: the
                    // attention's backward already wrote their gradient into qkv's.
                    (Op::KvWrite | Op::Hook(_), _) => {}
                    (op, _) => unreachable!("the tape saved nothing for {op:?}"),
                }
            }
        }
        take(&mut g, Slot::X)
    }

    /// θ's gradient [C]: `backward(dh)` summed over rows (θ is added at every position), in f64.
    pub fn theta_grad(&self, dh: &[f32]) -> Vec<f64> {
        let c = self.w.spec().n_embd;
        let dx = self.backward(dh);
        let mut out = vec![0.0f64; c];
        for row in dx.chunks_exact(c) {
            out.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
        }
        out
    }
}

fn slot(acts: &mut HashMap<Slot, Vec<f32>>, s: Slot) -> &mut Vec<f32> {
    acts.entry(s).or_default()
}

fn take(acts: &mut HashMap<Slot, Vec<f32>>, s: Slot) -> Vec<f32> {
    acts.remove(&s).unwrap_or_default()
}
