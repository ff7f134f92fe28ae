//! Layer × coefficient sweeps, as in the ActAdd post's wedding study: for each injection layer
//! and coefficient, the perplexity ratio `exp(mean loss steered − mean loss unsteered)` and the
//! mean KL(steered ‖ unsteered) of the next-token distributions, over named sets of texts.
//!
//! - The recipe's terms are moved to each swept layer; a swept coefficient multiplies every
//!   term's coefficient (terms `+1 " weddings"`, `−1 ""` with coefficient 4 add 4 × the
//!   difference). Coefficient 0 is the unsteered model, so its ratio is exactly 1.
//! - Steering is ActAdd (`front`): the [n, C] tensor at positions 0..n of each text. Both
//!   metrics count only predictions of tokens at positions ≥ n (the injected positions are
//!   masked out), pooled over the texts of a set. Texts with no position past n are skipped.
//! - The unsteered pass runs once; vectors once per layer (they scale linearly with the
//!   coefficient); every (coefficient, set, text) of a layer is batched together, each text in
//!   its own cache slot with its coefficient's injection, so a layer costs one capture step and
//!   ⌈rows / 128⌉ scoring steps, on the same engine buffers.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, LogitRows, SeqStep, Site, StepRequest};
use crate::error::{Result, TillerError};
use crate::generate::Flow;
use crate::recipe::{Positions, Term};
use crate::steer::{self, LayerVector, RowSpan};
use crate::tokenizer::Tokenizer;

/// A named set of evaluation texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSet {
    pub name: String,
    pub texts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// The steering terms; their layers are replaced by each swept layer.
    pub terms: Vec<Term>,
    pub bos: bool,
    pub site: Site,
    pub layers: Vec<usize>,
    /// Multipliers of the terms' coefficients.
    pub coeffs: Vec<f32>,
    pub sets: Vec<EvalSet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub set: String,
    pub layer: usize,
    pub coeff: f32,
    /// exp(mean loss steered − mean loss unsteered).
    pub ppl_ratio: f64,
    /// Mean KL(steered ‖ unsteered) in nats.
    pub kl: f64,
    pub loss_steered: f64,
    pub loss_unsteered: f64,
    /// Predictions counted (positions ≥ n, over the set's texts).
    pub tokens: usize,
    /// Texts used (long enough to have positions past n).
    pub texts: usize,
}

/// The most memory a sweep's unsteered log-probabilities may take (one row of the vocabulary
/// per counted prediction, kept for every layer's KL): 1 GiB, about 5,300 predictions of
/// GPT-2's vocabulary.
pub const BASELINE_BUDGET: u64 = 1 << 30;

/// Refuses, before any pass, evaluation texts whose baseline would not fit [`BASELINE_BUDGET`],
/// saying how big it would be and what to do.
fn check_baseline_budget(prepared: &[Vec<Vec<u32>>], n: usize, vocab: usize) -> Result<()> {
    let predictions: u64 = prepared.iter().flatten().map(|t| t.len().saturating_sub(n.max(1)) as u64).sum();
    let bytes = predictions.saturating_mul(vocab as u64 * 4);
    if bytes > BASELINE_BUDGET {
        let mb = crate::error::mib;
        return Err(TillerError::recipe(format!(
            "the evaluation texts make {predictions} predictions; the unsteered model's log-probabilities for them would take \
             {} MB ({predictions} × {vocab} tokens × 4 bytes), more than the {} MB a sweep may use: use fewer or shorter texts \
             (at most {} predictions with this model)",
            mb(bytes),
            mb(BASELINE_BUDGET),
            BASELINE_BUDGET / (vocab as u64 * 4)
        )));
    }
    Ok(())
}

/// Rows per forward step: bounds the logits read back at once.
const MAX_ROWS_PER_STEP: usize = 128;

/// One text to score in a batched step: its tokens, and which scaled vectors steer it (none
/// for the unsteered baseline).
struct Job<'a> {
    tokens: &'a [u32],
    steer: Option<usize>,
}

