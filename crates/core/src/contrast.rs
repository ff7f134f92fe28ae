//! Steering vectors from many contrast pairs: CAA's mean difference (Rimsky et al.) and
//! repeng's principal components (docs/SEMANTICS.md, "CAA and PCA vectors").
//!
//! For pair i, `d_i = act(positive_i) − act(negative_i)` at one (layer, site), where act is the
//! activation at the text's last token, or the mean over all its tokens (BOS included when
//! the text has one: [`TokenChoice`]). Then, in f64:
//! - `mean_diff`: `μ = mean_i d_i`;
//! - `pca_diff`: the first principal component of the d_i, centred (scikit-learn's PCA on the
//!   differences, as repeng's `pca_diff`);
//! - `pca_center`: the first principal component of the d_i *uncentred* — repeng's
//!   `pca_center` centres each pair on its own midpoint, leaving the rows ±d_i/2, whose
//!   covariance is Σ d_i d_iᵀ / 2n, so its component is this one.
//!
//! A component u (unit) has its sign chosen so that u·μ ≥ 0, and is scaled to ‖μ‖, so the
//! three methods give vectors of the same size and a coefficient means the same for each.
//!
//! Texts run as capture-only steps, many sequences per step (each in its own cache slot); the
//! step stops at the captured layer.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Capture, LogitRows, RowSelect, SeqStep, Site, StepRequest};
use crate::error::{Result, TillerError};
use crate::generate::Flow;

/// How the per-pair differences become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    MeanDiff,
    PcaDiff,
    PcaCenter,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::MeanDiff, Method::PcaDiff, Method::PcaCenter];
    pub fn as_str(self) -> &'static str {
        match self {
            Method::MeanDiff => "mean_diff",
            Method::PcaDiff => "pca_diff",
            Method::PcaCenter => "pca_center",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Which token's activation stands for a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenChoice {
    /// The last token (CAA, repeng).
    #[default]
    Last,
    /// The mean over every token of the text, as the model reads it (BOS too, when on).
    Mean,
}

impl TokenChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenChoice::Last => "last",
            TokenChoice::Mean => "mean",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "last" => Some(Self::Last),
            "mean" => Some(Self::Mean),
            _ => None,
        }
    }
}

/// A vector made from pairs, with what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContrastVector {
    pub layer: usize,
    pub site: Site,
    pub method: Method,
    pub token: TokenChoice,
    pub n_pairs: usize,
    /// [W]
    pub vector: Vec<f32>,
    /// ‖vector‖.
    pub norm: f64,
    /// ‖μ‖, the mean difference's norm (equal to `norm` for every method).
    pub mean_diff_norm: f64,
    /// The mean norm of the texts' activations at this layer and site (the same token
    /// choice): what `norm` compares with — the question "how big is coefficient 8?".
    pub activation_norm: f64,
    /// PCA methods: the first component's share of the variance (of the centred differences
    /// for `pca_diff`, of the raw ones for `pca_center`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained_variance: Option<f64>,
}

/// A library entry holding these vectors (one per layer, made from the same pairs the same
/// way): provenance names the dataset, its number of pairs and the token choice; each layer's
/// mean activation norm is kept as `activation_norm.L`, so a reader can compare.
pub fn to_entry(
    vectors: &[ContrastVector],
    name: &str,
    model: &str,
    dataset: &str,
    n_pairs: usize,
    created: &str,
) -> crate::library::VectorEntry {
    let first = vectors.first();
    let mut layers: Vec<crate::library::LayerEntry> =
        vectors.iter().map(|v| crate::library::LayerEntry { layer: v.layer, vector: v.vector.clone(), front: None }).collect();
    layers.sort_by_key(|l| l.layer);
    crate::library::VectorEntry {
        name: name.into(),
        model: model.into(),
        site: first.map(|v| v.site).unwrap_or_default(),
        method: first.map(|v| v.method.as_str()).unwrap_or_default().into(),
        source: format!("{dataset} ({n_pairs} pairs, token {})", first.map(|v| v.token.as_str()).unwrap_or("last")),
        created: created.into(),
        formula: None,
        extra: vectors.iter().map(|v| (format!("activation_norm.{}", v.layer), format!("{}", v.activation_norm))).collect(),
        layers,
    }
}

