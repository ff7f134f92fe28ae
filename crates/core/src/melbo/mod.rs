//! MELBO (Mack & Turner, "Mechanistically Eliciting Latent Behaviors in Language Models"):
//! steering vectors found without supervision, by gradient ascent on how much a vector added
//! early changes a later layer; and MELBO-ortho, vectors orthogonal to a chosen one that
//! reproduce its effect at the target layer.
//!
//! In Tiller's layer convention: θ ∈ R^C with ‖θ‖ = R is added to the residual stream before
//! block `source` (resid_pre) at every position; the target is the residual stream before
//! block `target` (Hugging Face `hidden_states[target]`), `source < target < n_layer`. For one
//! prompt, f(θ) = (Σ_t ‖h_target(θ)_t − h_target(0)_t‖₂^p)^(1/q) over the selected tokens; for
//! several prompts, the sum of their f.
//!
//! Training follows MELBO's reference code: θ starts random on the sphere of radius R
//! (orthogonal to the earlier vectors when orthogonality is on); AdamW (lr 1e-3, betas
//! 0.9/0.98, eps 1e-8, no weight decay, amsgrad) on −f; each gradient is projected onto the
//! orthogonal complement of the earlier vectors and onto the sphere's tangent space; after each
//! step θ is projected again and renormalised to R.
//!
//! The gradient comes from the CPU reference's tape ([`crate::tape`]); the forward passes that
//! need no gradient (each prompt's h_source and unsteered h_target) run on any [`Backend`].

use serde::Serialize;

use crate::backend::{Backend, Capture, LogitRows, SeqStep, Site, StepRequest};
use crate::error::{Result, TillerError};
use crate::generate::Flow;
use crate::sample::Rng;
use crate::tape::Tape;
use crate::weights::CpuWeights;

pub mod sweep;

fn bad(msg: impl Into<String>) -> TillerError {
    TillerError::input(msg)
}

/// Which of a prompt's tokens the objective reads at the target layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub enum TargetTokens {
    /// Every token of the prompt (BOS included when the prompt has one).
    #[default]
    All,
    /// The last K tokens (all of them when the prompt is shorter).
    Last(usize),
}

impl TargetTokens {
    /// `all` or `last:K`.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "all" {
            return Ok(Self::All);
        }
        match s.strip_prefix("last:").map(|k| k.trim().parse::<usize>()) {
            Some(Ok(k)) if k > 0 => Ok(Self::Last(k)),
            _ => Err(bad(format!("target tokens `{s}` are neither `all` nor `last:K` with K ≥ 1 (e.g. last:2)"))),
        }
    }

    /// The selected rows of a prompt of `t` tokens.
    pub fn range(self, t: usize) -> std::ops::Range<usize> {
        match self {
            Self::All => 0..t,
            Self::Last(k) => t.saturating_sub(k)..t,
        }
    }

    pub fn label(self) -> String {
        match self {
            Self::All => "all".into(),
            Self::Last(k) => format!("last:{k}"),
        }
    }
}

/// f's exponents and the tokens it reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Objective {
    pub p: f64,
    pub q: f64,
    pub tokens: TargetTokens,
}

impl Default for Objective {
    fn default() -> Self {
        Self { p: 2.0, q: 2.0, tokens: TargetTokens::All }
    }
}

impl Objective {
    pub fn check(&self) -> Result<()> {
        if !(self.p.is_finite() && self.p >= 1.0 && self.p <= 16.0) {
            return Err(bad(format!("p = {} is outside 1…16 (MELBO uses 2; the Llama replication 2 with q = 1)", self.p)));
        }
        if !(self.q.is_finite() && self.q >= 0.25 && self.q <= 16.0) {
            return Err(bad(format!("q = {} is outside 0.25…16 (the default is q = p)", self.q)));
        }
        Ok(())
    }

