//! The model as a description. A [`ModelSpec`] says everything the engines need to know about a
//! checkpoint's architecture: its dimensions and, per part, which variant it is (LayerNorm or
//! RMSNorm, learned or rotary positions, fused or separate or per-head-interleaved qkv, GELU or
//! SwiGLU, sequential or parallel residual, tied or untied head). It is read from
//! `config.json` by the family's own field names ([`config`]); the family's Hugging Face tensor
//! names map onto Tiller's roles and layouts in [`weights`]; and its block is one list of ops
//! ([`program`]) that the CPU reference runs eagerly and the GPU engine records as pipelines.
//!
//! Adding a family is one entry in each of the three files, plus any missing kernel with its CPU
//! twin.
//!
//! Dimension key: C channels (`n_embd`), NH query heads, NKV key/value heads, HD head size,
//! F MLP width (`n_inner`), V vocab, P context (`n_positions`), L layers.

pub mod config;
pub mod program;
pub mod weights;

use serde::{Deserialize, Serialize};

/// The architectures Tiller runs, by Hugging Face `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `gpt2`: GPT-2 and distilgpt2.
    Gpt2,
    /// `llama`: Llama 2/3, SmolLM, TinyLlama.
    Llama,
    /// `qwen2`: Qwen1.5, Qwen2, Qwen2.5.
    Qwen2,
    /// `gpt_neox`: Pythia, GPT-NeoX.
    GptNeox,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Gpt2, Family::Llama, Family::Qwen2, Family::GptNeox];

    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::GptNeox => "gpt_neox",
        }
    }

    pub fn from_model_type(t: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == t)
    }

    /// "gpt2, llama, qwen2 and gpt_neox", for messages.
    pub fn supported_list() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|f| f.model_type()).collect();
        format!("{} and {}", names[..names.len() - 1].join(", "), names[names.len() - 1])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// (x − mean) / sqrt(var + eps) · weight + bias
    LayerNorm,
    /// x / sqrt(mean(x²) + eps) · weight
    RmsNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub kind: NormKind,
    pub eps: f32,
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (`rope_type: "linear"`).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling (`rope_type: "llama3"`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Rotary position embedding, Hugging Face's `rotate_half` form: channel i of the rotated part
/// pairs with channel i + D/2, at frequency theta^(−2i/D).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    pub theta: f64,
    /// D: the leading channels of each head that rotate (the head size, or GPT-NeoX's
    /// `rotary_pct` of it); always even.
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

impl Rope {
    /// The D/2 inverse frequencies, after scaling (Hugging Face's `inv_freq`).
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.rotary_dim as f64;
        let base: Vec<f64> = (0..self.rotary_dim / 2).map(|i| 1.0 / self.theta.powf((2 * i) as f64 / d)).collect();
        match self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: old } => {
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// cos and sin tables `[positions, D/2]` in f32 (angles computed in f64).
    pub fn tables(&self, positions: usize) -> (Vec<f32>, Vec<f32>) {
        let inv = self.inv_freq();
        let mut cos = Vec::with_capacity(positions * inv.len());
        let mut sin = Vec::with_capacity(positions * inv.len());
        for p in 0..positions {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        (cos, sin)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum PosEncoding {
    /// A learned `[P, C]` table added to the token embedding (GPT-2's `wpe`).
    Learned,
    Rotary(Rope),
}

/// How the checkpoint stores the query, key and value projections (Tiller always runs them as
/// one fused `[C, (NH + 2·NKV)·HD]` matrix, q | k | v, built at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QkvLayout {
    /// One Conv1D `[C, 3C]`, q | k | v (GPT-2's `c_attn`).
    Fused,
    /// `q_proj`, `k_proj`, `v_proj` (Llama, Qwen2).
    Separate,
    /// One Linear `[NH·3·HD, C]` whose outputs are grouped per head as q, k, v (GPT-NeoX).
    InterleavedPerHead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GPT-2's `gelu_new`: 0.5 x (1 + tanh(sqrt(2/π)(x + 0.044715 x³))).
    GeluTanh,
    /// PyTorch's exact `gelu`: 0.5 x (1 + erf(x / √2)).
    GeluErf,
    /// down(silu(gate(x)) · up(x)).
    SwiGlu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Residual {
    /// x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))
    Sequential,
    /// x = x + attn(ln_1(x)) + mlp(ln_2(x)) (GPT-NeoX's `use_parallel_residual`)
    Parallel,
}

/// Everything about a checkpoint's architecture that the engines use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub family: Family,
    /// Blocks (L).
    pub n_layer: usize,
    /// Residual stream width (C).
    pub n_embd: usize,
    /// Query heads (NH).
    pub n_head: usize,
    /// Key/value heads (NKV); NH is a multiple of it (grouped-query attention when smaller).
    pub n_kv_head: usize,
    /// Head size (HD); NH·HD need not equal C.
    pub head_dim: usize,
    /// MLP width (F).
    pub n_inner: usize,
    /// Context length (P).
    pub n_positions: usize,
    /// Rows of the embedding and the head (V); may exceed the tokenizer's vocabulary (padding).
    pub vocab_size: usize,
    pub norm: Norm,
    pub pos: PosEncoding,
    pub qkv: QkvLayout,
    /// Biases on q, k, v.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    pub act: Activation,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    pub residual: Residual,
    /// The head is the transposed embedding (else a separate `[V, C]` matrix).
    pub tied_head: bool,
    /// `bos_token_id` of config.json.
    pub bos_token_id: Option<u32>,
    /// The first `eos_token_id` of config.json.
    pub eos_token_id: Option<u32>,
}

/// Largest head size the engines run.
pub const MAX_HEAD_DIM: usize = 128;

impl ModelSpec {
    /// The released GPT-2 checkpoints, for presets, benchmarks and tests.
    pub fn gpt2_preset(name: &str) -> Option<Self> {
        let (n_layer, n_embd, n_head) = match name {
            "gpt2" => (12, 768, 12),
            "distilgpt2" => (6, 768, 12),
            "gpt2-medium" => (24, 1024, 16),
            "gpt2-large" => (36, 1280, 20),
            "gpt2-xl" => (48, 1600, 25),
            _ => return None,
        };
        Some(Self::gpt2(n_layer, n_embd, n_head, 1024, 50257))
    }

    /// A GPT-2 of the given shapes (MLP width 4C).
    pub fn gpt2(n_layer: usize, n_embd: usize, n_head: usize, n_positions: usize, vocab_size: usize) -> Self {
        Self {
            family: Family::Gpt2,
            n_layer,
            n_embd,
            n_head,
            n_kv_head: n_head,
            head_dim: n_embd / n_head.max(1),
            n_inner: 4 * n_embd,
            n_positions,
            vocab_size,
            norm: Norm { kind: NormKind::LayerNorm, eps: 1e-5 },
            pos: PosEncoding::Learned,
            qkv: QkvLayout::Fused,
            qkv_bias: true,
            o_bias: true,
            act: Activation::GeluTanh,
            mlp_bias: true,
            residual: Residual::Sequential,
            tied_head: true,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
        }
    }

    /// Llama-3.2-1B's shapes (for benchmarks): 16 layers, C 2048, 32 heads of 64, 8 kv heads,
    /// F 8192, V 128256, llama3 rope scaling, tied head.
    pub fn llama32_1b() -> Self {
        Self {
            family: Family::Llama,
            n_layer: 16,
            n_embd: 2048,
            n_head: 32,
            n_kv_head: 8,
            head_dim: 64,
            n_inner: 8192,
            n_positions: 131072,
            vocab_size: 128256,
            norm: Norm { kind: NormKind::RmsNorm, eps: 1e-5 },
            pos: PosEncoding::Rotary(Rope {
                theta: 500000.0,
                rotary_dim: 64,
                scaling: RopeScaling::Llama3 {
                    factor: 32.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 8192.0,
                },
            }),
            qkv: QkvLayout::Separate,
            qkv_bias: false,
            o_bias: false,
            act: Activation::SwiGlu,
            mlp_bias: false,
            residual: Residual::Sequential,
            tied_head: true,
            bos_token_id: Some(128000),
            eos_token_id: Some(128009),
        }
    }

    /// Width of the query part of the fused qkv row (NH·HD).
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key part, and of the value part (NKV·HD): one KV cache row.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Width of a fused qkv row.
    pub fn qkv_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }

    pub fn rope(&self) -> Option<&Rope> {
        match &self.pos {
            PosEncoding::Rotary(r) => Some(r),
            PosEncoding::Learned => None,
        }
    }

    /// Weights in the checkpoint (elements), for size estimates.
    pub fn parameter_count(&self) -> u64 {
        let (c, f, v) = (self.n_embd as u64, self.n_inner as u64, self.vocab_size as u64);
        let norm = if self.norm.kind == NormKind::LayerNorm { 2 * c } else { c };
        let attn = c * self.qkv_width() as u64 + self.q_width() as u64 * c;
        let mlp = if self.act == Activation::SwiGlu { 3 * c * f } else { 2 * c * f };
        let biases = if self.qkv_bias { self.qkv_width() as u64 } else { 0 }
            + if self.o_bias { c } else { 0 }
            + if self.mlp_bias { f + c + if self.act == Activation::SwiGlu { f } else { 0 } } else { 0 };
        let block = 2 * norm + attn + mlp + biases;
        let pos = if self.pos == PosEncoding::Learned { self.n_positions as u64 * c } else { 0 };
        let head = if self.tied_head { 0 } else { v * c };
        v * c + pos + self.n_layer as u64 * block + norm + head
    }

    /// A one-line summary for logs and the page ("llama: 16 layers, C 2048, 32 heads (8 kv) of 64").
    pub fn summary(&self) -> String {
        let kv = if self.n_kv_head != self.n_head { format!(" ({} kv)", self.n_kv_head) } else { String::new() };
        format!(
            "{}: {} layers, C {}, {} heads{kv} of {}, MLP {}, vocab {}",
            self.family.model_type(),
            self.n_layer,
            self.n_embd,
            self.n_head,
            self.head_dim,
            self.n_inner,
            self.vocab_size
        )
    }
}
