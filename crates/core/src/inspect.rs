//! Reading a vector against text: where in a corpus its direction is present. Each token's
//! activation x at (layer, site) is projected onto the vector v (`x · v`, and the cosine
//! `x · v / (‖x‖ ‖v‖)`), computed in the engine by a projecting capture
//! ([`Capture::project`]) so a step reads back two floats per token, not the activations.
//! And what steering changed: at each position of a completion, the steered and unsteered
//! next-token distributions given the same prefix ([`token_changes`]).

use serde::Serialize;

use crate::backend::{Backend, Capture, LogitRows, RowSelect, SeqStep, Site, StepRequest};
use crate::contrast::{check_texts, step_batches};
use crate::error::{Result, TillerError};
use crate::generate::Flow;
use crate::recipe::Positions;
use crate::sample::top_k_indices;
use crate::steer::{self, LayerVector, RowSpan};
use crate::tokenizer::Tokenizer;
use crate::vocab::{entries, VocabEntry};

/// One text's projections, a value per token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextProjection {
    /// `x · v` at each token.
    pub dot: Vec<f32>,
    /// `x · v / (‖x‖ ‖v‖)` at each token (0 where either norm is 0).
    pub cosine: Vec<f32>,
}

/// Which projection ranks texts and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    #[default]
    Dot,
    Cosine,
}

impl TextProjection {
    pub fn values(&self, by: Measure) -> &[f32] {
        match by {
            Measure::Dot => &self.dot,
            Measure::Cosine => &self.cosine,
        }
    }

    /// The largest value by `by` and its token's position.
    pub fn max(&self, by: Measure) -> (f32, usize) {
        self.values(by).iter().enumerate().fold((f32::NEG_INFINITY, 0), |(m, at), (i, &x)| if x > m { (x, i) } else { (m, at) })
    }

    /// The mean value by `by`, in f64.
    pub fn mean(&self, by: Measure) -> f64 {
        let v = self.values(by);
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
    }
}

