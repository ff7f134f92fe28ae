//! `config.json` → [`ModelSpec`], with each family's Hugging Face field names. Rotary settings
//! come in two forms and both are read: `rope_theta` + `rope_scaling` (the Hub's checkpoints,
//! e.g. Llama-3.2-1B) and `rope_parameters` (what `transformers` 5 writes). Without config.json
//! only a GPT-2 can be loaded: its shapes are inferred from the tensors.

use serde_json::Value;

use super::{Activation, Family, ModelSpec, Norm, NormKind, PosEncoding, QkvLayout, Residual, Rope, RopeScaling, MAX_HEAD_DIM};
use crate::error::{Result, TillerError};

fn bad(m: impl Into<String>) -> TillerError {
    TillerError::Config(m.into())
}

/// A view of config.json with typed, error-reporting getters.
struct Fields<'a>(&'a serde_json::Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn usize(&self, name: &str) -> Result<Option<usize>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| Some(n as usize))
                .ok_or_else(|| bad(format!("`{name}` is {v}, not a non-negative integer"))),
        }
    }

    fn need(&self, name: &str) -> Result<usize> {
        self.usize(name)?.ok_or_else(|| bad(format!("`{name}` is missing")))
    }

    fn f64(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| bad(format!("`{name}` is {v}, not a number"))),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| bad(format!("`{name}` is {v}, not true or false"))),
        }
    }

    fn str(&self, name: &str) -> Result<Option<&str>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| bad(format!("`{name}` is {v}, not a string"))),
        }
    }

    /// A token id that may be given as a list (Llama 3's `eos_token_id`): the first.
    fn token(&self, name: &str) -> Option<u32> {
        let v = self.get(name)?;
        let first = v.as_array().and_then(|a| a.first()).unwrap_or(v);
        first.as_u64().filter(|&n| n <= u32::MAX as u64).map(|n| n as u32)
    }
}

/// Parses `config.json`. `inferred` (GPT-2 shapes read off the tensors) fills fields a GPT-2
/// config lacks.
pub fn from_json(bytes: &[u8], inferred: Option<&ModelSpec>) -> Result<ModelSpec> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("it is not valid JSON ({e})")))?;
    let map = value.as_object().ok_or_else(|| bad("it is not a JSON object"))?;
    let f = Fields(map);
    let family = match f.str("model_type")? {
        None => Family::Gpt2,
        Some(t) => Family::from_model_type(t)
            .ok_or_else(|| bad(format!("model_type is `{t}`, which Tiller does not run; it runs {}", Family::supported_list())))?,
    };
    let spec = match family {
        Family::Gpt2 => gpt2(&f, inferred)?,
        Family::Llama | Family::Qwen2 => llama_like(&f, family)?,
        Family::GptNeox => gpt_neox(&f)?,
    };
    validate(&spec)?;
    Ok(spec)
}

fn gpt2(f: &Fields, inferred: Option<&ModelSpec>) -> Result<ModelSpec> {
    if let Some(act) = f.str("activation_function")? {
        if act != "gelu_new" && act != "gelu_pytorch_tanh" {
            return Err(bad(format!("activation_function is `{act}`; Tiller implements GPT-2's tanh GELU (`gelu_new`)")));
        }
    }
    let need = |name: &str, fallback: Option<usize>| -> Result<usize> {
        f.usize(name)?.or(fallback).ok_or_else(|| bad(format!("`{name}` is missing")))
    };
    let n_embd = need("n_embd", inferred.map(|c| c.n_embd))?;
    let n_head = need("n_head", inferred.map(|c| c.n_head))?;
    let n_positions = match f.usize("n_positions")? {
        Some(p) => p,
        None => need("n_ctx", inferred.map(|c| c.n_positions))?,
    };
    let mut spec = ModelSpec::gpt2(
        need("n_layer", inferred.map(|c| c.n_layer))?,
        n_embd,
        n_head,
        n_positions,
        need("vocab_size", inferred.map(|c| c.vocab_size))?,
    );
    spec.n_inner = f.usize("n_inner")?.unwrap_or(4 * n_embd);
    spec.head_dim = n_embd.checked_div(n_head).unwrap_or(0);
    if let Some(eps) = f.f64("layer_norm_epsilon")? {
        spec.norm.eps = eps as f32;
    }
    spec.bos_token_id = f.token("bos_token_id").or(spec.bos_token_id);
    spec.eos_token_id = f.token("eos_token_id").or(spec.eos_token_id);
    if n_head > 0 && n_embd % n_head != 0 {
        return Err(bad(format!("n_embd {n_embd} is not a multiple of n_head {n_head}")));
    }
    Ok(spec)
}

