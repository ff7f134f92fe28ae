//! What a forward engine offers: the CPU reference ([`crate::model::CpuModel`]) and the wgpu
//! engine (`tiller-gpu`) both implement [`Backend`], so generation, steering vectors, decoded
//! vocabulary and sweeps are written once, above it.
//!
//! A step runs new tokens for several sequences at once (a batch), each appended to its own KV
//! cache slot; rows are the step's tokens flattened in sequence order.

use serde::{Deserialize, Serialize};

use crate::config::Gpt2Config;
use crate::error::Result;

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

/// A GPT-2 forward engine with per-slot KV caches.
#[allow(async_fn_in_trait)] // engines are used on one thread (wasm, or a native block_on)
pub trait Backend {
    fn config(&self) -> &Gpt2Config;
    /// A short human description ("cpu reference", or the GPU adapter).
    fn describe(&self) -> String;
    /// Empties all caches and prepares `slots` of them, each `max_len` positions long.
    fn reset(&mut self, slots: usize, max_len: usize) -> Result<()>;
    /// Tokens held in a slot's cache.
    fn slot_len(&self, slot: usize) -> usize;
    /// Runs one forward step. With `LogitRows::None` and a capture, an engine may stop after
    /// the captured layer; the caches are then only good for `reset`.
    async fn step(&mut self, req: &StepRequest) -> Result<StepOutput>;
    /// `rows[K, C] · wteᵀ` → [K, V], after `ln_f` when `apply_ln_f` (logit lens).
    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> Result<Vec<f32>>;
}
