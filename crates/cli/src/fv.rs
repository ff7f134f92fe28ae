//! `tiller fv`: function vectors (Todd et al.) from an ICL task file: every head's average
//! indirect effect, the vector of the top heads (or of given ones), its accuracy by layer on
//! held-out pairs, and completions with it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use pollster::block_on;
use serde_json::json;
use tiller_core::fv::{self, FvSettings, Head, Order, Phase};
use tiller_core::generate::Flow;
use tiller_core::pairs::MAX_DATASET_BYTES;
use tiller_core::Backend;

use crate::engine::open_model;
use crate::vector::{file_stem, model_name, now_rfc3339, read_limited, write_entry, BosArgs};
use crate::ModelArgs;

#[derive(Args)]
pub struct FvArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The task: JSON lines of {"input": "...", "output": "..."} (datasets/icl/ has some).
    #[arg(long, value_name = "FILE")]
    task: PathBuf,
    /// Each pair and its flip (output → input), mixed: the symmetric task.
    #[arg(long)]
    both_directions: bool,
    /// Demonstrations per prompt (K).
    #[arg(long, default_value_t = 10)]
    shots: usize,
    /// Prompts (N) the means and the indirect effects are averaged over.
    #[arg(long, default_value_t = 25)]
    prompts: usize,
    /// The seed of the prompts' pairs, the corrupted shuffles and the held-out split.
    #[arg(long, default_value_t = 0, conflicts_with = "in_order")]
    seed: u64,
    /// Prompt i takes pairs i·(K+1) … i·(K+1)+K of the file in order, the last as its query;
    /// the corrupted prompt shows demonstration j the output of demonstration (j+1) mod K; the
    /// pairs after the prompts' are held out.
    #[arg(long)]
    in_order: bool,
    /// With a seed: the fraction of the (shuffled) pairs held out for the evaluation.
    #[arg(long = "held-out", value_name = "FRACTION", default_value_t = 0.3)]
    held_out: f64,
    /// The vector is the sum of the K heads of largest indirect effect.
    #[arg(long, default_value_t = 10, conflicts_with = "heads")]
    top_heads: usize,
    /// The vector is the sum of these heads instead, LAYER.HEAD,… (their AIE is still reported).
    #[arg(long, value_name = "L.H,L.H,...")]
    heads: Option<String>,
    /// The layer (resid_pre) the vector is added at for the completions and the saved file.
    /// Default: the layer of best zero-shot accuracy, else a third of the depth.
    #[arg(long)]
    layer: Option<usize>,
    /// At most this many held-out pairs are evaluated (0: no evaluation).
    #[arg(long, default_value_t = 50)]
    eval_pairs: usize,
    /// Greedy completions of this many held-out zero-shot prompts, without and with the vector.
    #[arg(long, default_value_t = 5)]
    completions: usize,
    /// Tokens per completion.
    #[arg(long, default_value_t = 8)]
    max_new_tokens: usize,
    /// Save the vector (at --layer, site resid_pre) as a Tiller vector file (.safetensors).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    bos: BosArgs,
    #[arg(long)]
    json: bool,
}

