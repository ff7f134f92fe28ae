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
    /// The attention's merged heads of block L before its output projection (`c_proj` /
    /// `o_proj` / `dense`'s input; TransformerLens `blocks.L.attn.hook_z`), [NH·HD]: head h
    /// is channels `h·HD..(h+1)·HD`. Hooks here may name one head ([`Capture::head`],
    /// [`Injection::head`]).
    Z,
    /// The attention sublayer's output of block L (after `c_proj`), before it joins the residual.
    AttnOut,
    /// The MLP sublayer's output of block L, before it joins the residual.
    MlpOut,
}

impl Site {
    /// The sites of the residual's width, where steering vectors of `n_embd` channels go.
    pub const RESIDUAL: [Site; 3] = [Site::ResidPre, Site::AttnOut, Site::MlpOut];
    /// Every site, in the order a block reaches them.
    pub const ALL: [Site; 4] = [Site::ResidPre, Site::Z, Site::AttnOut, Site::MlpOut];

    pub fn as_str(self) -> &'static str {
        match self {
            Site::ResidPre => "resid_pre",
            Site::Z => "z",
            Site::AttnOut => "attn_out",
            Site::MlpOut => "mlp_out",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Site::ALL.into_iter().find(|site| site.as_str() == s)
    }
    /// Channels of the site's rows (its slot's width): `n_embd`, or NH·HD at [`Site::Z`].
    pub fn width(self, spec: &ModelSpec) -> usize {
        crate::arch::program::site_slot(self).width(spec)
    }
    /// Where the block reaches this site, for ordering hooks within a layer.
    pub fn order(self) -> usize {
        Site::ALL.iter().position(|&s| s == self).unwrap_or(0)
    }
}

/// What an intervention does to the rows it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// x += table row (ActAdd, CAA, function vectors).
    #[default]
    Add,
    /// x = table row (activation patching: a head's mean output, a cached activation).
    Set,
    /// x ·= table row, channel by channel (ablation with zeros, a head's gain).
    Scale,
}

/// An intervention at one site of one layer: row r of the step is changed by
/// `table[row_map[r]]` as `mode` says, or left alone where `row_map[r] == u32::MAX`. The table's
/// rows are the site's width, or the head size when `head` names one head of [`Site::Z`].
/// A hook's interventions apply in request order; its captures read the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub layer: usize,
    pub site: Site,
    /// One attention head's slice of [`Site::Z`]; None: the whole site.
    pub head: Option<usize>,
    pub mode: Mode,
    /// [K, W]
    pub table: Vec<f32>,
    /// [R]
    pub row_map: Vec<u32>,
}

impl Injection {
    /// Adds `table[row_map[r]]` to row r at (layer, site): the steering injection.
    pub fn add(layer: usize, site: Site, table: Vec<f32>, row_map: Vec<u32>) -> Self {
        Self { layer, site, head: None, mode: Mode::Add, table, row_map }
    }
}

/// Which rows of a step a capture reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RowSelect {
    /// Every row, in step order.
    #[default]
    All,
    /// The last row of each sequence, in sequence order (each must have tokens).
    Last,
    /// The rows at these (cache slot, absolute position) pairs, in this order; each must be a
    /// row of the step.
    Positions(Vec<(usize, usize)>),
}

/// An activation read at one site of one layer: `[rows selected, W]` in [`StepOutput::captured`],
/// W the site's width, or the head size when `head` names one head of [`Site::Z`]. With
/// `project`, a vector v of width W, the engine reduces each row x to `(x · v, ‖x‖)` instead:
/// `[rows selected, 2]`, what reading a vector against many texts needs without reading back
/// every activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub layer: usize,
    pub site: Site,
    pub head: Option<usize>,
    pub rows: RowSelect,
    pub project: Option<Vec<f32>>,
}

impl Capture {
    /// Every row of the step at (layer, site).
    pub fn all(layer: usize, site: Site) -> Self {
        Self { layer, site, head: None, rows: RowSelect::All, project: None }
    }