/// At most this many rows (tokens) in one capture step.
const STEP_ROWS: usize = 512;
/// At most this many sequences in one capture step.
const STEP_SEQS: usize = 32;

/// Consecutive runs of sequences, `lens[i]` tokens each, that fit one capture step: at most
/// [`STEP_SEQS`] sequences and [`STEP_ROWS`] rows (a longer sequence goes alone).
pub(crate) fn step_batches(lens: impl ExactSizeIterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let lens: Vec<usize> = lens.collect();
    let mut batches = Vec::new();
    let mut start = 0;
    while start < lens.len() {
        let (mut end, mut rows) = (start, 0);
        while end < lens.len() && end - start < STEP_SEQS && (end == start || rows + lens[end] <= STEP_ROWS) {
            rows += lens[end];
            end += 1;
        }
        batches.push(start..end);
        start = end;
    }
    batches
}

/// The most memory the activations captured for a method's texts may take before the
/// vector is computed from them (contrast pairs, ITI statements): 1 GiB.
pub const CAPTURE_BUDGET: u64 = 1 << 30;

/// Refuses, before any pass, `texts` texts whose captured activations (`values` per text,
/// `bytes` each) would not fit [`CAPTURE_BUDGET`], saying how big they would be and what to do.
pub(crate) fn check_capture_budget(texts: usize, values: usize, bytes: usize, what: &str) -> Result<()> {
    let per_text = (values as u64).saturating_mul(bytes as u64).max(1);
    let need = (texts as u64).saturating_mul(per_text);
    if need > CAPTURE_BUDGET {
        let mb = crate::error::mib;
        return Err(TillerError::input(format!(
            "{texts} {what} would keep {} MB of activations ({values} values of {bytes} bytes each), more than the {} MB a \
             method may hold: use fewer (at most {} with this model)",
            mb(need),
            mb(CAPTURE_BUDGET),
            CAPTURE_BUDGET / per_text
        )));
    }
    Ok(())
}

/// Refuses token sequences that cannot be run: an empty one, or one past the context.
pub(crate) fn check_texts(texts: &[Vec<u32>], spec: &crate::ModelSpec) -> Result<()> {
    for (i, t) in texts.iter().enumerate() {
        if t.is_empty() {
            return Err(TillerError::input(format!("text {} has no tokens: give it some text or turn BOS on", i + 1)));
        }
        if t.len() > spec.n_positions {
            return Err(TillerError::input(format!(
                "text {} is {} tokens, past the model's context of {}: shorten it",
                i + 1,
                t.len(),
                spec.n_positions
            )));
        }
    }
    Ok(())
}

