//! Each family's Hugging Face tensor names, mapped onto Tiller's names and layouts.
//!
//! Engines see one layout whatever the family (the GPT-2 names they always used, for roles
//! every family has): matrices `[in, out]` (GPT-2's Conv1D layout), the attention's query, key
//! and value fused into `h.N.attn.c_attn.weight` `[C, (NH + 2·NKV)·HD]` as q | k | v, and a
//! bias for every projection (zeros where the family has none). The [`Mapper`] turns a
//! checkpoint's tensors into those as they stream in: `nn.Linear` weights `[out, in]` are
//! transposed, GPT-NeoX's per-head interleaved `query_key_value` is regrouped, and Llama's
//! separate `q_proj`, `k_proj`, `v_proj` are held until the layer's three have arrived and then
//! fused. Peak memory stays about one tensor (a layer's q, k and v together, at most).
//!
//! Tiller's names, `[shape]`:
//!   `wte.weight` [V, C] the token embedding (and the head, when tied)
//!   `wpe.weight` [P, C] learned positions (GPT-2 only)
//!   `lm_head.weight` [V, C] the head, when untied
//!   `ln_f.weight`, `ln_f.bias` [C] the final norm (no bias for RMSNorm)
//!   per block N, `h.N.` + `ln_1.weight`/`ln_1.bias`, `attn.c_attn.weight` [C, QKV] and `.bias`,
//!   `attn.c_proj.weight` [NH·HD, C] and `.bias` [C], `ln_2.weight`/`ln_2.bias`,
//!   `mlp.c_fc.weight` [C, F] (SwiGLU's up) and `.bias`, `mlp.gate.weight` [C, F] and `.bias`
//!   (SwiGLU only), `mlp.c_proj.weight` [F, C] and `.bias`.

use std::collections::HashMap;

use super::{Activation, Family, ModelSpec, NormKind, PosEncoding};
use crate::error::{Result, TillerError};
use crate::weights::{Dtype, TensorView};

/// What happens to a checkpoint tensor on its way to an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Passed on as stored, under Tiller's name.
    AsIs(String),
    /// An `nn.Linear` weight `[out, in]`, transposed to `[in, out]`.
    Transpose(String),
    /// One of a layer's separate q/k/v projections (weight or bias), fused once all three are in.
    QkvPart { layer: usize, part: usize, bias: bool },
    /// GPT-NeoX's `query_key_value` (weight or bias), whose outputs are [NH, 3, HD].
    NeoxQkv { layer: usize, bias: bool },
}

/// One tensor the checkpoint must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTensor {
    /// The name in the file (GPT-2's without its optional `transformer.` prefix).
    pub name: String,
    pub shape: Vec<usize>,
    pub transform: Transform,
}

