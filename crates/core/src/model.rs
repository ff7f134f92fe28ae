//! The CPU reference in f32: the oracle every other engine is checked against. It runs the
//! family's block program (`arch::program`) eagerly, op by op, over per-slot KV caches; for
//! GPT-2 that reads like the maths, `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`, with the
//! hooks where steering adds and captures read.
//!
//! Dimension key: R rows in the step, C channels, V vocab, L layers; slot widths in
//! `arch::program::Slot::width`.

use std::collections::HashMap;

use crate::arch::program::{self, Op, Slot};
use crate::arch::{Activation, ModelSpec, NormKind};
use crate::backend::{check_fork, Backend, Site, StepOutput, StepPlan, StepRequest};
use crate::error::{Result, TillerError};
use crate::ops::{self, AttnDims};
use crate::weights::CpuWeights;

pub struct CpuModel {
    w: CpuWeights,
    /// The block's ops.
    block: Vec<Op>,
    /// Rotary tables [P', D/2] for the positions prepared by `reset` (empty without rotary).
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    /// Per layer, [S, TM, KV].
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    lens: Vec<usize>,
    max_len: usize,
}

impl CpuModel {
    pub fn new(w: CpuWeights) -> Self {
        let block = program::block(w.spec());
        Self {
            w,
            block,
            rope_cos: Vec::new(),
            rope_sin: Vec::new(),
            k_cache: Vec::new(),
            v_cache: Vec::new(),
            lens: Vec::new(),
            max_len: 0,
        }
    }

    pub fn weights(&self) -> &CpuWeights {
        &self.w
    }

    fn dims(&self) -> AttnDims {
        let s = self.w.spec();
        AttnDims { n_head: s.n_head, n_kv_head: s.n_kv_head, head_dim: s.head_dim, tm: self.max_len }
    }

    fn norm(&self, out: &mut [f32], inp: &[f32], prefix: &str) {
        let s = self.w.spec();
        let weight = self.w.get(&format!("{prefix}.weight"));
        match s.norm.kind {
            NormKind::LayerNorm => ops::layernorm(out, inp, weight, self.w.get(&format!("{prefix}.bias")), s.n_embd, s.norm.eps),
            NormKind::RmsNorm => ops::rmsnorm(out, inp, weight, s.n_embd, s.norm.eps),
        }
    }
}

/// Applies the step's interventions at (layer, site) to its slot `[R, stride]`, in order.
fn intervene(x: &mut [f32], req: &StepRequest, plan: &StepPlan, layer: usize, site: Site, stride: usize) {
    for (inj, &(col0, width)) in req.injections.iter().zip(&plan.injection_cols) {
        if inj.layer == layer && inj.site == site {
            ops::intervene(x, stride, col0, width, &inj.table, &inj.row_map, inj.mode);
        }
    }
}

impl Backend for CpuModel {
    fn config(&self) -> &ModelSpec {
        self.w.spec()
    }

    fn describe(&self) -> String {
        "CPU reference (f32)".to_string()
    }

    fn reset(&mut self, slots: usize, max_len: usize) -> Result<()> {
        let spec = *self.w.spec();
        let max_len = max_len.min(spec.n_positions);
        let size = slots
            .checked_mul(max_len)
            .and_then(|n| n.checked_mul(spec.kv_width()))
            .ok_or_else(|| TillerError::input("the KV cache size overflows"))?;
        self.k_cache = vec![vec![0.0; size]; spec.n_layer];
        self.v_cache = vec![vec![0.0; size]; spec.n_layer];
        self.lens = vec![0; slots];
        self.max_len = max_len;
        if let Some(rope) = spec.rope() {
            (self.rope_cos, self.rope_sin) = rope.tables(max_len);
        }
        Ok(())
    }