/// The activation standing for each token sequence at (layer, site), in f64: `[texts][W]`.
/// `progress(done, total)` is called after each step, counted in texts; `Stop` ends the run
/// with `Ok(None)`.
pub async fn activations<B: Backend>(
    backend: &mut B,
    texts: &[Vec<u32>],
    layer: usize,
    site: Site,
    token: TokenChoice,
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<Vec<Vec<f64>>>> {
    let spec = *backend.config();
    if layer >= spec.n_layer {
        return Err(TillerError::input(format!("layer {layer} is out of range: this model has layers 0..{}", spec.n_layer - 1)));
    }
    crate::recipe::check_site(site)?;
    check_texts(texts, &spec)?;
    let w = site.width(&spec);
    check_capture_budget(texts.len(), w, 8, "texts (both sides of every pair)")?;
    let mut out = Vec::with_capacity(texts.len());
    for range in step_batches(texts.iter().map(Vec::len)) {
        let batch = &texts[range.clone()];
        let max_len = batch.iter().map(Vec::len).max().unwrap_or(1);
        backend.reset(batch.len(), max_len)?;
        let rows_select = match token {
            TokenChoice::Last => RowSelect::Last,
            TokenChoice::Mean => RowSelect::All,
        };
        let req = StepRequest {
            seqs: batch.iter().enumerate().map(|(slot, t)| SeqStep { slot, tokens: t.clone() }).collect(),
            injections: Vec::new(),
            captures: vec![Capture::rows(layer, site, None, rows_select)],
            logits: LogitRows::None,
        };
        let act = backend.step(&req).await?.captured.swap_remove(0);
        match token {
            TokenChoice::Last => out.extend(act.chunks_exact(w).map(|r| r.iter().map(|&x| x as f64).collect())),
            TokenChoice::Mean => {
                let mut r = 0;
                for t in batch {
                    let mut mean = vec![0.0f64; w];
                    for row in act[r * w..(r + t.len()) * w].chunks_exact(w) {
                        for (m, &x) in mean.iter_mut().zip(row) {
                            *m += x as f64;
                        }
                    }
                    mean.iter_mut().for_each(|m| *m /= t.len() as f64);
                    out.push(mean);
                    r += t.len();
                }
            }
        }
        if progress(range.end, texts.len()) == Flow::Stop {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// How large the residual stream is at each of `layers` for one prompt: the median over its
/// positions of ‖resid_pre\[L\]‖ (HF `hidden_states[L]`), the first position left out when
/// there are others (BOS and first tokens carry norms many times the rest's in GPT-2 and
/// Llama). The yardstick for a steering vector's norm: "how big is coefficient 8?".
pub async fn residual_norms<B: Backend>(backend: &mut B, tokens: &[u32], layers: &[usize]) -> Result<Vec<f64>> {
    Ok(crate::inspect::position_norms(backend, tokens, layers).await?.iter().map(|at| typical_norm(at)).collect())
}

/// The median of a prompt's per-position norms, the first position left out when there are
/// others ([`residual_norms`]). 0 for no positions.
pub fn typical_norm(at: &[f64]) -> f64 {
    let mut norms = at[usize::from(at.len() > 1)..].to_vec();
    norms.sort_by(f64::total_cmp);
    let n = norms.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => norms[n / 2],
        _ => (norms[n / 2 - 1] + norms[n / 2]) / 2.0,
    }
}

/// Builds the vector from token sequences of pairs `(positive, negative)`; `Ok(None)` when
/// stopped.
#[allow(clippy::too_many_arguments)]
pub async fn contrast_vector<B: Backend>(
    backend: &mut B,
    pairs: &[(Vec<u32>, Vec<u32>)],
    layer: usize,
    site: Site,
    method: Method,
    token: TokenChoice,
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<ContrastVector>> {
    if pairs.is_empty() {
        return Err(TillerError::input("there are no pairs: give at least one positive and negative text".to_string()));
    }
    if method == Method::PcaDiff && pairs.len() < 2 {
        return Err(TillerError::input(
            "pca_diff needs at least two pairs (one difference has no variance around its mean): add pairs, or use mean_diff".to_string(),
        ));
    }
    let texts: Vec<Vec<u32>> = pairs.iter().flat_map(|(p, n)| [p.clone(), n.clone()]).collect();
    let Some(acts) = activations(backend, &texts, layer, site, token, progress).await? else {
        return Ok(None);
    };
    let activation_norm = acts.iter().map(|a| norm(a)).sum::<f64>() / acts.len() as f64;
    let diffs: Vec<Vec<f64>> = acts.chunks_exact(2).map(|pn| pn[0].iter().zip(&pn[1]).map(|(a, b)| a - b).collect()).collect();
    let v = from_diffs(&diffs, method)?;
    Ok(Some(ContrastVector {
        layer,
        site,
        method,
        token,
        n_pairs: pairs.len(),
        norm: norm(&v.vector),
        vector: v.vector.iter().map(|&x| x as f32).collect(),
        mean_diff_norm: v.mean_norm,
        activation_norm,
        explained_variance: v.explained,
    }))
}

/// What [`from_diffs`] finds.
#[derive(Debug, Clone, PartialEq)]
pub struct FromDiffs {
    pub vector: Vec<f64>,
    pub mean_norm: f64,
    pub explained: Option<f64>,
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The method's vector from the per-pair differences `[n][W]` (see the module's doc).
pub fn from_diffs(diffs: &[Vec<f64>], method: Method) -> Result<FromDiffs> {
    let n = diffs.len();
    let w = diffs.first().map_or(0, Vec::len);
    if n == 0 || w == 0 {
        return Err(TillerError::input("there are no differences to build a vector from".to_string()));
    }
    let mut mean = vec![0.0f64; w];
    for d in diffs {
        for (m, x) in mean.iter_mut().zip(d) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mean_norm = norm(&mean);
    if !mean_norm.is_finite() {
        return Err(TillerError::input("the activations are not finite numbers: the model's weights may be broken".to_string()));
    }
    if method == Method::MeanDiff {
        return Ok(FromDiffs { vector: mean, mean_norm, explained: None });
    }
    let rows: Vec<Vec<f64>> = match method {
        Method::PcaDiff => diffs.iter().map(|d| d.iter().zip(&mean).map(|(x, m)| x - m).collect()).collect(),
        _ => diffs.to_vec(),
    };
    // The top eigenvector of the n×n Gram matrix G = R Rᵀ gives the component u ∝ Rᵀ a.
    let mut gram = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let g = dot(&rows[i], &rows[j]);
            gram[i * n + j] = g;
            gram[j * n + i] = g;
        }
    }
    let trace: f64 = (0..n).map(|i| gram[i * n + i]).sum();
    if trace <= 0.0 || !trace.is_finite() {
        return Err(TillerError::input(format!(
            "the pairs' differences have no variance{}: {}",
            if method == Method::PcaDiff { " around their mean" } else { "" },
            if method == Method::PcaDiff {
                "every pair differs the same way; use mean_diff"
            } else {
                "every positive text reads as its negative one; check the pairs"
            }
        )));
    }
    let (lambda, a) = top_eigenvector(&gram, n);
    let mut u = vec![0.0f64; w];
    for (r, &ai) in rows.iter().zip(&a) {
        for (uj, x) in u.iter_mut().zip(r) {
            *uj += ai * x;
        }
    }
    let un = norm(&u);
    if un == 0.0 || !un.is_finite() {
        return Err(TillerError::input("the principal component could not be found (the differences are degenerate)".to_string()));
    }
    let sign = if dot(&u, &mean) < 0.0 { -1.0 } else { 1.0 };
    let scale = sign * mean_norm / un;
    u.iter_mut().for_each(|x| *x *= scale);
    Ok(FromDiffs { vector: u, mean_norm, explained: Some((lambda / trace).clamp(0.0, 1.0)) })
}

/// Eigen-decomposition of a symmetric k×k matrix by cyclic Jacobi rotations: (eigenvalues,
/// eigenvectors as the columns of a row-major k×k matrix).
fn jacobi(a: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0f64; k * k];
    (0..k).for_each(|i| v[i * k + i] = 1.0);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..k).flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * k + j].powi(2)).sum();
        if off <= 1e-30 * total.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..k).map(|i| a[i * k + i]).collect(), v)
}