    /// f for one prompt and ∂f/∂h [T, C], from h = h_target(θ) and h0 = h_target(0), in f64:
    /// with S = Σ_t ‖Δ_t‖^p, ∂f/∂h_t = (p/q)·S^(1/q − 1)·‖Δ_t‖^(p − 2)·Δ_t on the selected rows.
    pub fn value_grad(&self, h: &[f32], h0: &[f32], c: usize) -> (f64, Vec<f32>) {
        let t = h.len() / c;
        let rows = self.tokens.range(t);
        let mut norms = vec![0.0f64; t];
        let mut s = 0.0f64;
        for r in rows.clone() {
            let n: f64 = (0..c).map(|i| (h[r * c + i] as f64 - h0[r * c + i] as f64).powi(2)).sum::<f64>().sqrt();
            norms[r] = n;
            s += n.powf(self.p);
        }
        let f = s.powf(1.0 / self.q);
        let mut dh = vec![0.0f32; h.len()];
        if s > 0.0 {
            let outer = self.p / self.q * s.powf(1.0 / self.q - 1.0);
            for r in rows {
                if norms[r] == 0.0 {
                    continue;
                }
                let k = outer * norms[r].powf(self.p - 2.0);
                for i in 0..c {
                    dh[r * c + i] = (k * (h[r * c + i] as f64 - h0[r * c + i] as f64)) as f32;
                }
            }
        }
        (f, dh)
    }
}

/// One prompt's activations that do not depend on θ: the residual stream before blocks
/// `source` and `target` of the unsteered prompt, [T, C] each.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptActs {
    pub tokens: Vec<u32>,
    pub x_source: Vec<f32>,
    pub h0_target: Vec<f32>,
}

/// Checks source and target against the model (`source < target < n_layer`).
pub fn check_layers(source: usize, target: usize, n_layer: usize) -> Result<()> {
    if !(source < target && target < n_layer) {
        return Err(bad(format!(
            "source {source} and target {target} must satisfy source < target < {n_layer} (the model's layers): the vector goes in \
             before block source and the change is read before block target"
        )));
    }
    Ok(())
}

/// The defaults the replication advises: source ≈ depth/4, target ≈ 3·depth/4 (kept
/// `source < target < n_layer`).
pub fn default_layers(n_layer: usize) -> (usize, usize) {
    let source = (n_layer / 4).min(n_layer.saturating_sub(2));
    let target = ((3 * n_layer) / 4).clamp(source + 1, n_layer.saturating_sub(1).max(source + 1));
    (source, target)
}

/// Runs each prompt once, unsteered, for its [`PromptActs`].
pub async fn prepare<B: Backend>(backend: &mut B, prompts: &[Vec<u32>], source: usize, target: usize) -> Result<Vec<PromptActs>> {
    let spec = *backend.config();
    check_layers(source, target, spec.n_layer)?;
    let mut out = Vec::with_capacity(prompts.len());
    for tokens in prompts {
        if tokens.is_empty() {
            return Err(bad("a prompt has no tokens"));
        }
        if tokens.len() > spec.n_positions {
            return Err(bad(format!("a prompt of {} tokens is past the model's context of {}", tokens.len(), spec.n_positions)));
        }
        backend.reset(1, tokens.len())?;
        let req = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: tokens.clone() }],
            injections: Vec::new(),
            captures: vec![Capture::all(source, Site::ResidPre), Capture::all(target, Site::ResidPre)],
            logits: LogitRows::None,
        };
        let mut o = backend.step(&req).await?;
        let h0_target = o.captured.pop().unwrap_or_default();
        let x_source = o.captured.pop().unwrap_or_default();
        out.push(PromptActs { tokens: tokens.clone(), x_source, h0_target });
    }
    Ok(out)
}

/// What MELBO differentiates: the residual stream before block `target` of every prompt as a
/// function of θ added before block `source`, and its backward. The prompts run together (the
/// GPU engine's tape runs them as one batch, one submission each way). The CPU reference's tape
/// ([`CpuTape`]) and the GPU engine's (`tiller_gpu::GpuTape`) implement it.
#[allow(async_fn_in_trait)] // used on one thread (wasm, or a native block_on)
pub trait Differentiable {
    /// C
    fn width(&self) -> usize;
    /// h_target(θ) of each prompt ([T_i, C] each, in prompt order), keeping what
    /// [`Differentiable::backward`] needs.
    async fn forward(&mut self, theta: &[f32]) -> Result<Vec<Vec<f32>>>;
    /// The gradient before block `source` of every prompt's rows, one prompt after another
    /// [ΣT_i, C], from `dh` (one [T_i, C] per prompt), through the last forward.
    async fn backward(&mut self, dh: &[Vec<f32>]) -> Result<Vec<f32>>;
}

/// The CPU reference's tape over prompts prepared by [`prepare`].
pub struct CpuTape<'w> {
    w: &'w CpuWeights,
    prompts: &'w [PromptActs],
    source: usize,
    target: usize,
    last: Vec<Tape<'w>>,
}

impl<'w> CpuTape<'w> {
    pub fn new(w: &'w CpuWeights, prompts: &'w [PromptActs], source: usize, target: usize) -> Self {
        Self { w, prompts, source, target, last: Vec::new() }
    }
}

