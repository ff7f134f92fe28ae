//! GPT-2 hyper-parameters: from `config.json` when present (it is the authority), else
//! inferred from the tensor shapes.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TillerError};

/// Shapes of a GPT-2. Field names follow Hugging Face's `GPT2Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Number of transformer blocks (L).
    pub n_layer: usize,
    /// Channels of the residual stream (C).
    pub n_embd: usize,
    /// Attention heads (NH); head size is C / NH.
    pub n_head: usize,
    /// Context length (maximum T).
    pub n_positions: usize,
    /// Vocabulary size (V).
    pub vocab_size: usize,
    /// Hidden size of the MLP (4C in every released GPT-2).
    pub n_inner: usize,
}

/// The subset of `config.json` Tiller reads; unknown fields are ignored.
#[derive(Deserialize)]
struct HfConfig {
    n_layer: Option<usize>,
    n_embd: Option<usize>,
    n_head: Option<usize>,
    n_positions: Option<usize>,
    n_ctx: Option<usize>,
    vocab_size: Option<usize>,
    n_inner: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    model_type: Option<String>,
}

pub const LAYER_NORM_EPS: f32 = 1e-5;
pub const EOT_TOKEN: u32 = 50256;
pub const SPACE_TOKEN: u32 = 220;

impl Gpt2Config {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The released checkpoints, for presets, benchmarks and tests.
    pub fn preset(name: &str) -> Option<Self> {
        let (n_layer, n_embd, n_head) = match name {
            "gpt2" => (12, 768, 12),
            "distilgpt2" => (6, 768, 12),
            "gpt2-medium" => (24, 1024, 16),
            "gpt2-large" => (36, 1280, 20),
            "gpt2-xl" => (48, 1600, 25),
            _ => return None,
        };
        Some(Self { n_layer, n_embd, n_head, n_positions: 1024, vocab_size: 50257, n_inner: 4 * n_embd })
    }

    /// Parses `config.json`. Fields it lacks are taken from `inferred` (the tensor shapes).
    pub fn from_json(bytes: &[u8], inferred: Option<&Gpt2Config>) -> Result<Self> {
        let hf: HfConfig = serde_json::from_slice(bytes).map_err(|e| TillerError::Config(e.to_string()))?;
        if let Some(t) = &hf.model_type {
            if t != "gpt2" {
                return Err(TillerError::Config(format!(
                    "model_type is `{t}`; Tiller runs GPT-2-architecture models (model_type `gpt2`)"
                )));
            }
        }
        if let Some(act) = &hf.activation_function {
            if act != "gelu_new" && act != "gelu_pytorch_tanh" {
                return Err(TillerError::Config(format!(
                    "activation_function is `{act}`; Tiller implements GPT-2's tanh GELU (`gelu_new`)"
                )));
            }
        }
        if let Some(eps) = hf.layer_norm_epsilon {
            if (eps - 1e-5).abs() > 1e-9 {
                return Err(TillerError::Config(format!("layer_norm_epsilon is {eps}; Tiller expects GPT-2's 1e-5")));
            }
        }
        let need = |v: Option<usize>, fallback: Option<usize>, name: &str| {
            v.or(fallback).ok_or_else(|| TillerError::Config(format!("`{name}` is missing")))
        };
        let n_embd = need(hf.n_embd, inferred.map(|c| c.n_embd), "n_embd")?;
        let cfg = Self {
            n_layer: need(hf.n_layer, inferred.map(|c| c.n_layer), "n_layer")?,
            n_embd,
            n_head: need(hf.n_head, inferred.map(|c| c.n_head), "n_head")?,
            n_positions: need(hf.n_positions.or(hf.n_ctx), inferred.map(|c| c.n_positions), "n_positions")?,
            vocab_size: need(hf.vocab_size, inferred.map(|c| c.vocab_size), "vocab_size")?,
            n_inner: hf.n_inner.unwrap_or(4 * n_embd),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TillerError::Config(m));
        if self.n_layer == 0 || self.n_embd == 0 || self.n_head == 0 || self.vocab_size == 0 || self.n_positions == 0 {
            return bad(format!("every dimension must be positive, got {self:?}"));
        }
        if self.n_embd % self.n_head != 0 {
            return bad(format!("n_embd {} is not a multiple of n_head {}", self.n_embd, self.n_head));
        }
        if self.n_embd % 2 != 0 || self.n_inner % 2 != 0 {
            return bad(format!("n_embd {} and n_inner {} must be even", self.n_embd, self.n_inner));
        }
        if self.n_layer > 1000 || self.n_embd > 65536 || self.vocab_size > 1_000_000 || self.n_positions > 1 << 20 {
            return bad(format!("dimensions are implausibly large: {self:?}"));
        }
        Ok(())
    }
}