/// The largest eigenvalue of a symmetric positive semi-definite n×n matrix and its unit
/// eigenvector: Jacobi when small, else subspace iteration with a Rayleigh–Ritz step.
fn top_eigenvector(g: &[f64], n: usize) -> (f64, Vec<f64>) {
    let pick = |vals: &[f64], vecs: &[f64], k: usize| {
        let i = (0..k).max_by(|&a, &b| vals[a].total_cmp(&vals[b])).unwrap_or(0);
        (vals[i], (0..k).map(|r| vecs[r * k + i]).collect::<Vec<f64>>())
    };
    if n <= 48 {
        let (vals, vecs) = jacobi(g, n);
        return pick(&vals, &vecs, n);
    }
    let k = 8;
    let matvec = |x: &[f64]| -> Vec<f64> { (0..n).map(|i| dot(&g[i * n..(i + 1) * n], x)).collect() };
    // A deterministic start: k spread-out vectors.
    let mut q: Vec<Vec<f64>> =
        (0..k).map(|j| (0..n).map(|i| if i % k == j { 1.0 } else { ((i * 7 + j * 13) % 17) as f64 / 17.0 - 0.5 }).collect()).collect();
    let mut best = (0.0, vec![0.0; n]);
    for _iter in 0..5000 {
        let z: Vec<Vec<f64>> = q.iter().map(|x| matvec(x)).collect();
        let floor = 1e-12 * z.iter().map(|x| norm(x)).fold(0.0, f64::max);
        // Orthonormalize (modified Gram–Schmidt, twice for stability).
        let mut basis: Vec<Vec<f64>> = Vec::with_capacity(k);
        for mut x in z {
            for _ in 0..2 {
                for b in &basis {
                    let d = dot(&x, b);
                    x.iter_mut().zip(b).for_each(|(xi, bi)| *xi -= d * bi);
                }
            }
            let nx = norm(&x);
            if nx > floor && nx > 0.0 {
                x.iter_mut().for_each(|xi| *xi /= nx);
                basis.push(x);
            }
        }
        let kk = basis.len();
        if kk == 0 {
            return best;
        }
        let gb: Vec<Vec<f64>> = basis.iter().map(|b| matvec(b)).collect();
        let mut t = vec![0.0f64; kk * kk];
        for i in 0..kk {
            for j in 0..kk {
                t[i * kk + j] = dot(&basis[i], &gb[j]);
            }
        }
        let (vals, vecs) = jacobi(&t, kk);
        let mut order: Vec<usize> = (0..kk).collect();
        order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
        q = order
            .iter()
            .map(|&c| {
                let mut x = vec![0.0f64; n];
                for (r, b) in basis.iter().enumerate() {
                    let coef = vecs[r * kk + c];
                    x.iter_mut().zip(b).for_each(|(xi, bi)| *xi += coef * bi);
                }
                x
            })
            .collect();
        let lambda = vals[order[0]];
        let gq = matvec(&q[0]);
        let resid = norm(&gq.iter().zip(&q[0]).map(|(a, b)| a - lambda * b).collect::<Vec<_>>());
        best = (lambda, q[0].clone());
        if resid <= 1e-11 * lambda.abs().max(f64::MIN_POSITIVE) {
            break;
        }
    }
    best
}

