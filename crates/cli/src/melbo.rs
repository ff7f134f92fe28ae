//! `tiller melbo` and `tiller melbo-ortho`: unsupervised steering vectors (Mack & Turner) by
//! gradient ascent through the engine's tape (the CPU reference's or the GPU's), and vectors
//! orthogonal to a chosen one that match its effect.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use pollster::block_on;
use serde_json::json;
use tiller_core::generate::Flow;
use tiller_core::melbo::{self, CpuTape, MelboSet, MelboSettings, Objective, OrthoSettings, Progress, PromptActs, TargetTokens};
use tiller_core::steer::encode_with_bos;
use tiller_core::{Backend, Tokenizer};
use tiller_gpu::GpuTape;

use crate::engine::{open_model, Engine};
use crate::vector::{file_stem, model_name, now_rfc3339, read_limited, BosArgs};
use crate::ModelArgs;

/// The system message of `--chat` when `--system` is not given (the replication's).
const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

#[derive(Args)]
pub struct PromptsArgs {
    /// A prompt (repeatable): the objective is the sum of each prompt's f.
    #[arg(long = "prompt", required = true, value_name = "TEXT")]
    prompts: Vec<String>,
    /// Render each prompt as the user message of the model's chat template, with the
    /// generation prompt (for instruct models).
    #[arg(long)]
    chat: bool,
    /// The system message with --chat (default "You are a helpful assistant."; "" for none).
    #[arg(long, value_name = "TEXT", requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    bos: BosArgs,
}

#[derive(Args)]
pub struct LayerArgs {
    /// θ is added to the residual stream before this block (resid_pre), at every position.
    /// Default: a quarter of the depth.
    #[arg(long)]
    source: Option<usize>,
    /// The change is read from the residual stream before this block (Hugging Face
    /// hidden_states[target]). Default: three quarters of the depth.
    #[arg(long)]
    target: Option<usize>,
    /// Which tokens of each prompt the target layer is read at: all, or last:K.
    #[arg(long = "target-tokens", value_name = "all|last:K", default_value = "all")]
    target_tokens: String,
}

#[derive(Args)]
pub struct MelboArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompts: PromptsArgs,
    #[command(flatten)]
    layers: LayerArgs,
    /// R: every vector's norm. Optional with --init (each starting vector keeps its own norm).
    #[arg(long)]
    radius: Option<f64>,
    /// K: vectors trained one after another. Default 32, or as many as --init gives.
    #[arg(long)]
    vectors: Option<usize>,
    /// Optimiser steps per vector (0: report f and ∂f/∂θ at the starting vectors).
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// f = (Σ_t ‖Δ_t‖^p)^(1/q).
    #[arg(long, default_value_t = 2.0)]
    p: f64,
    /// Default: p.
    #[arg(long)]
    q: Option<f64>,
    /// Each vector free (not orthogonal to the earlier ones).
    #[arg(long = "no-orthogonal")]
    no_orthogonal: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Starting vectors: a file `--out` wrote, or a JSON list of vectors `[[C floats], ...]`.
    /// They are used as given (not rescaled) until the first step.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// Save the vectors (a MELBO .safetensors file; steer with --vector FILE#I:SOURCE:COEFF).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print one JSON object: {"vectors": [{"vector", "objective", "grad", "losses"}], ...}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct OrthoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// θ0: a MELBO file (its vector --index) or a Tiller vector file (its layer --source).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Which vector of a MELBO file is θ0.
    #[arg(long, default_value_t = 0)]
    index: usize,
    #[command(flatten)]
    prompts: PromptsArgs,
    #[command(flatten)]
    layers: LayerArgs,
    /// The most vectors to look for.
    #[arg(long, default_value_t = 32)]
    vectors: usize,
    #[arg(long, default_value_t = 300)]
    steps: usize,
    /// Stop at the first vector whose loss ‖z(θ) − z(θ0)‖² (summed over prompts) stays above
    /// this.
    #[arg(long, default_value_t = 1.0)]
    threshold: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save the vectors found (a MELBO .safetensors file).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct SweepArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompts: PromptsArgs,
    #[command(flatten)]
    layers: LayerArgs,
    /// The radii R to train at, e.g. 1,2,4,8 (each R gets K vectors from the same seeded
    /// starting directions).
    #[arg(long, value_name = "R1,R2,...", required = true)]
    radii: String,
    /// K: vectors trained at each R.
    #[arg(long, default_value_t = 8)]
    vectors: usize,
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 2.0)]
    p: f64,
    /// Default: p.
    #[arg(long)]
    q: Option<f64>,
    #[arg(long = "no-orthogonal")]
    no_orthogonal: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokens of each greedy completion that the diversity and perplexity are read from.
    #[arg(long = "new-tokens", default_value_t = 24)]
    new_tokens: usize,
    /// Write the sweep as CSV (a row per R).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Print one JSON object: {"points": [{"radius", "diversity", "perplexity", ...}]}.
    #[arg(long)]
    json: bool,
}

