//! GPT-2 on the CPU in f32: the reference every other engine is checked against. It reads like
//! the math: `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`, with a KV cache and the ActAdd hook.
//!
//! Dimension key: R rows in the step, C channels, F MLP width (4C), V vocab, L layers.

use crate::backend::{Backend, Injection, LogitRows, Site, StepOutput, StepRequest};
use crate::config::Gpt2Config;
use crate::error::{Result, TillerError};
use crate::ops::{self, RowMeta};
use crate::weights::Gpt2Weights;

pub struct CpuModel {
    w: Gpt2Weights,
    /// Per layer, [S, TM, C].
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    lens: Vec<usize>,
    max_len: usize,
}

impl CpuModel {
    pub fn new(w: Gpt2Weights) -> Self {
        Self { w, k_cache: Vec::new(), v_cache: Vec::new(), lens: Vec::new(), max_len: 0 }
    }

    pub fn weights(&self) -> &Gpt2Weights {
        &self.w
    }

    fn inject(x: &mut [f32], injections: &[Injection], layer: usize, site: Site, c: usize) {
        for inj in injections.iter().filter(|i| i.layer == layer && i.site == site) {
            ops::add_rows(x, &inj.table, &inj.row_map, c);
        }
    }
}

/// Checks a step against the caches and returns each row's (slot, position).
pub fn plan_rows(req: &StepRequest, lens: &[usize], max_len: usize, cfg: &Gpt2Config) -> Result<Vec<RowMeta>> {
    let mut rows = Vec::with_capacity(req.rows());
    for s in &req.seqs {
        let start = *lens.get(s.slot).ok_or_else(|| {
            TillerError::input(format!("cache slot {} does not exist ({} prepared)", s.slot, lens.len()))
        })?;
        let end = start + s.tokens.len();
        if end > max_len || end > cfg.n_positions {
            return Err(TillerError::input(format!(
                "sequence {} would reach {end} tokens, past the {} this run prepared (the model's context is {})",
                s.slot,
                max_len.min(cfg.n_positions),
                cfg.n_positions
            )));
        }
        if let Some(&t) = s.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(TillerError::input(format!("token id {t} is outside the vocabulary of {}", cfg.vocab_size)));
        }
        rows.extend((start..end).map(|p| RowMeta { slot: s.slot as u32, pos: p as u32 }));
    }
    for inj in &req.injections {
        if inj.layer >= cfg.n_layer {
            return Err(TillerError::input(format!("injection at layer {} but the model has {}", inj.layer, cfg.n_layer)));
        }
        if inj.row_map.len() != rows.len() || inj.table.len() % cfg.n_embd != 0 {
            return Err(TillerError::input("injection table or row map does not match the step".to_string()));
        }
        let k = (inj.table.len() / cfg.n_embd) as u32;
        if inj.row_map.iter().any(|&m| m != u32::MAX && m >= k) {
            return Err(TillerError::input("injection row map points past its table".to_string()));
        }
    }
    Ok(rows)
}

impl Backend for CpuModel {
    fn config(&self) -> &Gpt2Config {
        &self.w.config
    }

    fn describe(&self) -> String {
        "CPU reference (f32)".to_string()
    }

    fn reset(&mut self, slots: usize, max_len: usize) -> Result<()> {
        let cfg = self.w.config;
        let max_len = max_len.min(cfg.n_positions);
        let size = slots * max_len * cfg.n_embd;
        self.k_cache = vec![vec![0.0; size]; cfg.n_layer];
        self.v_cache = vec![vec![0.0; size]; cfg.n_layer];
        self.lens = vec![0; slots];
        self.max_len = max_len;
        Ok(())
    }

