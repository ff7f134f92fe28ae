//! Side-by-side generation: n unsteered and n steered completions of one prompt, in one batch,
//! comparison i of both sides drawing from the same seeded stream.
//!
//! Cache slots: 0..n unsteered, n..2n steered. The prompt runs once per side, in slots 0 and n,
//! and [`Backend::fork_slot`] copies each side's cache to its other slots. The prompt pass
//! carries the injections; decode steps carry them only in modes `all` and `last` (in `front` the positions 0..n are all in the
//! prompt, so later tokens see the change only through the cached keys and values).

use serde::Serialize;

use crate::backend::{Backend, Capture, Injection, LogitRows, SeqStep, Site, StepRequest};
use crate::error::{Result, TillerError};
use crate::recipe::Recipe;
use crate::sample::Sampler;
use crate::steer::{self, LayerVector, RowSpan};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Completion {
    /// The continuation only, decoded.
    pub text: String,
    /// The continuation's token ids.
    pub tokens: Vec<u32>,
    /// True once the sequence stopped (max tokens, or `<|endoftext|>` when asked).
    pub done: bool,
    /// Per token: the probability the model gave it (softmax of its logits at temperature 1,
    /// before any sampling filter), given the prefix.
    pub probs: Vec<f32>,
    /// Per token: how many characters of `text` there are once it is decoded (a token that
    /// completes a character split across tokens carries it; one that only starts it adds
    /// none), so the page can show each token's share of the text.
    pub ends: Vec<usize>,
}

/// The probability softmax(`logits`) gives `token`, in f64.
pub fn token_probability(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z: f64 = logits.iter().map(|&x| libm::exp(x as f64 - max)).sum();
    logits.get(token as usize).map_or(0.0, |&l| (libm::exp(l as f64 - max) / z) as f32)
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    pub unsteered: Vec<Completion>,
    pub steered: Vec<Completion>,
}

/// Where a pass of `tokens` (one sequence, with `injections` for its rows) first holds a value
/// that is not finite: the first (layer, site) in the order the model reaches them, or None
/// when every hooked activation is finite (then it is the final norm or the unembedding).
pub async fn first_non_finite<B: Backend>(backend: &mut B, tokens: &[u32], injections: Vec<Injection>) -> Result<Option<(usize, Site)>> {
    let spec = *backend.config();
    let sites = [Site::ResidPre, Site::Z, Site::AttnOut, Site::MlpOut];
    backend.reset(1, tokens.len().max(1))?;
    let captures: Vec<Capture> = (0..spec.n_layer).flat_map(|l| sites.map(|s| Capture::all(l, s))).collect();
    let req = StepRequest { seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }], injections, captures, logits: LogitRows::None };
    let out = backend.step(&req).await?;
    Ok(out.captured.iter().position(|c| c.iter().any(|x| !x.is_finite())).map(|i| (i / sites.len(), sites[i % sites.len()])))
}

/// Where a traced pass found the first value that is not finite ([`first_non_finite`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traced {
    At(usize, Site),
    /// Every hooked activation was finite.
    AfterTheBlocks,
    NotTraced,
}

/// The error for logits that are not finite, naming where they first appeared and what to do.
pub fn non_finite_error(what: &str, at: Traced) -> TillerError {
    let place = match at {
        Traced::At(l, s) => format!(", first at layer {l}'s {}", s.as_str()),
        Traced::AfterTheBlocks => ", only after the last block (the final norm or the unembedding)".to_string(),
        Traced::NotTraced => String::new(),
    };
    TillerError::input(format!(
        "the model's next-token scores hold NaN or infinity {what}{place}: the run was stopped rather than rank them; \
         the steering or the weights overflow there: lower the coefficients, or check the model file"
    ))
}

/// Whether every value is finite.
pub fn all_finite(values: &[f32]) -> bool {
    values.iter().all(|x| x.is_finite())
}

/// Whether the caller wants generation to go on after a step (a Stop button answers `Stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Generates, calling `on_step` with the completions so far after every step.
pub async fn generate<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    recipe: &Recipe,
    mut on_step: impl FnMut(&Generation) -> Flow,
) -> Result<Generation> {
    let cfg = *backend.config();
    recipe.validate(&cfg)?;
    let prompt = steer::prompt_tokens(tok, recipe, cfg.n_positions)?;
    let mut vectors = steer::steering_vectors(backend, tok, &recipe.terms, steer::TextEncoding::of_terms(recipe), recipe.site).await?;
    vectors.extend(steer::vector_terms(&recipe.vectors));
    steer::check_fits(&vectors, prompt.len(), recipe.positions)?;
    generate_with_vectors(backend, tok, recipe, &prompt, &vectors, &mut on_step).await
}