/// One A/B item for the behavioural measure: the prompt up to the answer letter (the
/// question, then the answers' shared first tokens, such as ` (`), and the two letters' tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct AbItem {
    pub prompt: Vec<u32>,
    pub matching: u32,
    pub not_matching: u32,
}

/// The A/B items of a dataset (multiple-choice items only), tokenized as [`crate::pairs::Pair::tokens`]
/// does; the letter is the first token where the two answers differ.
pub fn ab_items(
    tok: &crate::tokenizer::Tokenizer,
    encoding: &crate::steer::TextEncoding,
    pairs: &[crate::pairs::Pair],
) -> Result<Vec<AbItem>> {
    let mut out = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        let crate::pairs::Pair::Choice { question, matching, not_matching } = p else {
            return Err(TillerError::input(format!(
                "pair {} has positive and negative texts, but the A/B evaluation needs multiple-choice items \
                 (\"question\", \"answer_matching_behavior\", \"answer_not_matching_behavior\")",
                i + 1
            )));
        };
        let (prompt, a, b) = crate::pairs::choice_tokens(tok, encoding, question, matching, not_matching)?;
        let Some(k) = a.iter().zip(&b).position(|(x, y)| x != y) else {
            return Err(TillerError::input(format!(
                "item {}: the answers `{matching}` and `{not_matching}` do not differ in a token (one starts the other): \
                 give answers such as (A) and (B)",
                i + 1
            )));
        };
        out.push(AbItem { prompt: [prompt.as_slice(), &a[..k]].concat(), matching: a[k], not_matching: b[k] });
    }
    Ok(out)
}