    /// Rows selected at (layer, site), whole or (`head`) one head's slice of [`Site::Z`].
    pub fn rows(layer: usize, site: Site, head: Option<usize>, rows: RowSelect) -> Self {
        Self { layer, site, head, rows, project: None }
    }

    /// Every row's `(x · v, ‖x‖)` at (layer, site).
    pub fn project(layer: usize, site: Site, v: Vec<f32>) -> Self {
        Self { layer, site, head: None, rows: RowSelect::All, project: Some(v) }
    }
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
    /// Activations to read, each into its own entry of [`StepOutput::captured`].
    pub captures: Vec<Capture>,
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
    /// Per capture of the request, in its order: [rows selected, W].
    pub captured: Vec<Vec<f32>>,
}

/// A capture checked against the step: the rows it reads (indices into the step's rows) and
/// the channels `col0..col0 + width` of its site's slot, and whether it reduces each row to
/// `(x · v, ‖x‖)` (the request's `project`).
#[derive(Debug, Clone, PartialEq)]
pub struct CapturePlan {
    pub layer: usize,
    pub site: Site,
    pub col0: usize,
    pub width: usize,
    pub rows: Vec<u32>,
    pub projected: bool,
}

impl CapturePlan {
    /// The floats it returns: `rows × width`, or `rows × 2` projected.
    pub fn out_len(&self) -> usize {
        self.rows.len() * if self.projected { 2 } else { self.width }
    }
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
    /// Per capture of the request, in order.
    pub captures: Vec<CapturePlan>,
    /// Per injection of the request, in order: the channels `(col0, width)` it changes.
    pub injection_cols: Vec<(usize, usize)>,
    /// The (layer, site) after which the step ends: a capture-only step stops at its last
    /// capture. The caches are then only good for `reset` and the slots' lengths do not advance.
    pub stop_after: Option<(usize, Site)>,
}