/// Llama and Qwen2 share their config fields; Qwen2 always has q/k/v biases.
fn llama_like(f: &Fields, family: Family) -> Result<ModelSpec> {
    let n_embd = f.need("hidden_size")?;
    let n_head = f.need("num_attention_heads")?;
    let n_kv_head = f.usize("num_key_value_heads")?.unwrap_or(n_head);
    let head_dim = match f.usize("head_dim")? {
        Some(d) => d,
        None if n_head > 0 => n_embd / n_head,
        None => 0,
    };
    let act = f.str("hidden_act")?.unwrap_or("silu");
    if act != "silu" {
        return Err(bad(format!("hidden_act is `{act}`; Tiller runs {} models with `silu` (SwiGLU)", family.model_type())));
    }
    if family == Family::Qwen2 && f.bool("use_sliding_window")? == Some(true) {
        return Err(bad("use_sliding_window is true; Tiller runs Qwen2 models with full attention only"));
    }
    let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
    let rope = rope(f, head_dim, 1.0)?;
    Ok(ModelSpec {
        family,
        n_layer: f.need("num_hidden_layers")?,
        n_embd,
        n_head,
        n_kv_head,
        head_dim,
        n_inner: f.need("intermediate_size")?,
        n_positions: f.need("max_position_embeddings")?,
        vocab_size: f.need("vocab_size")?,
        norm: Norm { kind: NormKind::RmsNorm, eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6) as f32 },
        pos: PosEncoding::Rotary(rope),
        qkv: QkvLayout::Separate,
        qkv_bias: family == Family::Qwen2 || attention_bias,
        o_bias: family != Family::Qwen2 && attention_bias,
        act: Activation::SwiGlu,
        mlp_bias: f.bool("mlp_bias")?.unwrap_or(false),
        residual: Residual::Sequential,
        tied_head: f.bool("tie_word_embeddings")?.unwrap_or(false),
        bos_token_id: f.token("bos_token_id"),
        eos_token_id: f.token("eos_token_id"),
    })
}

fn gpt_neox(f: &Fields) -> Result<ModelSpec> {
    let n_embd = f.need("hidden_size")?;
    let n_head = f.need("num_attention_heads")?;
    let head_dim = n_embd.checked_div(n_head).unwrap_or(0);
    if n_head > 0 && n_embd % n_head != 0 {
        return Err(bad(format!("hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")));
    }
    let act = match f.str("hidden_act")?.unwrap_or("gelu") {
        "gelu" => Activation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        other => return Err(bad(format!("hidden_act is `{other}`; Tiller runs GPT-NeoX models with `gelu` or `gelu_new`"))),
    };
    let rotary_pct = f.f64("rotary_pct")?.unwrap_or(0.25);
    let rope = rope(f, head_dim, rotary_pct)?;
    let bias = f.bool("attention_bias")?.unwrap_or(true);
    Ok(ModelSpec {
        family: Family::GptNeox,
        n_layer: f.need("num_hidden_layers")?,
        n_embd,
        n_head,
        n_kv_head: n_head,
        head_dim,
        n_inner: f.need("intermediate_size")?,
        n_positions: f.need("max_position_embeddings")?,
        vocab_size: f.need("vocab_size")?,
        norm: Norm { kind: NormKind::LayerNorm, eps: f.f64("layer_norm_eps")?.unwrap_or(1e-5) as f32 },
        pos: PosEncoding::Rotary(rope),
        qkv: QkvLayout::InterleavedPerHead,
        qkv_bias: bias,
        o_bias: bias,
        act,
        mlp_bias: true,
        residual: if f.bool("use_parallel_residual")?.unwrap_or(true) { Residual::Parallel } else { Residual::Sequential },
        tied_head: f.bool("tie_word_embeddings")?.unwrap_or(false),
        bos_token_id: f.token("bos_token_id"),
        eos_token_id: f.token("eos_token_id"),
    })
}

