//! ActAdd steering vectors and where they go (docs/SEMANTICS.md, "ActAdd").
//!
//! 1. Each term's text is tokenized (BOS-prefixed when on); terms that share a layer are
//!    right-padded to that layer's longest term with the token the tokenizer gives a single
//!    space (220 for GPT-2 and Llama 3), as the authors' `tokens_right` padding does.
//! 2. The padded texts run through the unsteered model; the activation at the recipe's site of
//!    their layer is captured, scaled by the coefficient and summed per layer: a [n, C] tensor.
//! 3. During generation that tensor is added at positions 0..n of the prompt (mode `front`).
//!    Modes `all` and `last` add one vector per layer instead: the sum over terms of
//!    coefficient × the activation at the term's own last (unpadded) token.

use crate::backend::{Backend, Capture, Injection, LogitRows, SeqStep, Site, StepRequest};
use crate::error::{Result, TillerError};
use crate::recipe::{Positions, Recipe, Term};
use crate::tokenizer::Tokenizer;

/// The steering tensor of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerVector {
    pub layer: usize,
    /// Padded length n of this layer's terms.
    pub n: usize,
    /// [n, C]: Σ coeff × activation of the padded text, per position.
    pub rows: Vec<f32>,
    /// [C]: Σ coeff × activation at each term's last real token (modes `all` and `last`).
    pub last: Vec<f32>,
    /// Each term's padded tokens, in recipe order.
    pub term_tokens: Vec<Vec<u32>>,
    /// Tokens each term had before padding.
    pub unpadded_lens: Vec<usize>,
    /// Where this vector goes, when not where the recipe says (a saved vector steers at its
    /// own site, by default at every position).
    pub site: Option<Site>,
    pub positions: Option<Positions>,
    /// One attention head's output (site z): rows and `last` are head size.
    pub head: Option<usize>,
}

impl LayerVector {
    /// A saved vector × coefficient at a layer: its `front` tensor when it has one ([n, C]),
    /// else the vector as a one-position tensor.
    pub fn from_saved(layer: usize, coeff: f32, vector: &[f32], front: Option<(usize, &[f32])>, site: Site, positions: Positions) -> Self {
        let scaled = |v: &[f32]| v.iter().map(|x| x * coeff).collect::<Vec<f32>>();
        let (n, rows) = match front {
            Some((n, rows)) => (n, scaled(rows)),
            None => (1, scaled(vector)),
        };
        Self {
            layer,
            n,
            rows,
            last: scaled(vector),
            term_tokens: Vec::new(),
            unpadded_lens: Vec::new(),
            site: Some(site),
            positions: Some(positions),
            head: None,
        }
    }
}

/// Tokenizes a text as the recipe does (BOS first when on).
pub fn encode_with_bos(tok: &Tokenizer, text: &str, bos: bool) -> Result<Vec<u32>> {
    let mut ids = if bos { vec![tok.bos_id()?] } else { Vec::new() };
    ids.extend(tok.encode(text)?);
    Ok(ids)
}

/// How steering texts become tokens: raw (BOS first when on), or each rendered through the
/// model's chat template exactly as the prompt is (the user message, after the system message
/// when there is one, with the generation prompt; the template writes its own BOS). Templated
/// texts share the template's tokens at the front, so under `Positions::Front` a pair's
/// difference lines up with the prompt's own template and cancels there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextEncoding {
    pub bos: bool,
    /// `Some(system)`: through the chat template (an empty system message is left out).
    pub chat: Option<String>,
}

impl From<bool> for TextEncoding {
    fn from(bos: bool) -> Self {
        Self { bos, chat: None }
    }
}

impl TextEncoding {
    /// How a recipe's steering texts are encoded: templated when chat and `chat_terms` are on.
    pub fn of_terms(recipe: &Recipe) -> Self {
        Self { bos: recipe.bos, chat: (recipe.chat && recipe.chat_terms).then(|| recipe.system.clone()) }
    }

    pub fn encode(&self, tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        match &self.chat {
            Some(system) => tok.encode(&tok.render_chat(Some(system.as_str()).filter(|s| !s.is_empty()), text)?),
            None => encode_with_bos(tok, text, self.bos),
        }
    }
}