impl Differentiable for CpuTape<'_> {
    fn width(&self) -> usize {
        self.w.spec().n_embd
    }

    async fn forward(&mut self, theta: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.last.clear();
        let mut out = Vec::with_capacity(self.prompts.len());
        for p in self.prompts {
            let (tape, h) = Tape::forward(self.w, &p.x_source, theta, self.source, self.target)?;
            self.last.push(tape);
            out.push(h);
        }
        Ok(out)
    }

    async fn backward(&mut self, dh: &[Vec<f32>]) -> Result<Vec<f32>> {
        if self.last.is_empty() || dh.len() != self.last.len() {
            return Err(bad("a backward needs a forward first, and one gradient per prompt"));
        }
        Ok(self.last.iter().zip(dh).flat_map(|(tape, d)| tape.backward(d)).collect())
    }
}

/// Σ over prompts of a per-prompt loss of (h_target(θ), h0_target), and its gradient in θ.
async fn value_grad_with<D: Differentiable>(
    model: &mut D,
    prompts: &[PromptActs],
    theta: &[f32],
    mut loss: impl FnMut(usize, &[f32], &[f32]) -> (f64, Vec<f32>),
) -> Result<(f64, Vec<f64>)> {
    let c = model.width();
    let hs = model.forward(theta).await?;
    if hs.len() != prompts.len() {
        return Err(bad(format!("the tape ran {} prompts of {}", hs.len(), prompts.len())));
    }
    let mut total = 0.0f64;
    let mut dhs = Vec::with_capacity(hs.len());
    for (i, (h, p)) in hs.iter().zip(prompts).enumerate() {
        let (f, dh) = loss(i, h, &p.h0_target);
        if !f.is_finite() || dh.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!(
                "the objective is not finite on prompt {} (f = {f}): the radius is too large for this model, or its weights overflow",
                i + 1
            )));
        }
        total += f;
        dhs.push(dh);
    }
    let dx = model.backward(&dhs).await?;
    let mut grad = vec![0.0f64; c];
    for row in dx.chunks_exact(c) {
        grad.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    Ok((total, grad))
}

/// f(θ) summed over prompts, and ∂f/∂θ (no projection).
pub async fn objective_grad<D: Differentiable>(
    model: &mut D,
    prompts: &[PromptActs],
    obj: &Objective,
    theta: &[f32],
) -> Result<(f64, Vec<f64>)> {
    let c = model.width();
    value_grad_with(model, prompts, theta, |_, h, h0| obj.value_grad(h, h0, c)).await
}

/// PyTorch's AdamW with amsgrad, no weight decay, over f64 parameters.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    t: i32,
    m: Vec<f64>,
    v: Vec<f64>,
    vmax: Vec<f64>,
}

impl AdamW {
    /// MELBO's settings: lr 1e-3, betas 0.9/0.98, eps 1e-8.
    pub fn melbo(n: usize) -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, t: 0, m: vec![0.0; n], v: vec![0.0; n], vmax: vec![0.0; n] }
    }

    /// One step of `params` down the gradient `g`.
    pub fn step(&mut self, params: &mut [f64], g: &[f64]) {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t);
        let bc2 = 1.0 - self.beta2.powi(self.t);
        for i in 0..params.len() {
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * g[i];
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * g[i] * g[i];
            self.vmax[i] = self.vmax[i].max(self.v[i]);
            let denom = self.vmax[i].sqrt() / bc2.sqrt() + self.eps;
            params[i] -= self.lr / bc1 * self.m[i] / denom;
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// An orthonormal basis of the span of `vectors` (Gram–Schmidt, twice for accuracy).
fn orthonormal(vectors: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for v in vectors {
        let mut u = v.clone();
        for _ in 0..2 {
            project_out(&mut u, &basis);
        }
        let n = norm(&u);
        if n > 1e-12 * norm(v).max(1e-300) {
            u.iter_mut().for_each(|x| *x /= n);
            basis.push(u);
        }
    }
    basis
}

/// v ← v − Σ_b (v·b) b over an orthonormal basis.
fn project_out(v: &mut [f64], basis: &[Vec<f64>]) {
    for b in basis {
        let k = dot(v, b);
        v.iter_mut().zip(b).for_each(|(x, y)| *x -= k * y);
    }
}

fn rescale(v: &mut [f64], r: f64) {
    let n = norm(v);
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x *= r / n);
    }
}

