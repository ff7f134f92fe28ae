//! Sweeping MELBO's radius R (the Llama-3.2-1B replication's "goldilocks" R): for each R,
//! K vectors are trained as [`super::train`] does, each prompt is completed greedily with each
//! vector added, and two numbers are read off those completions:
//!
//! - **diversity**: 1 − the mean cosine similarity over pairs of one prompt's completions (the
//!   K steered ones), averaged over prompts. A completion's embedding is the loaded model's
//!   own last-layer hidden state (the residual stream after the last block, before the final
//!   norm) averaged over the completion's tokens, read with the prompt before them and no
//!   vector added. A documented heuristic, not a sentence-embedding model: at a small R every
//!   vector gives nearly the unsteered text (diversity near 0); past the goldilocks R they
//!   differ.
//! - **coherence proxy**: the unsteered model's perplexity of each completion given its prompt
//!   (exp of the mean negative log-likelihood of the completion's tokens), averaged. Text the
//!   model itself finds unlikely has stopped being coherent.
//!
//! Every R starts its vectors from the same seeded random directions, so the points differ
//! only by R.

use serde::{Deserialize, Serialize};

use super::{bad, completions_with, MelboVector};
use crate::backend::{Backend, Capture, LogitRows, SeqStep, Site, StepRequest};
use crate::error::Result;
use crate::recipe::Sampling;
use crate::Tokenizer;

/// The most radii one sweep takes.
pub const MAX_RADII: usize = 64;

/// Parses a list of radii, `1,2,4.5` (commas or spaces): each positive and at most 1e6, in
/// the order given, no repeats.
pub fn parse_radii(s: &str) -> Result<Vec<f64>> {
    let mut out: Vec<f64> = Vec::new();
    for part in s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
        let r: f64 = part.parse().map_err(|_| bad(format!("{part:?} in the list of radii is not a number")))?;
        if !(r.is_finite() && r > 0.0 && r <= 1e6) {
            return Err(bad(format!("the radius {part} must be a positive number up to 1e6")));
        }
        if out.contains(&r) {
            return Err(bad(format!("the radius {part} is in the list twice")));
        }
        out.push(r);
    }
    if out.is_empty() {
        return Err(bad("give at least one radius, e.g. 1,2,4,8"));
    }
    if out.len() > MAX_RADII {
        return Err(bad(format!("{} radii is more than {MAX_RADII} in one sweep", out.len())));
    }
    Ok(out)
}

/// One completion read by the unsteered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub text: String,
    /// exp(mean NLL) of its tokens given the prompt, unsteered; None for an empty completion.
    pub perplexity: Option<f64>,
    /// Its mean last-layer hidden state [C] (not serialised: it is long).
    #[serde(skip)]
    pub embedding: Vec<f64>,
}

/// The cosine of two f64 vectors; 0 when either is zero.
fn cos64(a: &[f64], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// 1 − the mean pairwise cosine similarity of `embeddings` (pairs i < j); None for fewer
/// than two.
pub fn diversity(embeddings: &[&[f64]]) -> Option<f64> {
    let n = embeddings.len();
    if n < 2 {
        return None;
    }
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += cos64(embeddings[i], embeddings[j]);
        }
    }
    Some(1.0 - sum / (n * (n - 1) / 2) as f64)
}

/// Reads `completion` (tokens) after `prompt` with the unsteered model: its perplexity and
/// embedding (see the module's docs). One step over prompt + completion.
pub async fn read_completion<B: Backend>(backend: &mut B, tok: &Tokenizer, prompt: &[u32], completion: &[u32]) -> Result<Reading> {
    let spec = *backend.config();
    let (m, t) = (prompt.len(), prompt.len() + completion.len());
    if m == 0 {
        return Err(bad("the prompt has no tokens"));
    }
    let text = tok.decode(completion)?;
    if completion.is_empty() {
        return Ok(Reading { text, perplexity: None, embedding: vec![0.0; spec.n_embd] });
    }
    let tokens: Vec<u32> = prompt.iter().chain(completion).copied().collect();
    backend.reset(1, t)?;
    let last = spec.n_layer - 1;
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: tokens.clone() }],
        injections: Vec::new(),
        captures: [Site::ResidPre, Site::AttnOut, Site::MlpOut].map(|s| Capture::all(last, s)).into(),
        logits: LogitRows::All,
    };
    let out = backend.step(&req).await?;
    let v = out.logits.len() / t;
    let mut nll = 0.0;
    for pos in m - 1..t - 1 {
        let row = &out.logits[pos * v..(pos + 1) * v];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        nll += lse - row[tokens[pos + 1] as usize] as f64;
    }
    let perplexity = Some((nll / completion.len() as f64).exp());
    // resid_post of the last block = resid_pre + attn_out + mlp_out (sequential and parallel
    // blocks alike), averaged over the completion's rows.
    let c = spec.n_embd;
    let mut embedding = vec![0.0f64; c];
    for site in &out.captured {
        for row in site[m * c..t * c].chunks_exact(c) {
            for (e, &x) in embedding.iter_mut().zip(row) {
                *e += x as f64;
            }
        }
    }
    embedding.iter_mut().for_each(|e| *e /= completion.len() as f64);
    Ok(Reading { text, perplexity, embedding })
}