/// Per-set log-probabilities of the unsteered model at the counted rows, and their targets.
struct Baseline {
    /// For each counted prediction: log-softmax row [V].
    logp: Vec<Vec<f32>>,
    targets: Vec<u32>,
}

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + row.iter().map(|&x| libm::exp(x as f64 - max)).sum::<f64>().ln();
    row.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// Consecutive jobs whose rows fit one step.
fn chunks(jobs: &[Job]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, j) in jobs.iter().enumerate() {
        if rows > 0 && rows + j.tokens.len() > MAX_ROWS_PER_STEP {
            out.push(start..i);
            start = i;
            rows = 0;
        }
        rows += j.tokens.len();
    }
    if start < jobs.len() {
        out.push(start..jobs.len());
    }
    out
}

/// Runs a chunk of jobs as one batched step (each job its own cache slot, each steered job
/// with its own coefficient's vectors at positions 0..n), calling `per_row(job index, logits
/// row)` for every counted prediction: positions n-1..T-1, predicting tokens n..T.
async fn score<B: Backend>(
    backend: &mut B,
    jobs: &[Job<'_>],
    range: std::ops::Range<usize>,
    scaled: &[Vec<LayerVector>],
    site: Site,
    n: usize,
    mut per_row: impl FnMut(usize, &[f32]),
) -> Result<()> {
    let v = backend.config().vocab_size;
    let chunk = &jobs[range.clone()];
    let max_len = chunk.iter().map(|j| j.tokens.len()).max().unwrap_or(1);
    backend.reset(chunk.len(), max_len)?;
    let mut injections = Vec::new();
    for (k, vectors) in scaled.iter().enumerate() {
        let spans: Vec<RowSpan> = chunk.iter().map(|j| RowSpan { start: 0, len: j.tokens.len(), steered: j.steer == Some(k) }).collect();
        if spans.iter().any(|s| s.steered) {
            injections.extend(steer::injections(vectors, site, Positions::Front, &spans));
        }
    }
    let req = StepRequest {
        seqs: chunk.iter().enumerate().map(|(slot, j)| SeqStep { slot, tokens: j.tokens.to_vec() }).collect(),
        injections,
        captures: Vec::new(),
        logits: LogitRows::All,
    };
    let logits = backend.step(&req).await?.logits; // (R, V)
                                                   // A NaN would score as "no change" (KL 0): stop instead, saying which text and where.
    if !crate::generate::all_finite(&logits) {
        let r = logits.chunks_exact(v).position(|l| !crate::generate::all_finite(l)).unwrap_or(0);
        let (mut i, mut start) = (0, 0);
        while i + 1 < chunk.len() && start + chunk[i].tokens.len() <= r {
            start += chunk[i].tokens.len();
            i += 1;
        }
        let job = &chunk[i];
        let spans = [RowSpan { start: 0, len: job.tokens.len(), steered: job.steer.is_some() }];
        let vectors = job.steer.map(|k| scaled[k].as_slice()).unwrap_or_default();
        let at = crate::generate::first_non_finite(backend, job.tokens, steer::injections(vectors, site, Positions::Front, &spans)).await?;
        let what = if job.steer.is_some() { "on a steered evaluation text" } else { "on an evaluation text, unsteered" };
        return Err(crate::generate::non_finite_error(
            what,
            at.map_or(crate::generate::Traced::AfterTheBlocks, |(l, s)| crate::generate::Traced::At(l, s)),
        ));
    }
    let mut row = 0;
    for (i, j) in chunk.iter().enumerate() {
        let first = n.max(1) - 1;
        for p in first..j.tokens.len() - 1 {
            per_row(range.start + i, &logits[(row + p) * v..(row + p + 1) * v]);
        }
        row += j.tokens.len();
    }
    Ok(())
}

/// Runs a sweep, calling `progress(done, total)` after each step.
///
/// Steps: one batched unsteered pass over every set's texts; then per layer one capture step
/// for the vectors, and batched steps holding every (coefficient, set, text) of that layer
/// (each text in its own slot, with its coefficient's injection), up to 128 rows a step.
pub async fn sweep<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    spec: &SweepSpec,
    mut progress: impl FnMut(usize, usize) -> Flow,
) -> Result<Vec<SweepRow>> {
    let cfg = *backend.config();
    if spec.terms.is_empty() {
        return Err(TillerError::recipe("a sweep needs at least one steering term"));
    }
    if spec.layers.is_empty() || spec.coeffs.is_empty() || spec.sets.is_empty() {
        return Err(TillerError::recipe("a sweep needs at least one layer, one coefficient and one set of texts"));
    }
    if let Some(&l) = spec.layers.iter().find(|&&l| l >= cfg.n_layer) {
        return Err(TillerError::recipe(format!("layer {l} is out of range: this model has layers 0..{}", cfg.n_layer - 1)));
    }
    if let Some(c) = spec.coeffs.iter().find(|c| !c.is_finite() || c.abs() > crate::recipe::MAX_COEFF) {
        return Err(TillerError::recipe(format!("coefficient {c} is not usable: use finite numbers")));
    }
    // n is the same at every layer: the terms' padded length.
    let at_layer = |l: usize| -> Vec<Term> { spec.terms.iter().map(|t| Term { layer: l, ..t.clone() }).collect() };
    let groups = steer::padded_terms(tok, &at_layer(0), spec.bos)?;
    let n = groups.first().map(|g| g.1[0].1.len()).unwrap_or(0);

    // Each set's texts long enough to have a prediction past position n.
    let mut prepared: Vec<Vec<Vec<u32>>> = Vec::new();
    for set in &spec.sets {
        let mut texts = Vec::new();
        for t in &set.texts {
            let tokens = steer::encode_with_bos(tok, t, spec.bos)?;
            if tokens.len() > cfg.n_positions {
                return Err(TillerError::recipe(format!(
                    "an evaluation text of set `{}` is {} tokens, longer than the context of {}",
                    set.name,
                    tokens.len(),
                    cfg.n_positions
                )));
            }
            if tokens.len() > n.max(1) {
                texts.push(tokens);
            }
        }
        if texts.is_empty() {
            return Err(TillerError::recipe(format!(
                "no text of set `{}` is longer than the steering text ({n} tokens): the loss is only counted after it",
                set.name
            )));
        }
        prepared.push(texts);
    }
    check_baseline_budget(&prepared, n, cfg.vocab_size)?;
    // (set, text) of every text, in set order.
    let texts: Vec<(usize, &[u32])> = prepared.iter().enumerate().flat_map(|(si, ts)| ts.iter().map(move |t| (si, t.as_slice()))).collect();
    let steered_jobs: Vec<(usize, usize, &[u32])> =
        (0..spec.coeffs.len()).flat_map(|k| texts.iter().map(move |&(si, t)| (k, si, t))).collect();
    let base_jobs: Vec<Job> = texts.iter().map(|&(_, tokens)| Job { tokens, steer: None }).collect();
    let jobs: Vec<Job> = steered_jobs.iter().map(|&(k, _, tokens)| Job { tokens, steer: Some(k) }).collect();
    let (base_chunks, chunks_per_layer) = (chunks(&base_jobs), chunks(&jobs));
    let total = base_chunks.len() + spec.layers.len() * (1 + chunks_per_layer.len());
    let mut done = 0;
    let mut tick = |done: &mut usize| {
        *done += 1;
        progress(*done, total)
    };

    let mut baselines: Vec<Baseline> = prepared
        .iter()
        .map(|ts| Baseline { logp: Vec::new(), targets: ts.iter().flat_map(|t| t[n.max(1)..].iter().copied()).collect() })
        .collect();
    for range in base_chunks {
        let mut rows = Vec::new();
        score(backend, &base_jobs, range, &[], spec.site, n, |i, row| rows.push((texts[i].0, log_softmax(row)))).await?;
        for (si, lp) in rows {
            baselines[si].logp.push(lp);
        }
        if tick(&mut done) == Flow::Stop {
            return Ok(Vec::new());
        }
    }
    let loss_of = |b: &Baseline| -> f64 {
        b.logp.iter().zip(&b.targets).map(|(r, &t)| -(r[t as usize] as f64)).sum::<f64>() / b.targets.len() as f64
    };

    let mut out = Vec::new();
    for &layer in &spec.layers {
        let base_vectors = steer::steering_vectors(backend, tok, &at_layer(layer), spec.bos, spec.site).await?;
        if tick(&mut done) == Flow::Stop {
            return Ok(out);
        }
        let scaled: Vec<Vec<LayerVector>> = spec
            .coeffs
            .iter()
            .map(|&k| {
                base_vectors
                    .iter()
                    .map(|v| LayerVector {
                        rows: v.rows.iter().map(|x| x * k).collect(),
                        last: v.last.iter().map(|x| x * k).collect(),
                        ..v.clone()
                    })
                    .collect()
            })
            .collect();
        // Per (coefficient, set): summed loss and KL, and the next baseline row to compare with.
        let sets = spec.sets.len();
        let mut loss = vec![0.0f64; spec.coeffs.len() * sets];
        let mut kl = vec![0.0f64; spec.coeffs.len() * sets];
        let mut count = vec![0usize; spec.coeffs.len() * sets];
        for range in chunks_per_layer.clone() {
            score(backend, &jobs, range, &scaled, spec.site, n, |i, row| {
                let (k, si, _) = steered_jobs[i];
                let cell = k * sets + si;
                let base = &baselines[si];
                let lp = log_softmax(row);
                let bl = &base.logp[count[cell]];
                loss[cell] -= lp[base.targets[count[cell]] as usize] as f64;
                kl[cell] += lp.iter().zip(bl).map(|(&s, &u)| libm::exp(s as f64) * (s as f64 - u as f64)).sum::<f64>();
                count[cell] += 1;
            })
            .await?;
            if tick(&mut done) == Flow::Stop {
                return Ok(out);
            }
        }
        for (k, &coeff) in spec.coeffs.iter().enumerate() {
            for (si, set) in spec.sets.iter().enumerate() {
                let cell = k * sets + si;
                let loss_steered = loss[cell] / count[cell] as f64;
                let loss_unsteered = loss_of(&baselines[si]);
                out.push(SweepRow {
                    set: set.name.clone(),
                    layer,
                    coeff,
                    ppl_ratio: libm::exp(loss_steered - loss_unsteered),
                    kl: (kl[cell] / count[cell] as f64).max(0.0),
                    loss_steered,
                    loss_unsteered,
                    tokens: count[cell],
                    texts: prepared[si].len(),
                });
            }
        }
    }
    Ok(out)
}