/// One point of the behavioural chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbRow {
    pub layer: usize,
    pub coeff: f32,
    /// Mean over items of p(matching) / (p(matching) + p(not matching)) at the answer letter,
    /// with the vector × coeff added at every position of the prompt.
    pub p_matching: f64,
    /// The same without the vector.
    pub p_matching_unsteered: f64,
    /// Mean over items of p(matching) + p(not matching): how much of the probability the two
    /// letters hold (low values say the model is not answering with a letter at all).
    pub p_letters: f64,
    pub items: usize,
}

/// CAA's behavioural measure: for each vector `(layer, [W])` and coefficient, the mean
/// normalized probability of the matching letter over `items`. `progress` counts steps;
/// `Ok(None)` when stopped.
pub async fn eval_ab<B: Backend>(
    backend: &mut B,
    items: &[AbItem],
    vectors: &[(usize, Vec<f32>)],
    site: Site,
    coeffs: &[f32],
    progress: &mut dyn FnMut(usize, usize) -> Flow,
) -> Result<Option<Vec<AbRow>>> {
    let spec = *backend.config();
    crate::recipe::check_site(site)?;
    if items.is_empty() {
        return Err(TillerError::input("there are no items to evaluate".to_string()));
    }
    let w = site.width(&spec);
    for (layer, v) in vectors {
        if *layer >= spec.n_layer {
            return Err(TillerError::input(format!("layer {layer} is out of range: this model has layers 0..{}", spec.n_layer - 1)));
        }
        if v.len() != w {
            return Err(TillerError::input(format!(
                "the vector at layer {layer} is {} wide but this model's {} is {w}",
                v.len(),
                site.as_str()
            )));
        }
    }
    for (i, it) in items.iter().enumerate() {
        if it.prompt.is_empty() || it.prompt.len() > spec.n_positions {
            return Err(TillerError::input(format!(
                "item {} is {} tokens; the model takes 1..={}",
                i + 1,
                it.prompt.len(),
                spec.n_positions
            )));
        }
    }
    for &c in coeffs {
        if !c.is_finite() || c.abs() > crate::recipe::MAX_COEFF {
            return Err(TillerError::input(format!(
                "coefficient {c} must be a finite number of size at most {}",
                crate::recipe::MAX_COEFF
            )));
        }
    }
    // Jobs: (vector index or None for unsteered, coefficient, item).
    let mut jobs: Vec<(Option<usize>, f32, usize)> = (0..items.len()).map(|i| (None, 0.0, i)).collect();
    for vi in 0..vectors.len() {
        for &c in coeffs {
            if c != 0.0 {
                jobs.extend((0..items.len()).map(|i| (Some(vi), c, i)));
            }
        }
    }
    let batches = step_batches(jobs.iter().map(|j| items[j.2].prompt.len()));
    let v = spec.vocab_size;
    // Per job: (normalized p, p_m + p_n).
    let mut results = vec![(0.0f64, 0.0f64); jobs.len()];
    for (done, range) in batches.iter().enumerate() {
        let batch = &jobs[range.clone()];
        let max_len = batch.iter().map(|j| items[j.2].prompt.len()).max().unwrap_or(1);
        backend.reset(batch.len(), max_len)?;
        let rows: usize = batch.iter().map(|j| items[j.2].prompt.len()).sum();
        let mut injections = Vec::new();
        for (vi, (layer, vector)) in vectors.iter().enumerate() {
            let mut table = Vec::new();
            let mut row_map = vec![u32::MAX; rows];
            let mut r = 0;
            for &(jv, c, i) in batch {
                let len = items[i].prompt.len();
                if jv == Some(vi) {
                    let k = (table.len() / w) as u32;
                    table.extend(vector.iter().map(|x| x * c));
                    row_map[r..r + len].iter_mut().for_each(|m| *m = k);
                }
                r += len;
            }
            if !table.is_empty() {
                injections.push(crate::backend::Injection::add(*layer, site, table, row_map));
            }
        }
        let req = StepRequest {
            seqs: batch.iter().enumerate().map(|(slot, j)| SeqStep { slot, tokens: items[j.2].prompt.clone() }).collect(),
            injections,
            captures: Vec::new(),
            logits: LogitRows::Last,
        };
        let logits = backend.step(&req).await?.logits;
        for (k, &(_, _, i)) in batch.iter().enumerate() {
            let row = &logits[k * v..(k + 1) * v];
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let z: f64 = row.iter().map(|&x| libm::exp(x as f64 - max)).sum();
            let p = |t: u32| libm::exp(row[t as usize] as f64 - max) / z;
            let (pm, pn) = (p(items[i].matching), p(items[i].not_matching));
            let norm = if pm + pn > 0.0 { pm / (pm + pn) } else { 0.5 };
            results[range.start + k] = (norm, pm + pn);
        }
        if progress(done + 1, batches.len()) == Flow::Stop {
            return Ok(None);
        }
    }
    let n = items.len() as f64;
    let unsteered: f64 = results[..items.len()].iter().map(|r| r.0).sum::<f64>() / n;
    let unsteered_letters: f64 = results[..items.len()].iter().map(|r| r.1).sum::<f64>() / n;
    let mut out = Vec::new();
    for (vi, (layer, _)) in vectors.iter().enumerate() {
        for &c in coeffs {
            let (p, letters) = if c == 0.0 {
                (unsteered, unsteered_letters)
            } else {
                let sel: Vec<&(f64, f64)> =
                    jobs.iter().zip(&results).filter(|(j, _)| j.0 == Some(vi) && j.1 == c).map(|(_, r)| r).collect();
                (sel.iter().map(|r| r.0).sum::<f64>() / n, sel.iter().map(|r| r.1).sum::<f64>() / n)
            };
            out.push(AbRow {
                layer: *layer,
                coeff: c,
                p_matching: p,
                p_matching_unsteered: unsteered,
                p_letters: letters,
                items: items.len(),
            });
        }
    }
    Ok(Some(out))
}