/// Every tensor of the checkpoint that the model needs, with its expected shape.
pub fn file_tensors(s: &ModelSpec) -> Vec<FileTensor> {
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, transform: Transform| out.push(FileTensor { name, shape, transform });
    let (c, v, f) = (s.n_embd, s.vocab_size, s.n_inner);
    let (q, kv) = (s.q_width(), s.kv_width());
    let as_is = |t: &str| Transform::AsIs(t.to_string());
    let tr = |t: String| Transform::Transpose(t);
    match s.family {
        Family::Gpt2 => {
            push("wte.weight".into(), vec![v, c], as_is("wte.weight"));
            push("wpe.weight".into(), vec![s.n_positions, c], as_is("wpe.weight"));
            for l in 0..s.n_layer {
                for (name, shape) in [
                    ("ln_1.weight", vec![c]),
                    ("ln_1.bias", vec![c]),
                    ("attn.c_attn.weight", vec![c, 3 * c]),
                    ("attn.c_attn.bias", vec![3 * c]),
                    ("attn.c_proj.weight", vec![c, c]),
                    ("attn.c_proj.bias", vec![c]),
                    ("ln_2.weight", vec![c]),
                    ("ln_2.bias", vec![c]),
                    ("mlp.c_fc.weight", vec![c, f]),
                    ("mlp.c_fc.bias", vec![f]),
                    ("mlp.c_proj.weight", vec![f, c]),
                    ("mlp.c_proj.bias", vec![c]),
                ] {
                    let n = format!("h.{l}.{name}");
                    push(n.clone(), shape, Transform::AsIs(n));
                }
            }
            push("ln_f.weight".into(), vec![c], as_is("ln_f.weight"));
            push("ln_f.bias".into(), vec![c], as_is("ln_f.bias"));
        }
        Family::Llama | Family::Qwen2 => {
            push("model.embed_tokens.weight".into(), vec![v, c], as_is("wte.weight"));
            for l in 0..s.n_layer {
                let p = |n: &str| format!("model.layers.{l}.{n}");
                let t = |n: &str| format!("h.{l}.{n}");
                push(p("input_layernorm.weight"), vec![c], Transform::AsIs(t("ln_1.weight")));
                for (part, (name, width)) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)].into_iter().enumerate() {
                    push(p(&format!("self_attn.{name}.weight")), vec![width, c], Transform::QkvPart { layer: l, part, bias: false });
                    if s.qkv_bias {
                        push(p(&format!("self_attn.{name}.bias")), vec![width], Transform::QkvPart { layer: l, part, bias: true });
                    }
                }
                push(p("self_attn.o_proj.weight"), vec![c, q], tr(t("attn.c_proj.weight")));
                if s.o_bias {
                    push(p("self_attn.o_proj.bias"), vec![c], Transform::AsIs(t("attn.c_proj.bias")));
                }
                push(p("post_attention_layernorm.weight"), vec![c], Transform::AsIs(t("ln_2.weight")));
                push(p("mlp.gate_proj.weight"), vec![f, c], tr(t("mlp.gate.weight")));
                push(p("mlp.up_proj.weight"), vec![f, c], tr(t("mlp.c_fc.weight")));
                push(p("mlp.down_proj.weight"), vec![c, f], tr(t("mlp.c_proj.weight")));
                if s.mlp_bias {
                    push(p("mlp.gate_proj.bias"), vec![f], Transform::AsIs(t("mlp.gate.bias")));
                    push(p("mlp.up_proj.bias"), vec![f], Transform::AsIs(t("mlp.c_fc.bias")));
                    push(p("mlp.down_proj.bias"), vec![c], Transform::AsIs(t("mlp.c_proj.bias")));
                }
            }
            push("model.norm.weight".into(), vec![c], as_is("ln_f.weight"));
            if !s.tied_head {
                push("lm_head.weight".into(), vec![v, c], as_is("lm_head.weight"));
            }
        }
        Family::GptNeox => {
            push("gpt_neox.embed_in.weight".into(), vec![v, c], as_is("wte.weight"));
            for l in 0..s.n_layer {
                let p = |n: &str| format!("gpt_neox.layers.{l}.{n}");
                let t = |n: &str| format!("h.{l}.{n}");
                push(p("input_layernorm.weight"), vec![c], Transform::AsIs(t("ln_1.weight")));
                push(p("input_layernorm.bias"), vec![c], Transform::AsIs(t("ln_1.bias")));
                push(p("post_attention_layernorm.weight"), vec![c], Transform::AsIs(t("ln_2.weight")));
                push(p("post_attention_layernorm.bias"), vec![c], Transform::AsIs(t("ln_2.bias")));
                push(p("attention.query_key_value.weight"), vec![3 * q, c], Transform::NeoxQkv { layer: l, bias: false });
                if s.qkv_bias {
                    push(p("attention.query_key_value.bias"), vec![3 * q], Transform::NeoxQkv { layer: l, bias: true });
                }
                push(p("attention.dense.weight"), vec![c, q], tr(t("attn.c_proj.weight")));
                if s.o_bias {
                    push(p("attention.dense.bias"), vec![c], Transform::AsIs(t("attn.c_proj.bias")));
                }
                push(p("mlp.dense_h_to_4h.weight"), vec![f, c], tr(t("mlp.c_fc.weight")));
                push(p("mlp.dense_h_to_4h.bias"), vec![f], Transform::AsIs(t("mlp.c_fc.bias")));
                push(p("mlp.dense_4h_to_h.weight"), vec![c, f], tr(t("mlp.c_proj.weight")));
                push(p("mlp.dense_4h_to_h.bias"), vec![c], Transform::AsIs(t("mlp.c_proj.bias")));
            }
            push("gpt_neox.final_layer_norm.weight".into(), vec![c], as_is("ln_f.weight"));
            push("gpt_neox.final_layer_norm.bias".into(), vec![c], as_is("ln_f.bias"));
            if !s.tied_head {
                push("embed_out.weight".into(), vec![v, c], as_is("lm_head.weight"));
            }
        }
    }
    out
}