    fn slot_len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    async fn step(&mut self, req: &StepRequest) -> Result<StepOutput> {
        let spec = *self.w.spec();
        let plan = StepPlan::new(req, &self.lens, self.max_len, &spec)?;
        let (c, r) = (spec.n_embd, plan.rows.len());
        let tokens: Vec<u32> = req.seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let positions: Vec<u32> = plan.rows.iter().map(|m| m.pos).collect();
        let dims = self.dims();
        let mut out = StepOutput { captured: vec![Vec::new(); plan.captures.len()], ..Default::default() };

        // [R, width] per slot the program uses
        let mut acts: HashMap<Slot, Vec<f32>> =
            Slot::ALL.iter().filter(|s| s.used(&spec)).map(|&s| (s, vec![0.0f32; r * s.width(&spec)])).collect();
        let wpe = (spec.pos == crate::arch::PosEncoding::Learned).then(|| self.w.get("wpe.weight"));
        ops::embed(slot_mut(&mut acts, Slot::X), &tokens, &positions, self.w.get("wte.weight"), wpe, c);
        let block = self.block.clone();
        for l in 0..spec.n_layer {
            for op in &block {
                match *op {
                    Op::Hook(site) => {
                        let stride = site.width(&spec);
                        let x = slot_mut(&mut acts, program::site_slot(site));
                        intervene(x, req, &plan, l, site, stride);
                        for (i, cap) in plan.captures.iter().enumerate() {
                            if cap.layer == l && cap.site == site {
                                out.captured[i] = plan.gather(i, x, stride, req.captures[i].project.as_deref());
                            }
                        }
                        if plan.stop_after == Some((l, site)) {
                            return Ok(out);
                        }
                    }
                    Op::Norm { src, dst, param } => {
                        let inp = take(&mut acts, src);
                        let prefix = format!("h.{l}.{}", param.name());
                        self.norm(slot_mut(&mut acts, dst), &inp, &prefix);
                        acts.insert(src, inp);
                    }
                    Op::Linear { src, dst, param, gelu } => {
                        let inp = take(&mut acts, src);
                        let name = param.name();
                        let (k, n) = (src.width(&spec), dst.width(&spec));
                        let o = slot_mut(&mut acts, dst);
                        ops::matmul(
                            o,
                            &inp,
                            self.w.layer(l, &format!("{name}.weight")),
                            Some(self.w.layer(l, &format!("{name}.bias"))),
                            k,
                            n,
                        );
                        if gelu {
                            match spec.act {
                                Activation::GeluErf => ops::gelu_erf(o),
                                _ => ops::gelu(o),
                            }
                        }
                        acts.insert(src, inp);
                    }
                    Op::Rope => {
                        let d = spec.rope().map_or(0, |r| r.rotary_dim);
                        ops::rope(slot_mut(&mut acts, Slot::Qkv), &plan.rows, &self.rope_cos, &self.rope_sin, d, dims);
                    }
                    Op::KvWrite => {
                        let qkv = slot_mut(&mut acts, Slot::Qkv);
                        ops::kv_write(&mut self.k_cache[l], &mut self.v_cache[l], qkv, &plan.rows, dims);
                    }
                    Op::Attention => {
                        let qkv = take(&mut acts, Slot::Qkv);
                        ops::attention(slot_mut(&mut acts, Slot::Z), &qkv, &self.k_cache[l], &self.v_cache[l], &plan.rows, dims);
                        acts.insert(Slot::Qkv, qkv);
                    }
                    Op::SwiGlu => {
                        let gate = take(&mut acts, Slot::Gate);
                        ops::swiglu(slot_mut(&mut acts, Slot::Fc), &gate);
                        acts.insert(Slot::Gate, gate);
                    }
                    Op::Add { dst, src } => {
                        let y = take(&mut acts, src);
                        ops::residual_add(slot_mut(&mut acts, dst), &y);
                        acts.insert(src, y);
                    }
                }
            }
        }
        for s in &req.seqs {
            self.lens[s.slot] += s.tokens.len();
        }
        if plan.logit_rows.is_empty() {
            return Ok(out);
        }
        let x = take(&mut acts, Slot::X);
        let picked: Vec<f32> = plan.logit_rows.iter().flat_map(|&i| x[i as usize * c..(i as usize + 1) * c].iter().copied()).collect();
        out.logits = self.unembed_rows(&picked, true);
        Ok(out)
    }

    fn fork_slot(&mut self, src: usize, dst: usize) -> Result<()> {
        check_fork(&self.lens, src, dst)?;
        if src != dst {
            let n = self.max_len * self.w.spec().kv_width();
            for cache in self.k_cache.iter_mut().chain(self.v_cache.iter_mut()) {
                cache.copy_within(src * n..(src + 1) * n, dst * n);
            }
            self.lens[dst] = self.lens[src];
        }
        Ok(())
    }

    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> Result<Vec<f32>> {
        if rows.len() % self.w.spec().n_embd != 0 {
            return Err(TillerError::input("vectors to unembed must be a multiple of n_embd long".to_string()));
        }
        Ok(self.unembed_rows(rows, apply_ln_f))
    }
}

fn slot_mut(acts: &mut HashMap<Slot, Vec<f32>>, s: Slot) -> &mut Vec<f32> {
    acts.entry(s).or_default()
}

fn take(acts: &mut HashMap<Slot, Vec<f32>>, s: Slot) -> Vec<f32> {
    acts.remove(&s).unwrap_or_default()
}

impl CpuModel {
    fn unembed_rows(&self, rows: &[f32], apply_ln_f: bool) -> Vec<f32> {
        let spec = self.w.spec();
        let (c, v) = (spec.n_embd, spec.vocab_size);
        let k = rows.len() / c;
        let normed;
        let h = if apply_ln_f {
            let mut buf = vec![0.0f32; rows.len()];
            self.norm(&mut buf, rows, "ln_f");
            normed = buf;
            &normed
        } else {
            rows
        };
        let head = if spec.tied_head { self.w.get("wte.weight") } else { self.w.get("lm_head.weight") };
        let mut logits = vec![0.0f32; k * v]; // (K, V)
        ops::logits(&mut logits, h, head, c, v);
        logits
    }
}