/// Runs `$body` with `$tape` bound to the engine's [`melbo::Differentiable`]: the CPU
/// reference's tape or the GPU engine's.
macro_rules! with_tape {
    ($engine:expr, $acts:expr, $prompts:expr, $source:expr, $target:expr, |$tape:ident| $body:expr) => {
        match $engine {
            Engine::Cpu(m) => {
                let mut $tape = CpuTape::new(m.weights(), $acts, $source, $target);
                $body
            }
            Engine::Gpu(g) => {
                let mut $tape = GpuTape::new(g, $prompts.clone(), $source, $target);
                $body
            }
        }
    };
}

fn encode_prompts(tok: &Tokenizer, a: &PromptsArgs) -> Result<Vec<Vec<u32>>> {
    let system = a.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM.to_string());
    a.prompts
        .iter()
        .map(|p| {
            let ids = if a.chat {
                let text = tok.render_chat((!system.is_empty()).then_some(system.as_str()), p)?;
                tok.encode(&text)?
            } else {
                encode_with_bos(tok, p, a.bos.bos(tok))?
            };
            if ids.is_empty() {
                bail!("the prompt {p:?} has no tokens");
            }
            Ok(ids)
        })
        .collect()
}

fn layers(a: &LayerArgs, n_layer: usize) -> Result<(usize, usize, TargetTokens)> {
    let (ds, dt) = melbo::default_layers(n_layer);
    let (source, target) = (a.source.unwrap_or(ds), a.target.unwrap_or(dt));
    melbo::check_layers(source, target, n_layer)?;
    Ok((source, target, TargetTokens::parse(&a.target_tokens)?))
}

/// Starting vectors from `--init`: a MELBO file, or a JSON list.
fn read_init(path: &Path) -> Result<Vec<Vec<f32>>> {
    let bytes = read_limited(path, melbo::MAX_SET_BYTES)?;
    let what = || path.display().to_string();
    let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| matches!(b, b'[' | b'{'));
    if json {
        return melbo::parse_init_json(&bytes).with_context(what);
    }
    Ok(MelboSet::from_safetensors(&bytes).with_context(what)?.vectors)
}

fn progress_printer(quiet: bool) -> impl FnMut(Progress) -> Flow {
    let show = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let start = std::time::Instant::now();
    move |p: Progress| {
        if show {
            let done = p.vector * p.steps + p.step;
            let total = (p.vectors * p.steps).max(1);
            let left = start.elapsed().as_secs_f64() / done.max(1) as f64 * (total - done) as f64;
            eprint!(
                "\rvector {}/{}, step {}/{}: loss {:.5}  (about {:.0} s left)   ",
                p.vector + 1,
                p.vectors,
                p.step,
                p.steps,
                p.loss,
                left
            );
            if done == total {
                eprintln!();
            }
        }
        Flow::Continue
    }
}