    fn slot_len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    async fn step(&mut self, req: &StepRequest) -> Result<StepOutput> {
        let cfg = self.w.config;
        let (c, f, v, nh, tm) = (cfg.n_embd, cfg.n_inner, cfg.vocab_size, cfg.n_head, self.max_len);
        let rows = plan_rows(req, &self.lens, self.max_len, &cfg)?;
        let r = rows.len();
        let tokens: Vec<u32> = req.seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let positions: Vec<u32> = rows.iter().map(|m| m.pos).collect();
        let w = &self.w;
        let mut out = StepOutput::default();

        let mut x = vec![0.0f32; r * c]; // (R, C) residual stream
        ops::embed(&mut x, &tokens, &positions, w.get("wte.weight"), w.get("wpe.weight"), c);
        let mut ln = vec![0.0f32; r * c]; // (R, C)
        let mut qkv = vec![0.0f32; r * 3 * c]; // (R, 3C)
        let mut att = vec![0.0f32; r * c]; // (R, C)
        let mut sub = vec![0.0f32; r * c]; // (R, C) a sublayer's output
        let mut fc = vec![0.0f32; r * f]; // (R, F)
        let capture = |layer: usize, site: Site, act: &[f32], out: &mut StepOutput| {
            if req.capture == Some((layer, site)) {
                out.captured = act.to_vec();
            }
        };
        for l in 0..cfg.n_layer {
            Self::inject(&mut x, &req.injections, l, Site::ResidPre, c);
            capture(l, Site::ResidPre, &x, &mut out);
            if req.logits == LogitRows::None && req.capture == Some((l, Site::ResidPre)) {
                return Ok(out);
            }
            // x = x + attn(ln_1(x))
            ops::layernorm(&mut ln, &x, w.layer(l, "ln_1.weight"), w.layer(l, "ln_1.bias"), c);
            ops::matmul(&mut qkv, &ln, w.layer(l, "attn.c_attn.weight"), Some(w.layer(l, "attn.c_attn.bias")), c, 3 * c);
            ops::kv_write(&mut self.k_cache[l], &mut self.v_cache[l], &qkv, &rows, c, tm);
            ops::attention(&mut att, &qkv, &self.k_cache[l], &self.v_cache[l], &rows, c, nh, tm);
            ops::matmul(&mut sub, &att, w.layer(l, "attn.c_proj.weight"), Some(w.layer(l, "attn.c_proj.bias")), c, c);
            Self::inject(&mut sub, &req.injections, l, Site::AttnOut, c);
            capture(l, Site::AttnOut, &sub, &mut out);
            ops::residual_add(&mut x, &sub);
            // x = x + mlp(ln_2(x))
            ops::layernorm(&mut ln, &x, w.layer(l, "ln_2.weight"), w.layer(l, "ln_2.bias"), c);
            ops::matmul(&mut fc, &ln, w.layer(l, "mlp.c_fc.weight"), Some(w.layer(l, "mlp.c_fc.bias")), c, f);
            ops::gelu(&mut fc);
            ops::matmul(&mut sub, &fc, w.layer(l, "mlp.c_proj.weight"), Some(w.layer(l, "mlp.c_proj.bias")), f, c);
            Self::inject(&mut sub, &req.injections, l, Site::MlpOut, c);
            capture(l, Site::MlpOut, &sub, &mut out);
            ops::residual_add(&mut x, &sub);
        }
        for s in &req.seqs {
            self.lens[s.slot] += s.tokens.len();
        }
        let picked: Vec<f32> = match req.logits {
            LogitRows::None => return Ok(out),
            LogitRows::All => x,
            LogitRows::Last => {
                let mut end = 0;
                let mut last = Vec::with_capacity(req.seqs.len() * c);
                for s in &req.seqs {
                    end += s.tokens.len();
                    if s.tokens.is_empty() {
                        return Err(TillerError::input("a sequence in the step has no tokens".to_string()));
                    }
                    last.extend_from_slice(&x[(end - 1) * c..end * c]);
                }
                last
            }
        };
        out.logits = self.unembed_rows(&picked, true, v);
        Ok(out)
    }

    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> Result<Vec<f32>> {
        let cfg = self.w.config;
        if rows.len() % cfg.n_embd != 0 {
            return Err(TillerError::input("vectors to unembed must be a multiple of n_embd long".to_string()));
        }
        Ok(self.unembed_rows(rows, apply_ln_f, cfg.vocab_size))
    }
}

impl CpuModel {
    fn unembed_rows(&self, rows: &[f32], apply_ln_f: bool, v: usize) -> Vec<f32> {
        let c = self.w.config.n_embd;
        let k = rows.len() / c;
        let normed;
        let h = if apply_ln_f {
            let mut buf = vec![0.0f32; rows.len()];
            ops::layernorm(&mut buf, rows, self.w.get("ln_f.weight"), self.w.get("ln_f.bias"), c);
            normed = buf;
            &normed
        } else {
            rows
        };
        let mut logits = vec![0.0f32; k * v]; // (K, V)
        ops::logits(&mut logits, h, self.w.get("wte.weight"), c, v);
        logits
    }
}