/// Projects every token of every text onto `v` at (layer, site), texts batched into capture
/// steps that stop at the layer. `progress(done, total)` counts texts; `Stop` ends with
/// `Ok(None)`.
pub async fn project<B: Backend>(
    backend: &mut B,
    texts: &[Vec<u32>],
    layer: usize,
    site: Site,
    v: &[f32],
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<Vec<TextProjection>>> {
    let spec = *backend.config();
    if layer >= spec.n_layer {
        return Err(TillerError::input(format!("layer {layer} is out of range: this model has layers 0..{}", spec.n_layer - 1)));
    }
    crate::recipe::check_site(site)?;
    if v.len() != site.width(&spec) {
        return Err(TillerError::input(format!(
            "the vector is {} wide but this model's {} is {}: it was made on another model",
            v.len(),
            site.as_str(),
            site.width(&spec)
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(TillerError::input("the vector holds a value that is not a finite number".to_string()));
    }
    check_texts(texts, &spec)?;
    let v_norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let mut out = Vec::with_capacity(texts.len());
    for range in step_batches(texts.iter().map(Vec::len)) {
        let batch = &texts[range.clone()];
        backend.reset(batch.len(), batch.iter().map(Vec::len).max().unwrap_or(1))?;
        let req = StepRequest {
            seqs: batch.iter().enumerate().map(|(slot, t)| SeqStep { slot, tokens: t.clone() }).collect(),
            injections: Vec::new(),
            captures: vec![Capture::project(layer, site, v.to_vec())],
            logits: LogitRows::None,
        };
        let pairs = backend.step(&req).await?.captured.swap_remove(0); // [rows, 2]
        let mut at = 0;
        for t in batch {
            let rows = &pairs[2 * at..2 * (at + t.len())];
            let dot: Vec<f32> = rows.iter().step_by(2).copied().collect();
            let cosine = rows
                .chunks_exact(2)
                .map(|p| {
                    let d = p[1] as f64 * v_norm;
                    if d > 0.0 {
                        (p[0] as f64 / d) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            out.push(TextProjection { dot, cosine });
            at += t.len();
        }
        if progress(range.end, texts.len()) == Flow::Stop {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// ‖hidden_states[L]‖ at every position of one prompt, for each of `layers` (in their order,
/// repeats allowed): `[layers][T]`, from one step of projecting captures (onto zero vectors,
/// so only the norms count) that stops at the deepest layer asked for.
pub async fn position_norms<B: Backend>(backend: &mut B, tokens: &[u32], layers: &[usize]) -> Result<Vec<Vec<f64>>> {
    let spec = *backend.config();
    if tokens.is_empty() {
        return Err(TillerError::input("the prompt has no tokens: type one, or turn BOS on".to_string()));
    }
    if tokens.len() > spec.n_positions {
        return Err(TillerError::input(format!(
            "the prompt is {} tokens, past the model's context of {}: shorten it",
            tokens.len(),
            spec.n_positions
        )));
    }
    if let Some(&l) = layers.iter().find(|&&l| l >= spec.n_layer) {
        return Err(TillerError::input(format!("layer {l} is out of range: this model has layers 0..{}", spec.n_layer - 1)));
    }
    let mut wanted: Vec<usize> = layers.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    backend.reset(1, tokens.len())?;
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }],
        injections: Vec::new(),
        captures: wanted.iter().map(|&l| Capture::project(l, Site::ResidPre, vec![0.0; spec.n_embd])).collect(),
        logits: LogitRows::None,
    };
    let captured = backend.step(&req).await?.captured;
    Ok(layers
        .iter()
        .map(|l| {
            let i = wanted.binary_search(l).unwrap_or_default();
            captured[i].chunks_exact(2).map(|p| p[1] as f64).collect()
        })
        .collect())
}

/// One token's probability under both models.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenChange {
    pub id: u32,
    pub p_steered: f32,
    pub p_unsteered: f32,
}

/// What steering changed at one position of a completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PositionChange {
    /// The completion's token here, with both models' probabilities of it.
    pub token: TokenChange,
    /// KL(steered ‖ unsteered) of the next-token distributions, in nats.
    pub kl: f64,
    /// The tokens whose probability rose most (steered − unsteered), largest first; then
    /// those that fell most.
    pub rose: Vec<TokenChange>,
    pub fell: Vec<TokenChange>,
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + row.iter().map(|&x| libm::exp(x as f64 - max)).sum::<f64>().ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// The change at one position from the two models' logits rows.
pub fn position_change(steered: &[f32], unsteered: &[f32], token: u32, top: usize) -> PositionChange {
    let (ls, lu) = (log_softmax(steered), log_softmax(unsteered));
    let kl = ls.iter().zip(&lu).filter(|(s, _)| s.is_finite()).map(|(&s, &u)| libm::exp(s) * (s - u)).sum::<f64>().max(0.0);
    let change = |id: usize| TokenChange { id: id as u32, p_steered: libm::exp(ls[id]) as f32, p_unsteered: libm::exp(lu[id]) as f32 };
    let delta: Vec<f32> = ls.iter().zip(&lu).map(|(&s, &u)| (libm::exp(s) - libm::exp(u)) as f32).collect();
    let drop: Vec<f32> = delta.iter().map(|d| -d).collect();
    let rose = top_k_indices(&delta, top).into_iter().filter(|&i| delta[i] > 0.0).map(change).collect();
    let fell = top_k_indices(&drop, top).into_iter().filter(|&i| delta[i] < 0.0).map(change).collect();
    PositionChange { token: change(token as usize), kl, rose, fell }
}

/// What steering changed along `completion` (a completion of `prompt`, usually the steered
/// one): at each of its positions, the steered model (with `vectors`, as generation adds them)
/// and the unsteered one read the same prefix, prompt + completion so far, decoded token by
/// token side by side (two cache slots), so memory stays at two logits rows.
pub async fn token_changes<B: Backend>(
    backend: &mut B,
    prompt: &[u32],
    completion: &[u32],
    vectors: &[LayerVector],
    site: Site,
    positions: Positions,
    top: usize,
) -> Result<Vec<PositionChange>> {
    let spec = *backend.config();
    if prompt.is_empty() {
        return Err(TillerError::input("the prompt has no tokens: type one, or turn BOS on".to_string()));
    }
    if prompt.len() + completion.len() > spec.n_positions {
        return Err(TillerError::input(format!(
            "the prompt and completion are {} tokens, past the model's context of {}",
            prompt.len() + completion.len(),
            spec.n_positions
        )));
    }
    if let Some(&t) = completion.iter().find(|&&t| t as usize >= spec.vocab_size) {
        return Err(TillerError::input(format!("token {t} is past the vocabulary of {}", spec.vocab_size)));
    }
    steer::check_fits(vectors, prompt.len(), positions)?;
    let v = spec.vocab_size;
    let mut out = Vec::with_capacity(completion.len());
    if completion.is_empty() {
        return Ok(out);
    }
    backend.reset(2, prompt.len() + completion.len())?;
    let mut feed: Vec<u32> = prompt.to_vec();
    let mut start = 0;
    for &token in completion {
        let spans = [RowSpan { start, len: feed.len(), steered: false }, RowSpan { start, len: feed.len(), steered: true }];
        let req = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: feed.clone() }, SeqStep { slot: 1, tokens: feed.clone() }],
            injections: steer::injections(vectors, site, positions, &spans),
            captures: Vec::new(),
            logits: LogitRows::Last,
        };
        let logits = backend.step(&req).await?.logits; // [2, V]
        out.push(position_change(&logits[v..2 * v], &logits[..v], token, top));
        start += feed.len();
        feed = vec![token];
    }
    Ok(out)
}

/// One layer of a prompt read through the logit lens, unsteered and steered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LensLayer {
    /// 0..n_layer: `hidden_states[layer]` (resid_pre); n_layer: the model's output.
    pub layer: usize,
    /// ‖resid_pre‖ at every prompt position, unsteered and steered (empty at the output).
    pub norms: Vec<f64>,
    pub steered_norms: Vec<f64>,
    /// The top tokens of the last position's residual through the final norm and the
    /// unembedding (at the output: the model's own logits), unsteered and steered.
    pub top: Vec<VocabEntry>,
    pub steered_top: Vec<VocabEntry>,
}

/// The steering tensor at one of its layers, read the same way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LensSteering {
    pub layer: usize,
    /// ‖row‖ of the steering tensor at each of its positions.
    pub norms: Vec<f64>,
    /// Its vector (Σ coeff × activation at each term's last token) through the final norm and
    /// the unembedding: top tokens first, then the bottom ones.
    pub top: Vec<VocabEntry>,
    pub bottom: Vec<VocabEntry>,
}

/// Where a prompt sits and what it predicts layer by layer: one step with the prompt in two
/// slots, the second steered by `vectors` as generation steers it, capturing at every layer
/// each row's norm (projecting captures) and the last row (for the logit lens); then the
/// steering tensor's own norms and lens. `k` tokens per list.
pub async fn prompt_lens<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    prompt: &[u32],
    vectors: &[LayerVector],
    site: Site,
    positions: Positions,
    k: usize,
) -> Result<(Vec<LensLayer>, Vec<LensSteering>)> {
    let spec = *backend.config();
    if prompt.is_empty() {
        return Err(TillerError::input("the prompt has no tokens: type one, or turn BOS on".to_string()));
    }
    if prompt.len() > spec.n_positions {
        return Err(TillerError::input(format!(
            "the prompt is {} tokens, past the model's context of {}: shorten it",
            prompt.len(),
            spec.n_positions
        )));
    }
    steer::check_fits(vectors, prompt.len(), positions)?;
    let (m, n, c, v) = (prompt.len(), spec.n_layer, spec.n_embd, spec.vocab_size);
    backend.reset(2, m)?;
    let spans = [RowSpan { start: 0, len: m, steered: false }, RowSpan { start: 0, len: m, steered: true }];
    let mut captures: Vec<Capture> = (0..n).map(|l| Capture::project(l, Site::ResidPre, vec![0.0; c])).collect();
    captures.extend((0..n).map(|l| Capture::rows(l, Site::ResidPre, None, RowSelect::Last)));
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: prompt.to_vec() }, SeqStep { slot: 1, tokens: prompt.to_vec() }],
        injections: steer::injections(vectors, site, positions, &spans),
        captures,
        logits: LogitRows::Last,
    };
    let out = backend.step(&req).await?;
    let k = k.clamp(1, 100);
    let mut layers = Vec::with_capacity(n + 1);
    for l in 0..n {
        let norms: Vec<f64> = out.captured[l].chunks_exact(2).map(|p| p[1] as f64).collect();
        let scores = backend.unembed(&out.captured[n + l], true).await?; // [2, V]
        layers.push(LensLayer {
            layer: l,
            norms: norms[..m].to_vec(),
            steered_norms: norms[m..].to_vec(),
            top: entries(tok, &scores[..v], k, false),
            steered_top: entries(tok, &scores[v..], k, false),
        });
    }
    layers.push(LensLayer {
        layer: n,
        norms: Vec::new(),
        steered_norms: Vec::new(),
        top: entries(tok, &out.logits[..v], k, false),
        steered_top: entries(tok, &out.logits[v..2 * v], k, false),
    });
    let mut steering = Vec::new();
    // A head's steering is head size: neither a residual norm nor a vocabulary.
    for lv in vectors.iter().filter(|v| v.head.is_none()) {
        let norms = lv.rows.chunks_exact(c).map(|r| r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()).collect();
        let scores = backend.unembed(&lv.last, true).await?;
        steering.push(LensSteering {
            layer: lv.layer,
            norms,
            top: entries(tok, &scores, k, false),
            bottom: entries(tok, &scores, k, true),
        });
    }
    Ok((layers, steering))
}

/// The indices of the `k` texts with the largest max by `by`, largest first (ties: the
/// earlier text first).
pub fn top_texts(projections: &[TextProjection], by: Measure, k: usize) -> Vec<usize> {
    let maxes: Vec<f32> = projections.iter().map(|p| p.max(by).0).collect();
    top_k_indices(&maxes, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_mean_and_top_texts() {
        let p = |dot: &[f32]| TextProjection { dot: dot.to_vec(), cosine: dot.iter().map(|x| x / 10.0).collect() };
        let ps = [p(&[1.0, 3.0, 2.0]), p(&[-1.0]), p(&[3.0, 0.0]), p(&[5.0, -5.0])];
        assert_eq!(ps[0].max(Measure::Dot), (3.0, 1));
        assert!((ps[0].mean(Measure::Dot) - 2.0).abs() < 1e-12);
        assert_eq!(top_texts(&ps, Measure::Dot, 3), vec![3, 0, 2]);
        assert_eq!(top_texts(&ps, Measure::Cosine, 10), vec![3, 0, 2, 1]);
    }
}