fn save(out: &Path, vectors: Vec<Vec<f32>>, meta: Vec<(&str, String)>) -> Result<()> {
    let set = MelboSet { vectors, metadata: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect() };
    std::fs::write(out, set.to_safetensors()?).with_context(|| format!("cannot write {}", out.display()))
}

fn common_meta(
    model: &Path,
    prompts: &PromptsArgs,
    source: usize,
    target: usize,
    tokens: TargetTokens,
    seed: u64,
) -> Vec<(&'static str, String)> {
    vec![
        ("model", model_name(model)),
        ("site", "resid_pre".into()),
        ("source", source.to_string()),
        ("target", target.to_string()),
        ("target_tokens", tokens.label()),
        ("prompts", serde_json::to_string(&prompts.prompts).unwrap_or_default()),
        ("seed", seed.to_string()),
        ("created", now_rfc3339()),
    ]
}

pub fn run(a: MelboArgs) -> Result<()> {
    let init = a.init.as_deref().map(read_init).transpose()?.unwrap_or_default();
    let (mut engine, tok) = open_model(&a.model)?;
    let spec = *engine.config();
    let (source, target, tokens) = layers(&a.layers, spec.n_layer)?;
    let prompts = encode_prompts(&tok, &a.prompts)?;
    let settings = MelboSettings {
        source,
        target,
        radius: a.radius,
        vectors: a.vectors.unwrap_or(if init.is_empty() { 32 } else { init.len() }),
        steps: a.steps,
        objective: Objective { p: a.p, q: a.q.unwrap_or(a.p), tokens },
        orthogonal: !a.no_orthogonal,
        seed: a.seed,
        init,
    };
    settings.check(spec.n_embd, spec.n_layer)?;
    let acts: Vec<PromptActs> = block_on(melbo::prepare(&mut engine, &prompts, source, target))?;
    let progress = progress_printer(a.json);
    let vectors = with_tape!(&mut engine, &acts, prompts, source, target, |tape| block_on(melbo::train(
        &mut tape,
        spec.n_layer,
        &acts,
        &settings,
        progress
    ))?);
    let views: Vec<&[f32]> = vectors.iter().map(|v| v.vector.as_slice()).collect();
    let max_cos = tiller_core::library::max_abs_cosine(&views);

    if let Some(out) = &a.out {
        let mut meta = common_meta(&a.model.model, &a.prompts, source, target, tokens, a.seed);
        meta.extend([
            ("method", "melbo".to_string()),
            ("name", format!("{} melbo", file_stem(out))),
            ("radius", a.radius.map_or_else(|| "given".into(), |r| r.to_string())),
            ("p", settings.objective.p.to_string()),
            ("q", settings.objective.q.to_string()),
            ("orthogonal", settings.orthogonal.to_string()),
            ("objectives", serde_json::to_string(&vectors.iter().map(|v| v.objective).collect::<Vec<_>>())?),
        ]);
        save(out, vectors.iter().map(|v| v.vector.clone()).collect(), meta)?;
    }

    if a.json {
        let out = json!({
            "source": source,
            "target": target,
            "radius": a.radius,
            "p": settings.objective.p,
            "q": settings.objective.q,
            "target_tokens": tokens.label(),
            "orthogonal": settings.orthogonal,
            "seed": a.seed,
            "steps": a.steps,
            "prompt_tokens": prompts,
            "max_abs_cos": max_cos,
            "vectors": vectors,
        });
        outln!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    outln!(
        "MELBO on {} prompt(s): θ at resid_pre of block {source}, f read before block {target} ({} tokens), p = {}, q = {}",
        prompts.len(),
        tokens.label(),
        settings.objective.p,
        settings.objective.q
    );
    outln!("{:>6} {:>12} {:>12} {:>10}", "vector", "f first", "f final", "norm");
    for (i, v) in vectors.iter().enumerate() {
        let first = v.losses.first().copied().unwrap_or(v.objective);
        outln!("{i:>6} {first:>12.5} {:>12.5} {:>10.5}", v.objective, tiller_core::library::norm(&v.vector));
    }
    if vectors.len() > 1 {
        outln!("largest |cos| between two vectors: {max_cos:.2e}");
    }
    if let Some(out) = &a.out {
        outln!("saved {} vectors to {}; steer with --vector {}#0:{source}:1 --positions all", vectors.len(), out.display(), out.display());
    }
    Ok(())
}

/// θ0 from `--from`: a MELBO file's vector `index`, or a Tiller vector file's layer `source`
/// (its only layer when it has one).
fn read_theta0(path: &Path, index: usize, source: usize) -> Result<Vec<f32>> {
    let bytes = read_limited(path, melbo::MAX_SET_BYTES)?;
    let what = || path.display().to_string();
    if let Ok(set) = MelboSet::from_safetensors(&bytes) {
        return set
            .vectors
            .get(index)
            .cloned()
            .with_context(|| format!("{} holds {} vectors; --index {index} is past them", what(), set.vectors.len()));
    }
    let entry = tiller_core::library::VectorEntry::from_bytes(&bytes, &file_stem(path)).with_context(what)?;
    let layer = if entry.layers.len() == 1 { None } else { Some(source) };
    Ok(entry.pick(layer).with_context(what)?.vector.clone())
}

pub fn run_ortho(a: OrthoArgs) -> Result<()> {
    let (mut engine, tok) = open_model(&a.model)?;
    let spec = *engine.config();
    let (source, target, tokens) = layers(&a.layers, spec.n_layer)?;
    let theta0 = read_theta0(&a.from, a.index, source)?;
    let prompts = encode_prompts(&tok, &a.prompts)?;
    let settings = OrthoSettings { source, target, vectors: a.vectors, steps: a.steps, threshold: a.threshold, tokens, seed: a.seed };
    let acts = block_on(melbo::prepare(&mut engine, &prompts, source, target))?;
    let progress = progress_printer(a.json);
    let run = with_tape!(&mut engine, &acts, prompts, source, target, |tape| block_on(melbo::train_ortho(
        &mut tape,
        spec.n_layer,
        &acts,
        &theta0,
        &settings,
        progress
    ))?);
    if let Some(out) = &a.out {
        if run.vectors.is_empty() {
            bail!("no vector was brought below the threshold {}: nothing to save (raise --threshold or --steps)", a.threshold);
        }
        let mut meta = common_meta(&a.model.model, &a.prompts, source, target, tokens, a.seed);
        meta.extend([
            ("method", "melbo_ortho".to_string()),
            ("name", format!("{} melbo-ortho", file_stem(out))),
            ("radius", tiller_core::library::norm(&theta0).to_string()),
            ("from", a.from.display().to_string()),
            ("threshold", a.threshold.to_string()),
            ("objectives", serde_json::to_string(&run.vectors.iter().map(|v| v.loss).collect::<Vec<_>>())?),
        ]);
        save(out, run.vectors.iter().map(|v| v.vector.clone()).collect(), meta)?;
    }
    let mut all: Vec<&[f32]> = vec![theta0.as_slice()];
    all.extend(run.vectors.iter().map(|v| v.vector.as_slice()));
    let max_cos = tiller_core::library::max_abs_cosine(&all);
    if a.json {
        let out = json!({
            "source": source,
            "target": target,
            "radius": tiller_core::library::norm(&theta0),
            "threshold": a.threshold,
            "target_tokens": tokens.label(),
            "prompt_tokens": prompts,
            "max_abs_cos": max_cos,
            "vectors": run.vectors,
            "rejected": run.rejected,
        });
        outln!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    outln!("MELBO-ortho from {}: vectors ⊥ θ0 and each other matching z(θ0) before block {target}", a.from.display());
    outln!("{:>6} {:>12} {:>12} {:>12}", "vector", "loss first", "loss final", "cos θ0");
    for (i, v) in run.vectors.iter().enumerate() {
        outln!("{i:>6} {:>12.5} {:>12.5} {:>12.2e}", v.losses.first().copied().unwrap_or(v.loss), v.loss, v.cos_theta0);
    }
    match &run.rejected {
        Some(v) => outln!(
            "stopped: vector {} reached loss {:.5}, above the threshold {} ({} found)",
            run.vectors.len(),
            v.loss,
            a.threshold,
            run.vectors.len()
        ),
        None => outln!("{} vectors found, all below the threshold {}", run.vectors.len(), a.threshold),
    }
    outln!("largest |cos| among θ0 and the vectors: {max_cos:.2e}");
    if let Some(out) = &a.out {
        outln!("saved to {}; steer with --vector {}#0:{source}:1 --positions all", out.display(), out.display());
    }
    Ok(())
}

pub fn run_sweep(a: SweepArgs) -> Result<()> {
    let radii = melbo::sweep::parse_radii(&a.radii)?;
    if a.new_tokens == 0 {
        bail!("--new-tokens must be at least 1: the diversity and perplexity are read from the completions");
    }
    if a.vectors < 2 {
        bail!("--vectors must be at least 2: the diversity compares the completions of different vectors");
    }
    let (mut engine, tok) = open_model(&a.model)?;
    let spec = *engine.config();
    let (source, target, tokens) = layers(&a.layers, spec.n_layer)?;
    let prompts = encode_prompts(&tok, &a.prompts)?;
    let base = MelboSettings {
        source,
        target,
        radius: Some(radii[0]),
        vectors: a.vectors,
        steps: a.steps,
        objective: Objective { p: a.p, q: a.q.unwrap_or(a.p), tokens },
        orthogonal: !a.no_orthogonal,
        seed: a.seed,
        init: Vec::new(),
    };
    base.check(spec.n_embd, spec.n_layer)?;
    let acts: Vec<PromptActs> = block_on(melbo::prepare(&mut engine, &prompts, source, target))?;
    let mut points = Vec::with_capacity(radii.len());
    for (i, &r) in radii.iter().enumerate() {
        let settings = MelboSettings { radius: Some(r), ..base.clone() };
        if !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("R = {r} ({} of {}):", i + 1, radii.len());
        }
        let progress = progress_printer(a.json);
        let vectors = with_tape!(&mut engine, &acts, prompts, source, target, |tape| block_on(melbo::train(
            &mut tape,
            spec.n_layer,
            &acts,
            &settings,
            progress
        ))?);
        points.push(block_on(melbo::sweep::judge(&mut engine, &tok, &prompts, r, &vectors, source, a.new_tokens))?);
    }
    let csv = melbo::sweep::to_csv(&points);
    if let Some(path) = &a.csv {
        std::fs::write(path, &csv).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if a.json {
        let out = json!({
            "source": source,
            "target": target,
            "target_tokens": tokens.label(),
            "vectors": a.vectors,
            "steps": a.steps,
            "seed": a.seed,
            "new_tokens": a.new_tokens,
            "prompt_tokens": prompts,
            "points": points,
        });
        outln!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    outln!(
        "MELBO R sweep: {} vectors a radius, θ at resid_pre of block {source}, f read before block {target}; greedy completions of {} tokens",
        a.vectors,
        a.new_tokens
    );
    outln!("{:>10} {:>10} {:>12} {:>12}", "R", "diversity", "perplexity", "unsteered");
    for p in &points {
        let f = |x: Option<f64>, d: usize| x.map_or_else(|| "-".into(), |x| format!("{x:.d$}"));
        outln!("{:>10} {:>10} {:>12} {:>12}", p.radius, f(p.diversity, 4), f(p.perplexity, 3), f(p.unsteered_perplexity, 3));
    }
    outln!("diversity: 1 − mean pairwise cosine of the completions' mean last-layer hidden states; perplexity: the unsteered model's, of the steered completions");
    if let Some(path) = &a.csv {
        outln!("wrote {}", path.display());
    }
    Ok(())
}
