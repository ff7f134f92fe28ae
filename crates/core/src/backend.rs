//! What a forward engine offers: the CPU reference ([`crate::model::CpuModel`]) and the wgpu
//! engine (`tiller-gpu`) both implement [`Backend`], so generation, steering vectors, decoded
//! vocabulary and sweeps are written once, above it.
//!
//! A step runs new tokens for several sequences at once (a batch), each appended to its own KV
//! cache slot; rows are the step's tokens flattened in sequence order.

use serde::{Deserialize, Serialize};

use crate::arch::ModelSpec;
use crate::error::{Result, TillerError};
use crate::ops::RowMeta;

/// Where in a block a vector is added or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    /// The residual stream before block L (`blocks.L.hook_resid_pre`, HF `hidden_states[L]`).
    #[default]
    ResidPre,
    /// The attention sublayer's output of block L (after `c_proj`), before it joins the residual.
    AttnOut,
    /// The MLP sublayer's output of block L, before it joins the residual.
    MlpOut,
}

impl Site {
    pub fn as_str(self) -> &'static str {
        match self {
            Site::ResidPre => "resid_pre",
            Site::AttnOut => "attn_out",
            Site::MlpOut => "mlp_out",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "resid_pre" => Some(Site::ResidPre),
            "attn_out" => Some(Site::AttnOut),
            "mlp_out" => Some(Site::MlpOut),
            _ => None,
        }
    }
}

/// Rows of a table added at one site of one layer: row r of the step gets
/// `table[row_map[r]]`, or nothing where `row_map[r] == u32::MAX`.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub layer: usize,
    pub site: Site,
    /// [K, C]
    pub table: Vec<f32>,
    /// [R]
    pub row_map: Vec<u32>,
}

/// New tokens for one sequence; they take positions `slot_len(slot)..` of its cache.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqStep {
    pub slot: usize,
    pub tokens: Vec<u32>,
}

/// Which rows' logits to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// The last row of each sequence: [B, V].
    Last,
    /// Every row: [R, V].
    All,
    /// None (a capture-only pass).
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRequest {
    pub seqs: Vec<SeqStep>,
    pub injections: Vec<Injection>,
    /// Read the activation at this (layer, site) for every row: [R, C] in the output.
    pub capture: Option<(usize, Site)>,
    pub logits: LogitRows,
}

impl StepRequest {
    pub fn rows(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// [rows_out, V], rows as asked for by [`LogitRows`].
    pub logits: Vec<f32>,
    /// [R, C] when a capture was asked for, else empty.
    pub captured: Vec<f32>,
}

/// A step checked against the caches, ready to run: every rule about what a step may ask for
/// lives here, once, so both engines accept and refuse exactly the same steps and a refused
/// step changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    /// Each row's (slot, position).
    pub rows: Vec<RowMeta>,
    /// Rows whose logits are returned, in output order.
    pub logit_rows: Vec<u32>,
    /// The (layer, site) after which the step ends: a capture-only step stops at its capture.
    /// The caches are then only good for `reset` and the slots' lengths do not advance.
    pub stop_after: Option<(usize, Site)>,
}

impl StepPlan {
    /// Checks `req` against slots of `lens` tokens (each at most `max_len`) of a model `spec`.
    pub fn new(req: &StepRequest, lens: &[usize], max_len: usize, spec: &ModelSpec) -> Result<Self> {
        let mut rows = Vec::with_capacity(req.rows());
        let mut seen = vec![false; lens.len()];
        for s in &req.seqs {
            let start = *lens
                .get(s.slot)
                .ok_or_else(|| TillerError::input(format!("cache slot {} does not exist ({} prepared)", s.slot, lens.len())))?;
            if std::mem::replace(&mut seen[s.slot], true) {
                return Err(TillerError::input(format!("cache slot {} appears twice in one step", s.slot)));
            }
            if s.tokens.is_empty() && req.logits == LogitRows::Last {
                return Err(TillerError::input(format!("sequence {} in the step has no tokens", s.slot)));
            }
            let end = start + s.tokens.len();
            if end > max_len || end > spec.n_positions {
                return Err(TillerError::input(format!(
                    "sequence {} would reach {end} tokens, past the {} this run prepared (the model's context is {})",
                    s.slot,
                    max_len.min(spec.n_positions),
                    spec.n_positions
                )));
            }
            if let Some(&t) = s.tokens.iter().find(|&&t| t as usize >= spec.vocab_size) {
                return Err(TillerError::input(format!("token id {t} is outside the vocabulary of {}", spec.vocab_size)));
            }
            rows.extend((start..end).map(|p| RowMeta { slot: s.slot as u32, pos: p as u32 }));
        }
        let c = spec.n_embd;
        for inj in &req.injections {
            if inj.layer >= spec.n_layer {
                return Err(TillerError::input(format!(
                    "an injection at layer {} but the model has layers 0..{}",
                    inj.layer,
                    spec.n_layer - 1
                )));
            }
            if inj.row_map.len() != rows.len() || inj.table.len() % c != 0 {
                return Err(TillerError::input("injection table or row map does not match the step".to_string()));
            }
            let k = (inj.table.len() / c) as u32;
            if inj.row_map.iter().any(|&m| m != u32::MAX && m >= k) {
                return Err(TillerError::input("injection row map points past its table".to_string()));
            }
        }
        if let Some((layer, site)) = req.capture {
            if layer >= spec.n_layer {
                return Err(TillerError::input(format!(
                    "a capture at layer {layer} ({}) but the model has layers 0..{}",
                    site.as_str(),
                    spec.n_layer - 1
                )));
            }
        }
        let logit_rows = match req.logits {
            LogitRows::None => Vec::new(),
            LogitRows::All => (0..rows.len() as u32).collect(),
            LogitRows::Last => req
                .seqs
                .iter()
                .scan(0u32, |end, s| {
                    *end += s.tokens.len() as u32;
                    Some(*end - 1)
                })
                .collect(),
        };
        let stop_after = if req.logits == LogitRows::None { req.capture } else { None };
        Ok(Self { rows, logit_rows, stop_after })
    }
}

/// A forward engine with per-slot KV caches.
#[allow(async_fn_in_trait)] // engines are used on one thread (wasm, or a native block_on)
pub trait Backend {
    /// The model this engine runs.
    fn config(&self) -> &ModelSpec;
    /// A short human description ("cpu reference", or the GPU adapter).
    fn describe(&self) -> String;
    /// Empties all caches and prepares `slots` of them, each `max_len` positions long.
    fn reset(&mut self, slots: usize, max_len: usize) -> Result<()>;
    /// Tokens held in a slot's cache.
    fn slot_len(&self, slot: usize) -> usize;
    /// Runs one forward step, as [`StepPlan`] checks it. With `LogitRows::None` and a capture,
    /// the step stops after the captured site; the caches are then only good for `reset`.
    async fn step(&mut self, req: &StepRequest) -> Result<StepOutput>;
    /// `rows[K, C]` through the head → [K, V], after the final norm when `apply_ln_f` (logit lens).
    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> Result<Vec<f32>>;
}