/// Rotary settings from either form. `default_fraction` is the family's default share of each
/// head that rotates (GPT-NeoX's `rotary_pct`, already read by the caller; 1 elsewhere).
fn rope(f: &Fields, head_dim: usize, default_fraction: f64) -> Result<Rope> {
    // transformers 5: {"rope_parameters": {"rope_type": ..., "rope_theta": ..., "factor": ..., "partial_rotary_factor": ...}}
    // Hub files: "rope_theta" (or GPT-NeoX's "rotary_emb_base") + "rope_scaling": {"rope_type" | "type": ..., ...}
    let params = f.get("rope_parameters").and_then(Value::as_object);
    let scaling = params.or_else(|| f.get("rope_scaling").and_then(Value::as_object));
    if let (None, Some(v)) = (scaling, f.get("rope_scaling")) {
        return Err(bad(format!("rope_scaling is {v}, not an object")));
    }
    let num = |m: &serde_json::Map<String, Value>, k: &str| -> Result<Option<f64>> {
        match m.get(k).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| bad(format!("rope `{k}` is {v}, not a number"))),
        }
    };
    let theta = match params.map(|p| num(p, "rope_theta")).transpose()?.flatten() {
        Some(t) => t,
        None => f.f64("rope_theta")?.or(f.f64("rotary_emb_base")?).unwrap_or(10000.0),
    };
    let fraction = match params.map(|p| num(p, "partial_rotary_factor")).transpose()?.flatten() {
        Some(x) => x,
        None => f.f64("partial_rotary_factor")?.unwrap_or(default_fraction),
    };
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(bad(format!("the rotary fraction of each head is {fraction}; it must be in (0, 1]")));
    }
    let scaling = match scaling {
        None => RopeScaling::None,
        Some(m) => {
            let kind = m.get("rope_type").or_else(|| m.get("type")).and_then(Value::as_str).unwrap_or("default");
            let need = |k: &str| num(m, k)?.ok_or_else(|| bad(format!("rope scaling `{kind}` needs `{k}`")));
            match kind {
                "default" => RopeScaling::None,
                "linear" => RopeScaling::Linear { factor: need("factor")? },
                "llama3" => RopeScaling::Llama3 {
                    factor: need("factor")?,
                    low_freq_factor: need("low_freq_factor")?,
                    high_freq_factor: need("high_freq_factor")?,
                    original_max_position_embeddings: need("original_max_position_embeddings")?,
                },
                other => {
                    return Err(bad(format!("rope scaling `{other}` is not supported; Tiller implements `default`, `linear` and `llama3`")))
                }
            }
        }
    };
    if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } = scaling {
        if !(factor > 0.0 && low_freq_factor > 0.0 && high_freq_factor > low_freq_factor && original_max_position_embeddings > 0.0) {
            return Err(bad("llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0"));
        }
    }
    if let RopeScaling::Linear { factor } = scaling {
        if factor <= 0.0 {
            return Err(bad("linear rope scaling needs a positive factor"));
        }
    }
    if theta.is_nan() || theta <= 1.0 {
        return Err(bad(format!("rope_theta is {theta}; it must be larger than 1")));
    }
    // Hugging Face: rotary_ndims = int(head_size * rotary_pct).
    let rotary_dim = (head_dim as f64 * fraction) as usize;
    if rotary_dim == 0 || rotary_dim % 2 != 0 {
        return Err(bad(format!("{fraction} of a head of {head_dim} is {rotary_dim} rotary channels; it must be a positive even number")));
    }
    Ok(Rope { theta, rotary_dim, scaling })
}

/// Checks that the dimensions are usable and plausible.
pub fn validate(s: &ModelSpec) -> Result<()> {
    let dims = [
        ("layers", s.n_layer),
        ("width", s.n_embd),
        ("heads", s.n_head),
        ("key/value heads", s.n_kv_head),
        ("head size", s.head_dim),
        ("MLP width", s.n_inner),
        ("context", s.n_positions),
        ("vocabulary", s.vocab_size),
    ];
    if let Some((name, _)) = dims.iter().find(|(_, v)| *v == 0) {
        return Err(bad(format!("the model's {name} is 0; every dimension must be positive ({})", s.summary())));
    }
    if s.n_head % s.n_kv_head != 0 {
        return Err(bad(format!("{} heads cannot share {} key/value heads evenly", s.n_head, s.n_kv_head)));
    }
    if s.head_dim > MAX_HEAD_DIM {
        return Err(bad(format!("head size {} is larger than the {MAX_HEAD_DIM} Tiller's attention supports", s.head_dim)));
    }
    if s.n_embd % 2 != 0 || s.n_inner % 2 != 0 {
        return Err(bad(format!("width {} and MLP width {} must be even", s.n_embd, s.n_inner)));
    }
    if s.n_layer > 1000 || s.n_embd > 65536 || s.n_inner > 1 << 18 || s.n_head > 1024 || s.vocab_size > 1_000_000 {
        return Err(bad(format!("its dimensions are implausibly large ({})", s.summary())));
    }
    if !(s.norm.eps.is_finite() && s.norm.eps > 0.0 && s.norm.eps < 1.0) {
        return Err(bad(format!("the norm epsilon {} must be a small positive number", s.norm.eps)));
    }
    Ok(())
}
