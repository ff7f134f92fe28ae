//! Side-by-side generation: n unsteered and n steered completions of one prompt, in one batch,
//! comparison i of both sides drawing from the same seeded stream.
//!
//! Cache slots: 0..n unsteered, n..2n steered. The prompt pass carries the injections; decode
//! steps carry them only in modes `all` and `last` (in `front` the positions 0..n are all in the
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
    let vectors = steer::steering_vectors(backend, tok, &recipe.terms, recipe.bos, recipe.site).await?;
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
    // Slots whose sequence goes on, and each one's next input.
    let mut active: Vec<(usize, Vec<u32>)> = (0..2 * n).map(|s| (s, prompt.to_vec())).collect();
    let mut step = 0;
    while !active.is_empty() {
        let spans: Vec<RowSpan> =
            active.iter().map(|(slot, toks)| RowSpan { start: backend.slot_len(*slot), len: toks.len(), steered: *slot >= n }).collect();
        let req = StepRequest {
            seqs: active.iter().map(|(slot, toks)| SeqStep { slot: *slot, tokens: toks.clone() }).collect(),
            injections: steer::injections(vectors, recipe.site, recipe.positions, &spans),
            capture: None,
            logits: LogitRows::Last,
        };
        let logits = backend.step(&req).await?.logits; // (active, V)
        let v = backend.config().vocab_size;
        step += 1;
        let mut next = Vec::with_capacity(active.len());
        for (k, (slot, _)) in active.iter().enumerate() {
            let token = samplers[*slot].sample(&logits[k * v..(k + 1) * v]);
            let completion = if *slot < n { &mut gen.unsteered[*slot] } else { &mut gen.steered[*slot - n] };
            let stop = recipe.stop_at_eot && tok.eos_ids().contains(&token);
            if !stop {
                completion.tokens.push(token);
                completion.text = tok.decode(&completion.tokens)?;
            }
            if stop || step >= recipe.max_new_tokens {
                completion.done = true;
            } else {
                next.push((*slot, vec![token]));
            }
        }
        active = next;
        if on_step(&gen) == Flow::Stop {
            break;
        }
    }
    Ok(gen)
}