/// One constrained step down `g`: the gradient projected off `basis` (orthonormal) and onto
/// the tangent space of the sphere at θ, AdamW's step, then θ projected off `basis` again and
/// rescaled to `r`.
fn sphere_step(opt: &mut AdamW, theta: &mut [f64], mut g: Vec<f64>, basis: &[Vec<f64>], r: f64) {
    project_out(&mut g, basis);
    let n2 = dot(theta, theta);
    if n2 > 0.0 {
        let k = dot(&g, theta) / n2;
        g.iter_mut().zip(theta.iter()).for_each(|(a, b)| *a -= k * b);
    }
    opt.step(theta, &g);
    for _ in 0..2 {
        project_out(theta, basis);
    }
    rescale(theta, r);
}

/// A standard normal vector of `n` (Box–Muller over the seeded stream).
fn gaussian(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = 1.0 - rng.next_f64(); // (0, 1]
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push(r * a.cos());
        out.push(r * a.sin());
    }
    out.truncate(n);
    out
}

/// A random vector of norm `r` orthogonal to `basis` (orthonormal), seeded by (seed, index).
fn random_on_sphere(seed: u64, index: u64, n: usize, r: f64, basis: &[Vec<f64>]) -> Vec<f64> {
    let mut rng = Rng::new(seed, 0x4D45_4C42_4F00_0000 ^ index);
    let mut v = gaussian(&mut rng, n);
    for _ in 0..2 {
        project_out(&mut v, basis);
    }
    rescale(&mut v, r);
    v
}

/// What a MELBO run asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct MelboSettings {
    pub source: usize,
    pub target: usize,
    /// R; `None` only with `init`: each given vector keeps its own norm.
    pub radius: Option<f64>,
    /// K
    pub vectors: usize,
    pub steps: usize,
    pub objective: Objective,
    pub orthogonal: bool,
    pub seed: u64,
    /// Starting vectors used as given (not rescaled or projected before the first step); the
    /// rest start random.
    pub init: Vec<Vec<f32>>,
}

/// The most vectors one run trains.
pub const MAX_VECTORS: usize = 4096;
/// The most steps per vector.
pub const MAX_STEPS: usize = 100_000;

impl MelboSettings {
    pub fn check(&self, c: usize, n_layer: usize) -> Result<()> {
        check_layers(self.source, self.target, n_layer)?;
        self.objective.check()?;
        if let Some(r) = self.radius {
            if !(r.is_finite() && r > 0.0 && r <= 1e6) {
                return Err(bad(format!("the radius R = {r} must be a positive number up to 1e6 (the MELBO post used 4–8 on Qwen-1.8B)")));
            }
        } else if self.init.is_empty() {
            return Err(bad("give the radius R (the norm of every vector), or starting vectors whose norms are used"));
        }
        if self.vectors == 0 || self.vectors > MAX_VECTORS {
            return Err(bad(format!("the number of vectors must be 1…{MAX_VECTORS}; got {}", self.vectors)));
        }
        if self.orthogonal && self.vectors > c {
            return Err(bad(format!("{} mutually orthogonal vectors do not fit in {c} channels", self.vectors)));
        }
        if self.steps > MAX_STEPS {
            return Err(bad(format!("{} steps per vector is more than {MAX_STEPS}", self.steps)));
        }
        for (i, v) in self.init.iter().enumerate() {
            if v.len() != c {
                return Err(bad(format!("starting vector {i} has {} values; this model's residual stream has {c}", v.len())));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("starting vector {i} holds a value that is not finite")));
            }
            if self.radius.is_none() && crate::library::norm(v) == 0.0 {
                return Err(bad(format!("starting vector {i} is zero: give --radius for it")));
            }
        }
        Ok(())
    }
}

/// One trained vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MelboVector {
    /// [C]
    pub vector: Vec<f32>,
    /// f at `vector`, summed over prompts.
    pub objective: f64,
    /// ∂f/∂θ at `vector`, before any projection [C].
    pub grad: Vec<f32>,
    /// f before each step (`steps` values).
    pub losses: Vec<f64>,
}

/// Where a training run is, for progress and live curves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The vector being trained (0-based) of `vectors`.
    pub vector: usize,
    pub vectors: usize,
    /// Steps done on it, of `steps`.
    pub step: usize,
    pub steps: usize,
    /// f (MELBO) or the matching loss (ortho) before this step.
    pub loss: f64,
}