/// Tiller's tensors that the family's checkpoint lacks, which the engines get as zeros: the
/// biases of bias-free projections (so every projection is the same kernel).
pub fn zero_tensors(s: &ModelSpec) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for l in 0..s.n_layer {
        let t = |n: &str| format!("h.{l}.{n}");
        if !s.qkv_bias {
            out.push((t("attn.c_attn.bias"), s.qkv_width()));
        }
        if !s.o_bias {
            out.push((t("attn.c_proj.bias"), s.n_embd));
        }
        if !s.mlp_bias {
            out.push((t("mlp.c_fc.bias"), s.n_inner));
            out.push((t("mlp.c_proj.bias"), s.n_embd));
            if s.act == Activation::SwiGlu {
                out.push((t("mlp.gate.bias"), s.n_inner));
            }
        }
    }
    out
}

/// Tiller's name and shape of every tensor an engine receives.
pub fn engine_tensors(s: &ModelSpec) -> Vec<(String, Vec<usize>)> {
    let (c, f, v) = (s.n_embd, s.n_inner, s.vocab_size);
    let mut out = vec![("wte.weight".to_string(), vec![v, c])];
    if s.pos == PosEncoding::Learned {
        out.push(("wpe.weight".into(), vec![s.n_positions, c]));
    }
    let biased_norm = s.norm.kind == NormKind::LayerNorm;
    for l in 0..s.n_layer {
        let t = |n: &str| format!("h.{l}.{n}");
        out.push((t("ln_1.weight"), vec![c]));
        out.push((t("ln_2.weight"), vec![c]));
        if biased_norm {
            out.push((t("ln_1.bias"), vec![c]));
            out.push((t("ln_2.bias"), vec![c]));
        }
        out.push((t("attn.c_attn.weight"), vec![c, s.qkv_width()]));
        out.push((t("attn.c_attn.bias"), vec![s.qkv_width()]));
        out.push((t("attn.c_proj.weight"), vec![s.q_width(), c]));
        out.push((t("attn.c_proj.bias"), vec![c]));
        out.push((t("mlp.c_fc.weight"), vec![c, f]));
        out.push((t("mlp.c_fc.bias"), vec![f]));
        if s.act == Activation::SwiGlu {
            out.push((t("mlp.gate.weight"), vec![c, f]));
            out.push((t("mlp.gate.bias"), vec![f]));
        }
        out.push((t("mlp.c_proj.weight"), vec![f, c]));
        out.push((t("mlp.c_proj.bias"), vec![c]));
    }
    out.push(("ln_f.weight".into(), vec![c]));
    if biased_norm {
        out.push(("ln_f.bias".into(), vec![c]));
    }
    if !s.tied_head {
        out.push(("lm_head.weight".into(), vec![v, c]));
    }
    out
}