/// One header line, then a line per row (`coeff` is the multiplier, as `tiller sweep --coeffs`
/// takes it).
pub fn to_csv(rows: &[SweepRow]) -> String {
    csv(rows, "coeff", |_| None)
}

/// As [`to_csv`], for readers who did not type the multipliers: the column is named
/// `multiplier`, and a `coefficients` column says what each of `terms` was given at it
/// (`+4 "Love"; -4 "Hate"`).
pub fn to_csv_with_terms(rows: &[SweepRow], terms: &[Term]) -> String {
    csv(rows, "multiplier,coefficients", |r| {
        // 0 × a negative coefficient is printed as +0, not -0.
        let used: Vec<String> = terms.iter().map(|t| format!("{:+} {:?}", t.coeff * r.coeff + 0.0, t.text)).collect();
        Some(csv_field(&used.join("; ")))
    })
}

/// A CSV field (RFC 4180): quoted, with quotes doubled, when it holds a comma, a quote or a
/// line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(rows: &[SweepRow], coeff_head: &str, extra: impl Fn(&SweepRow) -> Option<String>) -> String {
    let mut s = format!("set,layer,{coeff_head},ppl_ratio,kl,loss_steered,loss_unsteered,tokens,texts\n");
    for r in rows {
        let coeff = match extra(r) {
            Some(e) => format!("{},{e}", r.coeff),
            None => r.coeff.to_string(),
        };
        s.push_str(&format!(
            "{},{},{coeff},{:.6},{:.6},{:.6},{:.6},{},{}\n",
            csv_field(&r.set),
            r.layer,
            r.ppl_ratio,
            r.kl,
            r.loss_steered,
            r.loss_unsteered,
            r.tokens,
            r.texts
        ));
    }
    s
}