/// One term of a layer group: (coefficient, padded tokens, tokens before padding, the head it
/// steers when it steers one).
pub type PaddedTerm = (f32, Vec<u32>, usize, Option<usize>);

/// Terms grouped by layer (ascending), each group with its padded tokens.
pub fn padded_terms(tok: &Tokenizer, terms: &[Term], encoding: impl Into<TextEncoding>) -> Result<Vec<(usize, Vec<PaddedTerm>)>> {
    let encoding = encoding.into();
    let mut layers: Vec<usize> = terms.iter().map(|t| t.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    let mut out = Vec::new();
    for layer in layers {
        let mut group = Vec::new();
        for t in terms.iter().filter(|t| t.layer == layer) {
            // An empty text (without BOS) is all padding: " weddings" − "" contrasts with spaces.
            let ids = encoding.encode(tok, &t.text)?;
            let len = ids.len();
            group.push((t.coeff, ids, len, t.head));
        }
        let n = group.iter().map(|g| g.1.len()).max().unwrap_or(0);
        if n == 0 {
            return Err(TillerError::recipe(format!(
                "the steering texts at layer {layer} are all empty: give one some text or turn BOS on"
            )));
        }
        for g in &mut group {
            g.1.resize(n, tok.pad_id());
        }
        out.push((layer, group));
    }
    Ok(out)
}

/// Runs each layer's padded terms (as one batch per layer) and builds the steering tensors.
pub async fn steering_vectors<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    terms: &[Term],
    encoding: impl Into<TextEncoding>,
    site: Site,
) -> Result<Vec<LayerVector>> {
    crate::recipe::check_site(site)?;
    let spec = *backend.config();
    let mut out = Vec::new();
    for (layer, group) in padded_terms(tok, terms, encoding)? {
        let n = group[0].1.len();
        if n > spec.n_positions {
            let (i, longest) = group.iter().enumerate().max_by_key(|(_, g)| g.2).map(|(i, g)| (i, g.2)).unwrap_or((0, n));
            let text = terms.iter().filter(|t| t.layer == layer).nth(i).map(|t| t.text.as_str()).unwrap_or_default();
            let shown: String = text.chars().take(40).collect();
            let more = if text.chars().count() > 40 { "…" } else { "" };
            return Err(TillerError::recipe(format!(
                "the steering text `{shown}{more}` at layer {layer} is {longest} tokens, longer than the model's context of {}: use a shorter text",
                spec.n_positions
            )));
        }
        // One tensor per head steered at this layer (None: the site itself), in term order.
        let mut heads: Vec<Option<usize>> = Vec::new();
        for g in &group {
            if !heads.contains(&g.3) {
                heads.push(g.3);
            }
        }
        backend.reset(group.len(), n)?;
        let req = StepRequest {
            seqs: group.iter().enumerate().map(|(slot, g)| SeqStep { slot, tokens: g.1.clone() }).collect(),
            injections: Vec::new(),
            captures: heads
                .iter()
                .map(|&h| match h {
                    None => Capture::all(layer, site),
                    Some(h) => Capture::rows(layer, Site::Z, Some(h), crate::backend::RowSelect::All),
                })
                .collect(),
            logits: LogitRows::None,
        };
        let captured = backend.step(&req).await?.captured;
        for (&head, act) in heads.iter().zip(&captured) {
            // (terms × n, c): every term's rows, read at this head (or the site).
            let c = if head.is_some() { spec.head_dim } else { spec.n_embd };
            let mut rows = vec![0.0f32; n * c];
            let mut last = vec![0.0f32; c];
            let members: Vec<(usize, &PaddedTerm)> = group.iter().enumerate().filter(|(_, g)| g.3 == head).collect();
            for &(k, (coeff, _, len, _)) in &members {
                let base = k * n * c;
                for (i, r) in rows.iter_mut().enumerate() {
                    *r += coeff * act[base + i];
                }
                let at = base + ((*len).max(1) - 1) * c;
                for (i, v) in last.iter_mut().enumerate() {
                    *v += coeff * act[at + i];
                }
            }
            out.push(LayerVector {
                layer,
                n,
                rows,
                last,
                unpadded_lens: members.iter().map(|(_, g)| g.2).collect(),
                term_tokens: members.iter().map(|(_, g)| g.1.clone()).collect(),
                site: head.map(|_| Site::Z),
                positions: None,
                head,
            });
        }
    }
    Ok(out)
}