/// One R of a sweep: its vectors' completions (per vector, per prompt) and the two numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RadiusPoint {
    pub radius: f64,
    /// Per vector: f at the end of training.
    pub objectives: Vec<f64>,
    /// [vector][prompt]
    pub completions: Vec<Vec<Reading>>,
    /// Per prompt: the unsteered completion.
    pub unsteered: Vec<Reading>,
    /// None with one vector.
    pub diversity: Option<f64>,
    /// Mean perplexity of the steered completions (empty ones left out).
    pub perplexity: Option<f64>,
    /// Mean perplexity of the unsteered completions, the yardstick.
    pub unsteered_perplexity: Option<f64>,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Completes every prompt greedily (`new_tokens` tokens) without a vector and with each of
/// `vectors` (trained at `radius`, added at resid_pre of `source` at every position, coefficient
/// 1), reads each completion with the unsteered model and scores the point.
#[allow(clippy::too_many_arguments)]
pub async fn judge<B: Backend>(
    backend: &mut B,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    radius: f64,
    vectors: &[MelboVector],
    source: usize,
    new_tokens: usize,
) -> Result<RadiusPoint> {
    if prompts.is_empty() || vectors.is_empty() {
        return Err(bad("judging a radius needs at least one prompt and one vector"));
    }
    let mut completions: Vec<Vec<Reading>> = vec![Vec::with_capacity(prompts.len()); vectors.len()];
    let mut unsteered = Vec::with_capacity(prompts.len());
    for p in prompts {
        let mut base = None;
        for (k, v) in vectors.iter().enumerate() {
            let (u, s) = completions_with(backend, tok, p, &v.vector, source, 1.0, new_tokens, Sampling::greedy(), 0).await?;
            base.get_or_insert(u);
            completions[k].push(read_completion(backend, tok, p, &s.tokens).await?);
        }
        if let Some(base) = base {
            unsteered.push(read_completion(backend, tok, p, &base.tokens).await?);
        }
    }
    let diversity = mean((0..prompts.len()).filter_map(|j| {
        let e: Vec<&[f64]> = completions.iter().map(|c| c[j].embedding.as_slice()).collect();
        diversity(&e)
    }));
    Ok(RadiusPoint {
        radius,
        objectives: vectors.iter().map(|v| v.objective).collect(),
        perplexity: mean(completions.iter().flatten().filter_map(|r| r.perplexity)),
        unsteered_perplexity: mean(unsteered.iter().filter_map(|r| r.perplexity)),
        completions,
        unsteered,
        diversity,
    })
}

fn num(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// The sweep as CSV: a row per R (an empty cell where a number is missing).
pub fn to_csv(points: &[RadiusPoint]) -> String {
    let mut s = String::from("radius,vectors,diversity,perplexity,unsteered_perplexity,mean_objective\n");
    for p in points {
        let mean_f = mean(p.objectives.iter().copied());
        s.push_str(&format!(
            "{},{},{},{},{},{}\n",
            p.radius,
            p.objectives.len(),
            num(p.diversity),
            num(p.perplexity),
            num(p.unsteered_perplexity),
            num(mean_f)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radii_parse_and_refuse() {
        assert_eq!(parse_radii("1, 2 4.5").unwrap(), vec![1.0, 2.0, 4.5]);
        for bad in ["", " , ", "0", "-1", "nan", "inf", "2e6", "1,x", "1,1"] {
            assert!(parse_radii(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_radii(&(1..=65).map(|i| i.to_string()).collect::<Vec<_>>().join(",")).is_err());
    }

    #[test]
    fn diversity_is_one_minus_mean_pairwise_cosine() {
        let (a, b, c) = ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]);
        // cos(a,b) = 0, cos(a,c) = cos(b,c) = 1/√2
        let want = 1.0 - (2.0 / 2f64.sqrt()) / 3.0;
        assert!((diversity(&[&a, &b, &c]).unwrap() - want).abs() < 1e-12);
        assert_eq!(diversity(&[&a, &a]), Some(0.0));
        assert_eq!(diversity(&[&a]), None);
        // a zero embedding counts as cosine 0
        assert_eq!(diversity(&[&a, &[0.0, 0.0]]), Some(1.0));
    }

    #[test]
    fn csv_has_a_row_per_radius_and_blanks_for_nan() {
        let r = |t: &str, p: Option<f64>| Reading { text: t.into(), perplexity: p, embedding: vec![] };
        let p = RadiusPoint {
            radius: 2.5,
            objectives: vec![1.0, 3.0],
            completions: vec![vec![r("a", Some(4.0))], vec![r("b", None)]],
            unsteered: vec![r("c", Some(2.0))],
            diversity: None,
            perplexity: Some(4.0),
            unsteered_perplexity: Some(2.0),
        };
        assert_eq!(
            to_csv(&[p]),
            "radius,vectors,diversity,perplexity,unsteered_perplexity,mean_objective\n2.5,2,,4.000000,2.000000,2.000000\n"
        );
    }
}