/// The channels `(col0, width)` of a hook at `site`, narrowed to `head` when given.
fn hook_cols(what: &str, layer: usize, site: Site, head: Option<usize>, spec: &ModelSpec) -> Result<(usize, usize)> {
    if layer >= spec.n_layer {
        return Err(TillerError::input(format!(
            "{what} at layer {layer} ({}) but the model has layers 0..{}",
            site.as_str(),
            spec.n_layer - 1
        )));
    }
    match head {
        None => Ok((0, site.width(spec))),
        Some(h) if site != Site::Z => Err(TillerError::input(format!(
            "{what} names head {h} at {}: heads are only addressed at site z (the attention's merged heads)",
            site.as_str()
        ))),
        Some(h) if h >= spec.n_head => {
            Err(TillerError::input(format!("{what} names head {h} but the model has heads 0..{} per layer", spec.n_head - 1)))
        }
        Some(h) => Ok((h * spec.head_dim, spec.head_dim)),
    }
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
        let mut injection_cols = Vec::with_capacity(req.injections.len());
        for inj in &req.injections {
            let (col0, width) = hook_cols("an injection", inj.layer, inj.site, inj.head, spec)?;
            if inj.row_map.len() != rows.len() || inj.table.len() % width != 0 {
                return Err(TillerError::input(format!(
                    "an injection at layer {} ({}) has a table of {} values and a row map of {} for a step of {} rows of {width} channels",
                    inj.layer,
                    inj.site.as_str(),
                    inj.table.len(),
                    inj.row_map.len(),
                    rows.len()
                )));
            }
            let k = (inj.table.len() / width) as u32;
            if inj.row_map.iter().any(|&m| m != u32::MAX && m >= k) {
                return Err(TillerError::input("injection row map points past its table".to_string()));
            }
            injection_cols.push((col0, width));
        }
        let last_rows: Vec<Option<u32>> = req
            .seqs
            .iter()
            .scan(0u32, |end, s| {
                *end += s.tokens.len() as u32;
                Some((!s.tokens.is_empty()).then(|| *end - 1))
            })
            .collect();
        let mut captures = Vec::with_capacity(req.captures.len());
        for cap in &req.captures {
            let (col0, width) = hook_cols("a capture", cap.layer, cap.site, cap.head, spec)?;
            let picked = match &cap.rows {
                RowSelect::All => (0..rows.len() as u32).collect(),
                RowSelect::Last => last_rows
                    .iter()
                    .zip(&req.seqs)
                    .map(|(r, s)| {
                        r.ok_or_else(|| {
                            TillerError::input(format!("a capture of each sequence's last row, but sequence {} has no tokens", s.slot))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()?,
                RowSelect::Positions(at) => at
                    .iter()
                    .map(|&(slot, pos)| {
                        rows.iter().position(|m| m.slot as usize == slot && m.pos as usize == pos).map(|i| i as u32).ok_or_else(|| {
                            TillerError::input(format!("a capture at slot {slot} position {pos}, which is not a row of this step"))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()?,
            };
            if let Some(v) = &cap.project {
                if v.len() != width {
                    return Err(TillerError::input(format!(
                        "a projection onto a vector of width {} at layer {} ({}), whose width is {width}",
                        v.len(),
                        cap.layer,
                        cap.site.as_str()
                    )));
                }
            }
            captures.push(CapturePlan { layer: cap.layer, site: cap.site, col0, width, rows: picked, projected: cap.project.is_some() });
        }
        let logit_rows = match req.logits {
            LogitRows::None => Vec::new(),
            LogitRows::All => (0..rows.len() as u32).collect(),
            LogitRows::Last => last_rows.iter().flatten().copied().collect(),
        };
        let stop_after = if req.logits == LogitRows::None {
            captures.iter().map(|c| (c.layer, c.site)).max_by_key(|&(l, site)| (l, site.order()))
        } else {
            None
        };
        Ok(Self { rows, logit_rows, captures, injection_cols, stop_after })
    }

    /// Gathers capture `i`'s rows and channels out of its site's slot `[R, stride]`, or (with
    /// `project`, the request's vector) each row's `(x · v, ‖x‖)`, summed in f64.
    pub fn gather(&self, i: usize, slot: &[f32], stride: usize, project: Option<&[f32]>) -> Vec<f32> {
        let c = &self.captures[i];
        let row = |r: u32| &slot[r as usize * stride + c.col0..r as usize * stride + c.col0 + c.width];
        match project {
            None => c.rows.iter().flat_map(|&r| row(r)).copied().collect(),
            Some(v) => c
                .rows
                .iter()
                .flat_map(|&r| {
                    let x = row(r);
                    let dot: f64 = x.iter().zip(v).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let norm: f64 = x.iter().map(|&a| a as f64 * a as f64).sum::<f64>().sqrt();
                    [dot as f32, norm as f32]
                })
                .collect(),
        }
    }
}

/// Checks a [`Backend::fork_slot`] against slots of `lens` tokens.
pub fn check_fork(lens: &[usize], src: usize, dst: usize) -> Result<()> {
    let n = lens.len();
    if src >= n || dst >= n {
        return Err(TillerError::input(format!("cannot copy cache slot {src} to {dst}: {n} slots are prepared")));
    }
    Ok(())
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
    /// Runs one forward step, as [`StepPlan`] checks it. With `LogitRows::None` and captures,
    /// the step stops after the last captured site; the caches are then only good for `reset`.
    async fn step(&mut self, req: &StepRequest) -> Result<StepOutput>;
    /// Makes slot `dst` a copy of slot `src` (its cached keys and values, and its length), so
    /// sequences that share a prefix run it once.
    fn fork_slot(&mut self, src: usize, dst: usize) -> Result<()>;
    /// `rows[K, C]` through the head → [K, V], after the final norm when `apply_ln_f` (logit lens).
    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> Result<Vec<f32>>;
}