/// A recipe's saved-vector terms as steering tensors (one position each).
pub fn vector_terms(terms: &[crate::recipe::VectorTerm]) -> Vec<LayerVector> {
    terms
        .iter()
        .map(|t| LayerVector { head: t.head, ..LayerVector::from_saved(t.layer, t.coeff, &t.values, None, t.site, t.positions) })
        .collect()
}

/// Checks that `front` vectors fit the prompt (n ≤ m).
pub fn check_fits(vectors: &[LayerVector], prompt_len: usize, positions: Positions) -> Result<()> {
    for v in vectors {
        if v.positions.unwrap_or(positions) == Positions::Front && v.n > prompt_len {
            return Err(TillerError::recipe(format!(
                "the steering text at layer {} is {} tokens but the prompt is only {prompt_len}: ActAdd adds the vector at \
                 the prompt's first {} positions, so shorten the steering text or lengthen the prompt",
                v.layer, v.n, v.n
            )));
        }
    }
    Ok(())
}

/// One sequence of a step, as the injection schedule sees it.
#[derive(Debug, Clone, Copy)]
pub struct RowSpan {
    /// Absolute position of the sequence's first new token.
    pub start: usize,
    /// New tokens.
    pub len: usize,
    /// Whether this sequence is steered.
    pub steered: bool,
}

/// The injections for one step of a batch: which rows get which steering rows.
pub fn injections(vectors: &[LayerVector], site: Site, positions: Positions, spans: &[RowSpan]) -> Vec<Injection> {
    let rows: usize = spans.iter().map(|s| s.len).sum();
    let mut out = Vec::new();
    for v in vectors {
        let positions = v.positions.unwrap_or(positions);
        let mut row_map = vec![u32::MAX; rows];
        let mut r = 0;
        for s in spans {
            for i in 0..s.len {
                let pos = s.start + i;
                if s.steered {
                    row_map[r] = match positions {
                        Positions::Front if pos < v.n => pos as u32,
                        Positions::All => 0,
                        Positions::Last if i + 1 == s.len => 0,
                        _ => u32::MAX,
                    };
                }
                r += 1;
            }
        }
        if row_map.iter().all(|&m| m == u32::MAX) {
            continue;
        }
        let table = match positions {
            Positions::Front => v.rows.clone(),
            Positions::All | Positions::Last => v.last.clone(),
        };
        out.push(Injection { head: v.head, ..Injection::add(v.layer, v.site.unwrap_or(site), table, row_map) });
    }
    out
}

/// The prompt as the model reads it: the chat template rendered around it when chat is on
/// (the template writes its own BOS), else the raw text.
pub fn prompt_text(tok: &Tokenizer, recipe: &Recipe) -> Result<String> {
    if recipe.chat {
        let system = Some(recipe.system.as_str()).filter(|s| !s.is_empty());
        tok.render_chat(system, &recipe.prompt)
    } else {
        Ok(recipe.prompt.clone())
    }
}

/// Prompt tokens of a recipe (BOS first when on; the rendered chat template when chat is on),
/// checked against the context.
pub fn prompt_tokens(tok: &Tokenizer, recipe: &Recipe, n_positions: usize) -> Result<Vec<u32>> {
    let ids = if recipe.chat { tok.encode(&prompt_text(tok, recipe)?)? } else { encode_with_bos(tok, &recipe.prompt, recipe.bos)? };
    if ids.is_empty() {
        return Err(TillerError::recipe("the prompt is empty: type a prompt or turn BOS on".to_string()));
    }
    if ids.len() + recipe.max_new_tokens > n_positions {
        return Err(TillerError::recipe(format!(
            "the prompt is {} tokens and {} new tokens are asked for, past the model's context of {n_positions}: \
             shorten the prompt or ask for fewer tokens",
            ids.len(),
            recipe.max_new_tokens
        )));
    }
    Ok(ids)
}