/// Trains vectors one after another (see the module's docs). `on_step` is called after each
/// step; [`Flow::Stop`] ends the run keeping the vectors already finished.
pub async fn train<D: Differentiable>(
    model: &mut D,
    n_layer: usize,
    prompts: &[PromptActs],
    s: &MelboSettings,
    mut on_step: impl FnMut(Progress) -> Flow,
) -> Result<Vec<MelboVector>> {
    s.check(model.width(), n_layer)?;
    let mut done: Vec<MelboVector> = Vec::with_capacity(s.vectors);
    for k in 0..s.vectors {
        let learned: Vec<Vec<f32>> = done.iter().map(|v| v.vector.clone()).collect();
        match train_one(model, prompts, s, &learned, k, &mut on_step).await? {
            Some(v) => done.push(v),
            None => break,
        }
    }
    Ok(done)
}

/// Trains vector `index` of the run (from `s.init[index]` or random), orthogonal to `learned`
/// when `s.orthogonal`; None when `on_step` stopped it. [`train`] is this in a loop; the page
/// calls it once per vector to show each as it is done.
pub async fn train_one<D: Differentiable>(
    model: &mut D,
    prompts: &[PromptActs],
    s: &MelboSettings,
    learned: &[Vec<f32>],
    index: usize,
    on_step: &mut dyn FnMut(Progress) -> Flow,
) -> Result<Option<MelboVector>> {
    let c = model.width();
    if prompts.is_empty() {
        return Err(bad("MELBO needs at least one prompt"));
    }
    let learned64: Vec<Vec<f64>> = learned.iter().map(|v| v.iter().map(|&x| x as f64).collect()).collect();
    let basis = if s.orthogonal { orthonormal(&learned64) } else { Vec::new() };
    let mut theta: Vec<f64> = match s.init.get(index) {
        Some(v) => v.iter().map(|&x| x as f64).collect(),
        None => {
            let r = s.radius.unwrap_or_else(|| s.init.first().map_or(1.0, |v| crate::library::norm(v)));
            random_on_sphere(s.seed, index as u64, c, r, &basis)
        }
    };
    let r = s.radius.unwrap_or_else(|| norm(&theta));
    let mut opt = AdamW::melbo(c);
    let mut losses = Vec::with_capacity(s.steps);
    for step in 0..s.steps {
        let t32: Vec<f32> = theta.iter().map(|&x| x as f32).collect();
        let (f, grad) = objective_grad(model, prompts, &s.objective, &t32).await?;
        losses.push(f);
        // the gradient of the loss −f, projected
        let g: Vec<f64> = grad.iter().map(|x| -x).collect();
        sphere_step(&mut opt, &mut theta, g, &basis, r);
        let p = Progress { vector: index, vectors: s.vectors, step: step + 1, steps: s.steps, loss: f };
        if matches!(on_step(p), Flow::Stop) {
            return Ok(None);
        }
    }
    let vector: Vec<f32> = theta.iter().map(|&x| x as f32).collect();
    let (objective, grad) = objective_grad(model, prompts, &s.objective, &vector).await?;
    Ok(Some(MelboVector { vector, objective, grad: grad.iter().map(|&x| x as f32).collect(), losses }))
}

/// What a MELBO-ortho run asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct OrthoSettings {
    pub source: usize,
    pub target: usize,
    /// The most vectors to look for.
    pub vectors: usize,
    pub steps: usize,
    /// The run stops at the first vector whose final loss is above this.
    pub threshold: f64,
    /// The tokens z averages over.
    pub tokens: TargetTokens,
    pub seed: u64,
}

/// One MELBO-ortho vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrthoVector {
    pub vector: Vec<f32>,
    /// ‖z(θ) − z(θ0)‖² summed over prompts, at `vector`.
    pub loss: f64,
    /// Its cosine similarity with θ0.
    pub cos_theta0: f64,
    /// The loss before each step.
    pub losses: Vec<f64>,
}

/// The result: the vectors below the threshold, and the first that was not, if the run
/// stopped on one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrthoRun {
    pub vectors: Vec<OrthoVector>,
    /// The vector that could not be brought below the threshold (not kept), when that ended
    /// the run.
    pub rejected: Option<OrthoVector>,
}

/// z: the mean over the selected rows of h [T, C], in f64.
fn mean_rows(h: &[f32], c: usize, tokens: TargetTokens) -> Vec<f64> {
    let rows = tokens.range(h.len() / c);
    let n = rows.len().max(1) as f64;
    let mut z = vec![0.0f64; c];
    for r in rows {
        z.iter_mut().zip(&h[r * c..(r + 1) * c]).for_each(|(a, &b)| *a += b as f64);
    }
    z.iter_mut().for_each(|x| *x /= n);
    z
}