/// Generation with steering vectors already computed (a re-run, or a sweep).
pub async fn generate_with_vectors<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    recipe: &Recipe,
    prompt: &[u32],
    vectors: &[LayerVector],
    on_step: &mut dyn FnMut(&Generation) -> Flow,
) -> Result<Generation> {
    let n = recipe.n;
    let m = prompt.len();
    backend.reset(2 * n, m + recipe.max_new_tokens)?;
    let mut samplers: Vec<Sampler> = (0..2 * n).map(|i| Sampler::new(recipe.sampling, recipe.seed, (i % n) as u64, prompt)).collect();
    let mut gen =
        Generation { prompt_tokens: prompt.to_vec(), unsteered: vec![Completion::default(); n], steered: vec![Completion::default(); n] };
    if recipe.max_new_tokens == 0 {
        return Ok(gen);
    }
    let v = backend.config().vocab_size;
    // The prompt runs once per side (slots 0 and n); its caches are then copied to the side's
    // other slots, and every slot samples its first token from its side's logits.
    let sides = [0, n];
    let spans: Vec<RowSpan> = sides.iter().map(|&slot| RowSpan { start: 0, len: m, steered: slot >= n }).collect();
    let req = StepRequest {
        seqs: sides.iter().map(|&slot| SeqStep { slot, tokens: prompt.to_vec() }).collect(),
        injections: steer::injections(vectors, recipe.site, recipe.positions, &spans),
        captures: Vec::new(),
        logits: LogitRows::Last,
    };
    let mut logits = backend.step(&req).await?.logits; // (2, V)
    if !all_finite(&logits) {
        // Which side, and where: the unsteered model alone, or the steered prompt.
        let side = if all_finite(&logits[..v]) { (n, "on the steered prompt") } else { (0, "on the prompt, unsteered") };
        let spans = [RowSpan { start: 0, len: m, steered: side.0 >= n }];
        let at = first_non_finite(backend, prompt, steer::injections(vectors, recipe.site, recipe.positions, &spans)).await?;
        return Err(non_finite_error(side.1, at.map_or(Traced::AfterTheBlocks, |(l, s)| Traced::At(l, s))));
    }
    for s in 1..n {
        backend.fork_slot(0, s)?;
        backend.fork_slot(n, n + s)?;
    }
    // (slot, its row of `logits`) of every sequence that goes on.
    let mut active: Vec<(usize, usize)> = (0..2 * n).map(|slot| (slot, usize::from(slot >= n))).collect();
    let mut step = 0;
    loop {
        step += 1;
        let mut next = Vec::with_capacity(active.len());
        for &(slot, row) in &active {
            let row_logits = &logits[row * v..(row + 1) * v];
            let token = samplers[slot].sample(row_logits);
            let completion = if slot < n { &mut gen.unsteered[slot] } else { &mut gen.steered[slot - n] };
            let stop = recipe.stop_at_eot && tok.eos_ids().contains(&token);
            if !stop {
                completion.tokens.push(token);
                completion.text = tok.decode(&completion.tokens)?;
                completion.probs.push(token_probability(row_logits, token));
                let before = completion.ends.last().copied().unwrap_or(0);
                completion.ends.push(completion.text.chars().count().max(before));
            }
            if stop || step >= recipe.max_new_tokens {
                completion.done = true;
            } else {
                next.push((slot, token));
            }
        }
        if on_step(&gen) == Flow::Stop || next.is_empty() {
            break;
        }
        let spans: Vec<RowSpan> =
            next.iter().map(|&(slot, _)| RowSpan { start: backend.slot_len(slot), len: 1, steered: slot >= n }).collect();
        let req = StepRequest {
            seqs: next.iter().map(|&(slot, token)| SeqStep { slot, tokens: vec![token] }).collect(),
            injections: steer::injections(vectors, recipe.site, recipe.positions, &spans),
            captures: Vec::new(),
            logits: LogitRows::Last,
        };
        logits = backend.step(&req).await?.logits; // (active, V)
        if !all_finite(&logits) {
            return Err(non_finite_error(&format!("at generated token {}", step + 1), Traced::NotTraced));
        }
        active = next.iter().enumerate().map(|(k, &(slot, _))| (slot, k)).collect();
    }
    Ok(gen)
}

#[cfg(test)]
mod tests {
    use super::token_probability;

    #[test]
    fn token_probability_is_the_softmax_at_the_token() {
        let logits = [0.0f32, 2f32.ln(), 5f32.ln(), f32::NEG_INFINITY];
        assert!((token_probability(&logits, 0) - 0.125).abs() < 1e-7);
        assert!((token_probability(&logits, 2) - 0.625).abs() < 1e-7);
        assert_eq!(token_probability(&logits, 3), 0.0);
        // Large logits do not overflow; a token past the row has no probability.
        assert!((token_probability(&[1000.0, 1000.0], 1) - 0.5).abs() < 1e-7);
        assert_eq!(token_probability(&[1.0], 5), 0.0);
    }
}