/// Receives Tiller's tensors (see the module docs), each once, in file order.
pub trait TensorSink {
    /// Called once, after the header is parsed and every needed tensor is shape-checked, before
    /// any tensor data.
    fn begin(&mut self, spec: &ModelSpec) -> Result<()>;
    /// Called once per Tiller tensor.
    fn tensor(&mut self, t: TensorView<'_>) -> Result<()>;
}

/// Turns checkpoint tensors into Tiller's (see the module docs) and hands them to a sink.
pub struct Mapper {
    spec: ModelSpec,
    /// Separate q/k/v (weight or bias) of a layer waiting for the rest: (layer, bias) → parts.
    pending: HashMap<(usize, bool), [Option<Vec<f32>>; 3]>,
}

impl Mapper {
    pub fn new(spec: ModelSpec) -> Self {
        Self { spec, pending: HashMap::new() }
    }

    /// Hands the sink the zero biases of the family's bias-free projections.
    pub fn begin(&mut self, sink: &mut dyn TensorSink) -> Result<()> {
        sink.begin(&self.spec)?;
        for (name, len) in zero_tensors(&self.spec) {
            let zeros = vec![0.0f32; len];
            sink.tensor(TensorView { name: &name, shape: &[len], dtype: Dtype::F32, bytes: bytemuck::cast_slice(&zeros) })?;
        }
        Ok(())
    }

    /// Maps one checkpoint tensor (already checked against `t`'s expected shape).
    pub fn tensor(&mut self, t: &FileTensor, view: TensorView<'_>, sink: &mut dyn TensorSink) -> Result<()> {
        match &t.transform {
            Transform::AsIs(name) => sink.tensor(TensorView { name, ..view }),
            Transform::Transpose(name) => {
                let (rows, cols) = (view.shape[0], view.shape[1]);
                let data = transpose(&view.to_f32(), rows, cols);
                emit(sink, name, &[cols, rows], &data)
            }
            Transform::NeoxQkv { layer, bias } => {
                let (nh, hd) = (self.spec.n_head, self.spec.head_dim);
                let x = view.to_f32();
                let cols = if *bias { 1 } else { view.shape[1] };
                // Output row (h, part, i) of the file → row part·NH·HD + h·HD + i of q | k | v.
                let mut regrouped = vec![0.0f32; x.len()];
                for h in 0..nh {
                    for part in 0..3 {
                        for i in 0..hd {
                            let src = ((h * 3 + part) * hd + i) * cols;
                            let dst = ((part * nh + h) * hd + i) * cols;
                            regrouped[dst..dst + cols].copy_from_slice(&x[src..src + cols]);
                        }
                    }
                }
                let l = *layer;
                if *bias {
                    emit(sink, &format!("h.{l}.attn.c_attn.bias"), &[3 * nh * hd], &regrouped)
                } else {
                    let rows = 3 * nh * hd;
                    emit(sink, &format!("h.{l}.attn.c_attn.weight"), &[cols, rows], &transpose(&regrouped, rows, cols))
                }
            }
            Transform::QkvPart { layer, part, bias } => {
                let entry = self.pending.entry((*layer, *bias)).or_default();
                entry[*part] = Some(view.to_f32());
                if entry.iter().any(Option::is_none) {
                    return Ok(());
                }
                let parts = self.pending.remove(&(*layer, *bias)).unwrap_or_default();
                let [Some(q), Some(k), Some(v)] = parts else {
                    return Err(TillerError::input("internal: a fused qkv part went missing"));
                };
                let l = *layer;
                let fused: Vec<f32> = [q, k, v].concat();
                if *bias {
                    emit(sink, &format!("h.{l}.attn.c_attn.bias"), &[fused.len()], &fused)
                } else {
                    let (c, rows) = (self.spec.n_embd, self.spec.qkv_width());
                    emit(sink, &format!("h.{l}.attn.c_attn.weight"), &[c, rows], &transpose(&fused, rows, c))
                }
            }
        }
    }
}

fn emit(sink: &mut dyn TensorSink, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
    sink.tensor(TensorView { name, shape, dtype: Dtype::F32, bytes: bytemuck::cast_slice(data) })
}

/// `[rows, cols]` → `[cols, rows]`.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}