/// L(θ) = Σ_prompts ‖z(θ) − z(θ0)‖² and ∂L/∂θ.
async fn match_grad<D: Differentiable>(
    model: &mut D,
    prompts: &[PromptActs],
    s: &OrthoSettings,
    z0: &[Vec<f64>],
    theta: &[f32],
) -> Result<(f64, Vec<f64>)> {
    let c = model.width();
    value_grad_with(model, prompts, theta, |i, h, _| {
        let z = mean_rows(h, c, s.tokens);
        let diff: Vec<f64> = z.iter().zip(&z0[i]).map(|(a, b)| a - b).collect();
        let rows = s.tokens.range(h.len() / c);
        let n = rows.len().max(1) as f64;
        let mut dh = vec![0.0f32; h.len()];
        for r in rows {
            for j in 0..c {
                dh[r * c + j] = (2.0 * diff[j] / n) as f32;
            }
        }
        (dot(&diff, &diff), dh)
    })
    .await
}

/// MELBO-ortho: vectors θ ⊥ {θ0, θ1 … θi−1} of θ0's norm minimising ‖z(θ) − z(θ0)‖², trained
/// as [`train`] does (descending this loss), until one cannot be brought to `threshold` or
/// below.
pub async fn train_ortho<D: Differentiable>(
    model: &mut D,
    n_layer: usize,
    prompts: &[PromptActs],
    theta0: &[f32],
    s: &OrthoSettings,
    mut on_step: impl FnMut(Progress) -> Flow,
) -> Result<OrthoRun> {
    let c = model.width();
    check_layers(s.source, s.target, n_layer)?;
    if theta0.len() != c {
        return Err(bad(format!("θ0 has {} values; this model's residual stream has {c}", theta0.len())));
    }
    let r = crate::library::norm(theta0);
    if r == 0.0 || !r.is_finite() {
        return Err(bad("θ0 is zero or not finite"));
    }
    if s.vectors == 0 || s.vectors >= c {
        return Err(bad(format!("the number of vectors must be 1…{} (orthogonal to θ0 in {c} channels)", c - 1)));
    }
    if s.steps > MAX_STEPS || !(s.threshold.is_finite() && s.threshold >= 0.0) {
        return Err(bad(format!("steps must be at most {MAX_STEPS} and the threshold a number ≥ 0")));
    }
    if prompts.is_empty() {
        return Err(bad("MELBO-ortho needs at least one prompt"));
    }
    let z0: Vec<Vec<f64>> = model.forward(theta0).await?.iter().map(|h| mean_rows(h, c, s.tokens)).collect();
    let t0: Vec<f64> = theta0.iter().map(|&x| x as f64).collect();
    let mut learned = vec![t0.clone()];
    let mut out = OrthoRun { vectors: Vec::new(), rejected: None };
    for k in 0..s.vectors {
        let basis = orthonormal(&learned);
        let mut theta = random_on_sphere(s.seed, k as u64, c, r, &basis);
        let mut opt = AdamW::melbo(c);
        let mut losses = Vec::with_capacity(s.steps);
        for step in 0..s.steps {
            let t32: Vec<f32> = theta.iter().map(|&x| x as f32).collect();
            let (loss, g) = match_grad(model, prompts, s, &z0, &t32).await?;
            losses.push(loss);
            sphere_step(&mut opt, &mut theta, g, &basis, r);
            if matches!(on_step(Progress { vector: k, vectors: s.vectors, step: step + 1, steps: s.steps, loss }), Flow::Stop) {
                return Ok(out);
            }
        }
        let vector: Vec<f32> = theta.iter().map(|&x| x as f32).collect();
        let (loss, _) = match_grad(model, prompts, s, &z0, &vector).await?;
        let v = OrthoVector { cos_theta0: crate::library::cosine(&vector, theta0), vector, loss, losses };
        if loss > s.threshold {
            out.rejected = Some(v);
            break;
        }
        learned.push(theta);
        out.vectors.push(v);
    }
    Ok(out)
}

/// A file of MELBO vectors (`tiller melbo --out`): safetensors with one tensor `vectors`
/// [K, C] (F32; F16 and BF16 read) and `__metadata__` strings `tiller.kind` = `melbo`,
/// `model`, `source`, `target`, `radius`, `p`, `q`, `target_tokens`, `prompts` (a JSON list),
/// `seed`, `created`, `objectives` (a JSON list), and any others, kept.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MelboSet {
    pub vectors: Vec<Vec<f32>>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The largest MELBO file read (4096 vectors of 4096 channels are 64 MB).