/// One header line, then a line per row.
pub fn ab_csv(rows: &[AbRow]) -> String {
    let mut s = String::from("layer,coeff,p_matching,p_matching_unsteered,p_letters,items\n");
    for r in rows {
        s.push_str(&format!("{},{},{:.6},{:.6},{:.6},{}\n", r.layer, r.coeff, r.p_matching, r.p_matching_unsteered, r.p_letters, r.items));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_past_the_budget_are_refused_with_the_sizes_and_the_most_that_fit() {
        assert!(check_capture_budget(1000, 4096, 8, "texts").is_ok());
        assert!(check_capture_budget(32_768, 4096, 8, "texts").is_ok(), "exactly the budget fits");
        let e = check_capture_budget(32_769, 4096, 8, "texts").unwrap_err().to_string();
        for want in
            ["32769 texts would keep 1025 MB of activations (4096 values of 8 bytes each)", "more than the 1024 MB", "at most 32768"]
        {
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        assert!(check_capture_budget(usize::MAX, usize::MAX, 8, "statements").is_err(), "no overflow");
    }

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    fn diffs(n: usize, w: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut r = rng(seed);
        let dir: Vec<f64> = (0..w).map(|_| r()).collect();
        (0..n).map(|i| (0..w).map(|j| dir[j] * (1.0 + i as f64 * 0.3) + 0.2 * r()).collect()).collect()
    }

    /// ‖Cu − λu‖ / λ for the covariance the method takes its component of.
    fn eigen_residual(d: &[Vec<f64>], method: Method, u: &[f64]) -> f64 {
        let n = d.len();
        let w = u.len();
        let mean: Vec<f64> = (0..w).map(|j| d.iter().map(|x| x[j]).sum::<f64>() / n as f64).collect();
        let rows: Vec<Vec<f64>> = d
            .iter()
            .map(|x| if method == Method::PcaDiff { x.iter().zip(&mean).map(|(a, m)| a - m).collect() } else { x.clone() })
            .collect();
        let un = norm(u);
        let u: Vec<f64> = u.iter().map(|x| x / un).collect();
        let mut cu = vec![0.0; w];
        for r in &rows {
            let p = dot(r, &u);
            cu.iter_mut().zip(r).for_each(|(c, x)| *c += p * x);
        }
        let lambda = dot(&cu, &u);
        norm(&cu.iter().zip(&u).map(|(c, x)| c - lambda * x).collect::<Vec<_>>()) / lambda
    }

    #[test]
    fn mean_diff_is_the_mean() {
        let d = vec![vec![1.0, 2.0], vec![3.0, -4.0]];
        let v = from_diffs(&d, Method::MeanDiff).unwrap();
        assert_eq!(v.vector, vec![2.0, -1.0]);
        assert!((v.mean_norm - 5f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn components_are_eigenvectors_signed_and_scaled() {
        // Small (Jacobi) and large (subspace iteration) pair counts, wide and narrow.
        for &(n, w) in &[(2, 5), (7, 3), (30, 64), (100, 48), (300, 17)] {
            let d = diffs(n, w, n as u64 * 31 + w as u64);
            for method in [Method::PcaDiff, Method::PcaCenter] {
                let v = from_diffs(&d, method).unwrap();
                let res = eigen_residual(&d, method, &v.vector);
                assert!(res < 1e-8, "{method:?} n={n} w={w}: residual {res}");
                assert!((norm(&v.vector) - v.mean_norm).abs() < 1e-9 * v.mean_norm);
                let mean = from_diffs(&d, Method::MeanDiff).unwrap().vector;
                assert!(dot(&v.vector, &mean) >= 0.0);
                let e = v.explained.unwrap();
                assert!((0.0..=1.0).contains(&e));
            }
        }
    }

    #[test]
    fn the_top_component_is_the_largest() {
        // Differences along two axes, the second with more spread: pca_diff finds axis 1.
        let d: Vec<Vec<f64>> = (0..60)
            .map(|i| {
                let t = (i as f64 * 0.37).sin();
                vec![1.0 + 0.1 * t, 3.0 * (i as f64 * 0.91).cos(), 0.0]
            })
            .collect();
        let v = from_diffs(&d, Method::PcaDiff).unwrap().vector;
        assert!(v[1].abs() > 0.99 * norm(&v), "{v:?}");
        // Uncentred, the offset along axis 0 (mean 1, spread small) competes with axis 1.
        let c = from_diffs(&d, Method::PcaCenter).unwrap();
        assert!(eigen_residual(&d, Method::PcaCenter, &c.vector) < 1e-8);
    }

    #[test]
    fn degenerate_inputs_are_refused() {
        let same = vec![vec![1.0, 2.0]; 4];
        assert!(from_diffs(&same, Method::PcaDiff).unwrap_err().to_string().contains("use mean_diff"));
        let zero = vec![vec![0.0, 0.0]; 3];
        assert!(from_diffs(&zero, Method::PcaCenter).unwrap_err().to_string().contains("check the pairs"));
        assert!(from_diffs(&[], Method::MeanDiff).is_err());
        assert_eq!(Method::parse("pca_center"), Some(Method::PcaCenter));
        assert_eq!(Method::parse("pca"), None);
    }
}
