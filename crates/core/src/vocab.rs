//! Decoded vocabulary of a steering tensor: the top and bottom tokens of `v · wteᵀ` for each
//! position of a layer's [n, C] tensor and for their sum, optionally after `ln_f` (the logit
//! lens). A heuristic for what a vector "means", not a decoding of it.

use serde::Serialize;

use crate::backend::{Backend, Site};
use crate::error::Result;
use crate::recipe::Term;
use crate::sample::top_k_indices;
use crate::steer;
use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VocabEntry {
    pub id: u32,
    pub token: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerVocab {
    pub layer: usize,
    /// Top-K per position of the padded tensor.
    pub positions: Vec<Vec<VocabEntry>>,
    /// Bottom-K per position (most negative first).
    pub positions_bottom: Vec<Vec<VocabEntry>>,
    /// Top-K of the sum over positions.
    pub sum: Vec<VocabEntry>,
    /// Bottom-K of the sum over positions (most negative first).
    pub bottom: Vec<VocabEntry>,
    /// The padded tokens of each term, as text, for labelling positions.
    pub term_tokens: Vec<Vec<String>>,
}

pub(crate) fn entries(tok: &Tokenizer, scores: &[f32], k: usize, bottom: bool) -> Vec<VocabEntry> {
    let picked = if bottom {
        let neg: Vec<f32> = scores.iter().map(|s| -s).collect();
        top_k_indices(&neg, k)
    } else {
        top_k_indices(scores, k)
    };
    picked.into_iter().map(|i| VocabEntry { id: i as u32, token: tok.token_text(i as u32), score: scores[i] }).collect()
}

/// The decoded vocabulary of every layer that has terms.
pub async fn decode_vocab<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    terms: &[Term],
    encoding: impl Into<steer::TextEncoding>,
    site: Site,
    k: usize,
    apply_ln_f: bool,
) -> Result<Vec<LayerVocab>> {
    let (c, v) = (backend.config().n_embd, backend.config().vocab_size);
    let vectors = steer::steering_vectors(backend, tok, terms, encoding, site).await?;
    let mut out = Vec::new();
    // A head's steering (head size) is not in the residual stream: it has no vocabulary here.
    for lv in vectors.into_iter().filter(|v| v.head.is_none()) {
        // Rows: each position, then the sum over positions.
        let mut rows = lv.rows.clone();
        let mut sum = vec![0.0f32; c];
        for row in lv.rows.chunks_exact(c) {
            for (s, x) in sum.iter_mut().zip(row) {
                *s += x;
            }
        }
        rows.extend_from_slice(&sum);
        let scores = backend.unembed(&rows, apply_ln_f).await?; // (n + 1, V)
        let row = |p: usize| &scores[p * v..(p + 1) * v];
        out.push(LayerVocab {
            layer: lv.layer,
            positions: (0..lv.n).map(|p| entries(tok, row(p), k, false)).collect(),
            positions_bottom: (0..lv.n).map(|p| entries(tok, row(p), k, true)).collect(),
            sum: entries(tok, row(lv.n), k, false),
            bottom: entries(tok, row(lv.n), k, true),
            term_tokens: lv.term_tokens.iter().map(|t| t.iter().map(|&id| tok.token_text(id)).collect()).collect(),
        });
    }
    Ok(out)
}

/// The decoded vocabulary of one saved vector ([W] = `n_embd`): (top K, bottom K) of
/// `v · Wᵀ`, after the final norm when `apply_ln_f`.
pub async fn decode_vector<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    vector: &[f32],
    k: usize,
    apply_ln_f: bool,
) -> Result<(Vec<VocabEntry>, Vec<VocabEntry>)> {
    let c = backend.config().n_embd;
    if vector.len() != c {
        return Err(crate::error::TillerError::input(format!(
            "the vector is {} wide but this model's residual stream is {c}: it was made on another model",
            vector.len()
        )));
    }
    let scores = backend.unembed(vector, apply_ln_f).await?;
    Ok((entries(tok, &scores, k, false), entries(tok, &scores, k, true)))
}