pub const MAX_SET_BYTES: usize = 80 << 20;

impl MelboSet {
    /// The layer the vectors were trained at (`source`), when the file says.
    pub fn source(&self) -> Option<usize> {
        self.metadata.get("source").and_then(|s| s.parse().ok())
    }

    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let c = self.vectors.first().map_or(0, Vec::len);
        if c == 0 || self.vectors.iter().any(|v| v.len() != c) {
            return Err(bad("a MELBO file needs one or more vectors of the same width"));
        }
        let bytes: Vec<u8> = self.vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
        let mut meta = self.metadata.clone();
        meta.insert("tiller.kind".into(), "melbo".into());
        let t = vec![("vectors".to_string(), crate::weights::Dtype::F32, vec![self.vectors.len(), c], bytes)];
        Ok(crate::weights::write_safetensors_with_metadata(&t, &meta))
    }

    /// Reads a MELBO file; any other safetensors file is refused with what it is.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        use crate::weights::{SafetensorsHeader, TensorView};
        if bytes.len() > MAX_SET_BYTES {
            return Err(bad(format!("the file is {} MB, larger than any MELBO file ({} MB)", bytes.len() >> 20, MAX_SET_BYTES >> 20)));
        }
        let unreadable = |e: TillerError| match e {
            TillerError::Safetensors(m) => bad(format!("this is not a readable MELBO file (safetensors): {m}")),
            e => e,
        };
        let n = SafetensorsHeader::header_len(bytes).map_err(unreadable)? as usize;
        let json = bytes.get(8..8usize.saturating_add(n)).ok_or_else(|| bad("the file ends inside its header: it is truncated"))?;
        let data = &bytes[8 + n..];
        let header = SafetensorsHeader::parse(json, Some(data.len() as u64)).map_err(unreadable)?;
        match header.metadata.get("tiller.kind").map(String::as_str) {
            Some("melbo") => {}
            Some(kind) => return Err(bad(format!("this safetensors file holds a Tiller `{kind}`, not MELBO vectors"))),
            None => return Err(bad("this safetensors file is not a MELBO file (no `tiller.kind` = `melbo` in its metadata)")),
        }
        let t = header.tensors.iter().find(|t| t.name == "vectors").ok_or_else(|| bad("the MELBO file has no `vectors` tensor"))?;
        let (&[k, c], Some(dtype)) = (t.shape.as_slice(), t.dtype) else {
            return Err(bad(format!("the MELBO file's `vectors` is {} of shape {:?}; it must be [K, C] floats", t.dtype_name, t.shape)));
        };
        if k == 0 || c == 0 {
            return Err(bad("the MELBO file holds no vectors"));
        }
        let view = TensorView { name: &t.name, shape: &t.shape, dtype, bytes: &data[t.start as usize..t.end as usize] };
        let values = view.to_f32();
        let vectors: Vec<Vec<f32>> = values.chunks_exact(c).map(<[f32]>::to_vec).collect();
        if vectors.iter().flatten().any(|x| !x.is_finite()) {
            return Err(bad("the MELBO file holds values that are not finite"));
        }
        let mut metadata = header.metadata;
        metadata.remove("tiller.kind");
        Ok(Self { vectors, metadata })
    }
}

/// Starting vectors from a JSON list of vectors (`[[C floats], ...]`) or one vector.
pub fn parse_init_json(bytes: &[u8]) -> Result<Vec<Vec<f32>>> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the starting vectors are not JSON ({e}); give [[C floats], ...]")))?;
    let as_vec = |x: &serde_json::Value| -> Option<Vec<f32>> {
        x.as_array()?.iter().map(|n| n.as_f64().map(|f| f as f32)).collect::<Option<Vec<f32>>>()
    };
    let list = v.as_array().ok_or_else(|| bad("the starting vectors must be a JSON list: [[C floats], ...]"))?;
    let vectors = if list.first().is_some_and(|x| x.is_number()) {
        vec![as_vec(&v).ok_or_else(|| bad("a starting vector holds something that is not a number"))?]
    } else {
        list.iter()
            .map(|x| as_vec(x).ok_or_else(|| bad("each starting vector must be a list of numbers: [[C floats], ...]")))
            .collect::<Result<_>>()?
    };
    if vectors.is_empty() {
        return Err(bad("the list of starting vectors is empty"));
    }
    Ok(vectors)
}

