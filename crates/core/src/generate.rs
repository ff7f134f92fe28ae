//! Side-by-side generation: n unsteered and n steered completions of one prompt, in one batch,
//! comparison i of both sides drawing from the same seeded stream.
//!
//! Cache slots: 0..n unsteered, n..2n steered. The prompt runs once per side, in slots 0 and n,
//! and [`Backend::fork_slot`] copies each side's cache to its other slots. The prompt pass
//! carries the injections; decode steps carry them only in modes `all` and `last` (in `front` the positions 0..n are all in the
//! prompt, so later tokens see the change only through the cached keys and values).

use serde::Serialize;

use crate::backend::{Backend, LogitRows, SeqStep, StepRequest};
use crate::error::Result;
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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    pub unsteered: Vec<Completion>,
    pub steered: Vec<Completion>,
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
            let token = samplers[slot].sample(&logits[row * v..(row + 1) * v]);
            let completion = if slot < n { &mut gen.unsteered[slot] } else { &mut gen.steered[slot - n] };
            let stop = recipe.stop_at_eot && tok.eos_ids().contains(&token);
            if !stop {
                completion.tokens.push(token);
                completion.text = tok.decode(&completion.tokens)?;
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
        active = next.iter().enumerate().map(|(k, &(slot, _))| (slot, k)).collect();
    }
    Ok(gen)
}