pub fn run(a: FvArgs) -> Result<()> {
    let bytes = read_limited(&a.task, MAX_DATASET_BYTES)?;
    let mut pairs = fv::parse_task(&bytes).with_context(|| a.task.display().to_string())?;
    if a.both_directions {
        pairs = fv::both_directions(&pairs);
    }
    let order = if a.in_order { Order::InOrder } else { Order::Seeded(a.seed) };
    let (mut engine, tok) = open_model(&a.model)?;
    let spec = *engine.config();
    if let Some(l) = a.layer {
        if l >= spec.n_layer {
            bail!("--layer {l} is out of range: this model has layers 0..{}", spec.n_layer - 1);
        }
    }
    let settings = FvSettings {
        shots: a.shots,
        prompts: a.prompts,
        order,
        held_out: a.held_out,
        top_heads: a.top_heads,
        heads: a.heads.as_deref().map(|s| Head::parse_list(s, &spec)).transpose()?,
        bos: a.bos.bos(&tok),
        eval_pairs: a.eval_pairs,
    };
    let bos = settings.bos;
    let show = !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = |phase: Phase, done: usize, total: usize| {
        if show {
            let what = match phase {
                Phase::Clean => "clean prompts",
                Phase::Patched => "patched passes",
                Phase::Eval => "evaluation passes",
            };
            eprint!("\r{what}: {done}/{total}");
            if done == total {
                eprintln!();
            }
        }
        Flow::Continue
    };
    let r = block_on(fv::run(&mut engine, &tok, &pairs, &settings, &mut progress))?.context("the run was stopped")?;
    let (plan, effects, vector, norm) = (&r.plan, &r.effects, &r.vector, r.norm);
    let layer = a.layer.unwrap_or_else(|| fv::best_layer(r.eval.as_ref(), spec.n_layer));

    let completions = block_on(fv::completions(&mut engine, &tok, &pairs, plan, vector, layer, bos, a.completions, a.max_new_tokens))?;

    if let Some(out) = &a.out {
        let (name, model, task, created) =
            (format!("{} fv", file_stem(&a.task)), model_name(&a.model.model), file_stem(&a.task), now_rfc3339());
        let p = fv::Provenance { name: &name, model: &model, task: &task, prompts: plan.prompts.len(), shots: a.shots, created: &created };
        let entry = fv::to_entry(vector, &r.vector_heads, layer, &p);
        write_entry(&entry, out, None)?;
    }

    let head_obj = |h: &Head| json!({"layer": h.layer, "head": h.head});
    if a.json {
        let heads: Vec<_> =
            effects.aie.iter().enumerate().map(|(i, &x)| json!({"layer": i / spec.n_head, "head": i % spec.n_head, "aie": x})).collect();
        let mut eval_json = match &r.eval {
            Some(e) => serde_json::to_value(e)?,
            None => json!({"pairs": 0, "layers": []}),
        };
        eval_json["layer"] = json!(layer);
        eval_json["completions"] = serde_json::to_value(&completions)?;
        let out = json!({
            "task": a.task.display().to_string(),
            "pairs": pairs.len(),
            "shots": a.shots,
            "prompts": plan.prompts.len(),
            "bos": bos,
            "prompt_tokens": {"clean": r.clean, "corrupted": r.corrupted},
            "answers": r.answers,
            "clean_prob": r.clean_prob,
            "corrupted_prob": effects.corrupted_prob,
            "heads": heads,
            "top_heads": r.top.iter().map(head_obj).collect::<Vec<_>>(),
            "vector_heads": r.vector_heads.iter().map(head_obj).collect::<Vec<_>>(),
            "layer": layer,
            "vector": vector,
            "norm": norm,
            "eval": eval_json,
        });
        outln!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }

    let how = if a.in_order { "in order".to_string() } else { format!("seed {}", a.seed) };
    outln!(
        "{}: {} pairs; {} prompts of {} demonstrations ({how}); {} held out",
        a.task.display(),
        pairs.len(),
        plan.prompts.len(),
        a.shots,
        plan.held_out.len()
    );
    outln!("P(answer) at the last token: clean {:.4}, corrupted {:.4}", r.clean_prob, effects.corrupted_prob);
    outln!("average indirect effect, layers × heads:");
    out!("{:>5}", "");
    for h in 0..spec.n_head {
        out!(" {:>8}", format!("h{h}"));
    }
    outln!();
    for l in 0..spec.n_layer {
        out!("{:>5}", format!("L{l}"));
        for h in 0..spec.n_head {
            out!(" {:>8.4}", effects.aie[l * spec.n_head + h]);
        }
        outln!();
    }
    let list = |hs: &[Head]| {
        hs.iter()
            .map(|h| format!("{}.{} ({:.4})", h.layer, h.head, effects.aie[h.layer * spec.n_head + h.head]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    outln!("top heads: {}", list(&r.top));
    outln!("function vector: {} heads ({}), norm {norm:.4}", r.vector_heads.len(), list(&r.vector_heads));
    match &r.eval {
        None => outln!("no held-out pairs to evaluate on: give a longer task file, fewer prompts or (with a seed) --held-out"),
        Some(e) => {
            outln!(
                "first-token accuracy on {} held-out pairs without the vector: zero-shot {:.3}, shuffled labels {:.3}",
                e.pairs,
                e.zero_shot,
                e.shuffled
            );
            outln!("{:>6} {:>10} {:>10}   (the vector added to resid_pre at the last position)", "layer", "zero-shot", "shuffled");
            for l in &e.layers {
                outln!("{:>6} {:>10.3} {:>10.3}", l.layer, l.zero_shot, l.shuffled);
            }
        }
    }
    if !completions.is_empty() {
        outln!("greedy completions, the vector at layer {layer}:");
        for c in &completions {
            outln!("  {:?} (expected {:?}): unsteered {:?} | steered {:?}", fv::query(&c.input), c.expected, c.unsteered, c.steered);
        }
    }
    if let Some(out) = &a.out {
        outln!("saved to {} (layer {layer}; steer with --vector {}:{layer}:1 --positions last)", out.display(), out.display());
    }
    Ok(())
}