/// A prompt completed without a vector, with +coeff·θ and with −coeff·θ (θ at resid_pre of
/// `source`, every position), all three decoded the same way from the same seed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Completions {
    pub unsteered: String,
    pub plus: String,
    pub minus: String,
    /// The coefficient c of ±c·θ.
    #[serde(default = "one")]
    pub coeff: f32,
    /// How they were decoded, in words: "greedy", or the sampler's settings and seed.
    #[serde(default)]
    pub decoding: String,
}

fn one() -> f32 {
    1.0
}

/// Completions of `prompt` (tokens) with ±`coeff`·θ, `max_new` tokens each, decoded with
/// `sampling` (e.g. [`Sampling::greedy`]) from `seed`: the three share the seed, so a sampled
/// row differs only by the vector.
///
/// [`Sampling::greedy`]: crate::recipe::Sampling::greedy
#[allow(clippy::too_many_arguments)]
pub async fn completions<B: Backend>(
    backend: &mut B,
    tok: &crate::Tokenizer,
    prompt: &[u32],
    theta: &[f32],
    source: usize,
    coeff: f32,
    max_new: usize,
    sampling: crate::recipe::Sampling,
    seed: u64,
) -> Result<Completions> {
    sampling.validate()?;
    if !coeff.is_finite() {
        return Err(bad(format!("the coefficient {coeff} is not a finite number")));
    }
    let (unsteered, plus) = completions_with(backend, tok, prompt, theta, source, coeff, max_new, sampling, seed).await?;
    let (_, minus) = completions_with(backend, tok, prompt, theta, source, -coeff, max_new, sampling, seed).await?;
    Ok(Completions { unsteered: unsteered.text, plus: plus.text, minus: minus.text, coeff, decoding: sampling.describe(seed) })
}

/// The completion of `prompt` without a vector and with `coeff`·θ (θ at resid_pre of
/// `source`, every position), `max_new` tokens each, in one batched generation: comparison 0
/// of `tiller generate --vector θ:source:coeff --positions all --seed seed`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn completions_with<B: Backend>(
    backend: &mut B,
    tok: &crate::Tokenizer,
    prompt: &[u32],
    theta: &[f32],
    source: usize,
    coeff: f32,
    max_new: usize,
    sampling: crate::recipe::Sampling,
    seed: u64,
) -> Result<(crate::generate::Completion, crate::generate::Completion)> {
    use crate::recipe::{Positions, Recipe};
    use crate::steer::LayerVector;
    let spec = *backend.config();
    if prompt.len() + max_new > spec.n_positions {
        return Err(bad(format!(
            "the prompt ({} tokens) and {max_new} new tokens are past the model's context of {}",
            prompt.len(),
            spec.n_positions
        )));
    }
    let recipe =
        Recipe { n: 1, max_new_tokens: max_new, sampling, seed, positions: Positions::All, site: Site::ResidPre, ..Recipe::default() };
    let v = [LayerVector::from_saved(source, coeff, theta, None, Site::ResidPre, Positions::All)];
    let mut g = crate::generate::generate_with_vectors(backend, tok, &recipe, prompt, &v, &mut |_| Flow::Continue).await?;
    Ok((g.unsteered.swap_remove(0), g.steered.swap_remove(0)))
}

/// Where a saved MELBO vector came from, for its library entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance<'a> {
    pub name: &'a str,
    pub model: &'a str,
    pub source: usize,
    pub target: usize,
    pub radius: f64,
    pub prompts: &'a [String],
    pub index: usize,
    pub created: &'a str,
}

/// A library entry holding θ at layer `source` (site resid_pre, every position), its
/// provenance naming the model, the layers, R, the prompts and the vector's index.
pub fn to_entry(theta: &[f32], p: &Provenance) -> crate::library::VectorEntry {
    let prompts = serde_json::to_string(p.prompts).unwrap_or_default();
    crate::library::VectorEntry {
        name: p.name.into(),
        model: p.model.into(),
        site: Site::ResidPre,
        method: "melbo".into(),
        source: format!("MELBO vector {} (source {}, target {}, R {}) on {prompts}", p.index, p.source, p.target, p.radius),
        created: p.created.into(),
        formula: None,
        extra: [
            ("melbo.source".to_string(), p.source.to_string()),
            ("melbo.target".to_string(), p.target.to_string()),
            ("melbo.radius".to_string(), p.radius.to_string()),
            ("melbo.index".to_string(), p.index.to_string()),
            ("melbo.prompts".to_string(), prompts),
        ]
        .into_iter()
        .collect(),
        layers: vec![crate::library::LayerEntry { layer: p.source, vector: theta.to_vec(), front: None }],
    }
}
