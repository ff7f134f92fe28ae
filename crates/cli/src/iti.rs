//! `tiller iti`: Inference-Time Intervention (Li et al.): a logistic-regression probe per
//! attention head on labelled statements, the heads that read truth best, and their shifts as
//! per-head steering terms, with completions side by side when a prompt is given.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pollster::block_on;
use serde_json::json;
use tiller_core::generate::{generate, Flow};
use tiller_core::iti::{self, Direction, SplitOrder};
use tiller_core::pairs::MAX_DATASET_BYTES;
use tiller_core::steer::encode_with_bos;
use tiller_core::weights::Dtype;
use tiller_core::{Backend, Positions, Recipe, Sampling};

use crate::engine::open_model;
use crate::vector::{read_limited, BosArgs};
use crate::ModelArgs;

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    /// Mean of the true statements' activations − the false ones' (Li et al.'s best).
    #[value(name = "mass-mean", alias = "mass_mean")]
    MassMean,
    /// The probe's weights.
    Probe,
}

#[derive(Args)]
pub struct ItiArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Labelled statements: JSON lines of {"text": "...", "label": true|false}
    /// (datasets/icl/statements.jsonl has 120).
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// The heads shifted: the K of best validation accuracy.
    #[arg(long, default_value_t = 8)]
    top_heads: usize,
    /// The shift's strength: α × σ along the direction.
    #[arg(long, default_value_t = 15.0, allow_hyphen_values = true)]
    alpha: f32,
    #[arg(long, value_enum, default_value = "mass-mean")]
    direction: DirectionArg,
    /// The fraction of the statements held out to measure each probe on.
    #[arg(long, default_value_t = 0.2)]
    val: f64,
    /// The seed of the split.
    #[arg(long, default_value_t = 0, conflicts_with = "in_order")]
    seed: u64,
    /// No shuffle: the last --val fraction of the file is the validation split.
    #[arg(long)]
    in_order: bool,
    #[command(flatten)]
    bos: BosArgs,
    /// Completions of this prompt without and with the shifts, side by side.
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long, default_value_t = 1)]
    n: usize,
    #[arg(long = "max-tokens", default_value_t = 30)]
    max_tokens: usize,
    /// Argmax decoding (no frequency penalty); otherwise the ActAdd post's sampling.
    #[arg(long)]
    greedy: bool,
    #[arg(long = "gen-seed", default_value_t = 0)]
    gen_seed: u64,
    /// Write the captured activations (`z` [N, L, NH, HD] f32, `label` [N]) as safetensors,
    /// to fit probes elsewhere on exactly these.
    #[arg(long, value_name = "FILE")]
    activations: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: ItiArgs) -> Result<()> {
    let bytes = read_limited(&a.data, MAX_DATASET_BYTES)?;
    let statements = iti::parse_statements(&bytes).with_context(|| a.data.display().to_string())?;
    let order = if a.in_order { SplitOrder::InOrder } else { SplitOrder::Seeded(a.seed) };
    let (train, val) = iti::split(statements.len(), a.val, order)?;
    let (mut engine, tok) = open_model(&a.model)?;
    let spec = *engine.config();
    let bos = a.bos.bos(&tok);
    let texts = statements.iter().map(|s| encode_with_bos(&tok, &s.text, bos)).collect::<tiller_core::Result<Vec<_>>>()?;
    let labels: Vec<bool> = statements.iter().map(|s| s.label).collect();
    let show = !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let acts = block_on(iti::head_activations(&mut engine, &texts, &mut |done, total| {
        if show {
            eprint!("\rstatements: {done}/{total}");
            if done == total {
                eprintln!();
            }
        }
        Flow::Continue
    }))?
    .context("the run was stopped")?;
    if let Some(path) = &a.activations {
        let z: Vec<u8> = acts.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
        let label: Vec<u8> = labels.iter().flat_map(|&l| f32::from(u8::from(l)).to_le_bytes()).collect();
        let file = tiller_core::weights::write_safetensors(&[
            ("z".into(), Dtype::F32, vec![acts.len(), spec.n_layer, spec.n_head, spec.head_dim], z),
            ("label".into(), Dtype::F32, vec![labels.len()], label),
        ]);
        std::fs::write(path, file).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let direction = match a.direction {
        DirectionArg::MassMean => Direction::MassMean,
        DirectionArg::Probe => Direction::Probe,
    };
    let k = a.top_heads.clamp(1, spec.n_layer * spec.n_head);
    let r = iti::probe_heads(&spec, &acts, &labels, &train, &val, k, direction);
    let vectors = iti::terms(&r.top, a.alpha);

    let generation = match &a.prompt {
        Some(prompt) => {
            let sampling = if a.greedy { Sampling { greedy: true, freq_penalty: 0.0, ..Sampling::default() } } else { Sampling::default() };
            let recipe = Recipe {
                prompt: prompt.clone(),
                vectors: vectors.clone(),
                bos,
                positions: Positions::All,
                sampling,
                seed: a.gen_seed,
                n: a.n,
                max_new_tokens: a.max_tokens,
                ..Recipe::default()
            };
            Some(block_on(generate(&mut engine, &tok, &recipe, |_| Flow::Continue))?)
        }
        None => None,
    };

    if a.json {
        let mut out = json!({
            "statements": statements.len(),
            "bos": bos,
            "heads": r.heads,
            "top_heads": r.top,
            "split": {"train": r.train, "val": r.val},
            "alpha": a.alpha,
            "direction": direction.as_str(),
            "vectors": vectors,
        });
        if let Some(g) = &generation {
            out["generation"] = serde_json::to_value(g)?;
        }
        outln!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    outln!(
        "{}: {} statements ({} true); probes trained on {}, checked on {}",
        a.data.display(),
        statements.len(),
        labels.iter().filter(|&&l| l).count(),
        r.train.len(),
        r.val.len()
    );
    outln!("validation accuracy, layers × heads:");
    out!("{:>5}", "");
    for h in 0..spec.n_head {
        out!(" {:>6}", format!("h{h}"));
    }
    outln!();
    for l in 0..spec.n_layer {
        out!("{:>5}", format!("L{l}"));
        for h in 0..spec.n_head {
            out!(" {:>6.3}", r.heads[l * spec.n_head + h].accuracy);
        }
        outln!();
    }
    outln!("top heads ({} direction, α = {}):", direction.as_str(), a.alpha);
    for s in &r.top {
        outln!("  {}.{}  accuracy {:.3}  σ {:.4}", s.layer, s.head, s.accuracy, s.sigma);
    }
    if let Some(g) = &generation {
        for (i, (u, s)) in g.unsteered.iter().zip(&g.steered).enumerate() {
            outln!("--- comparison {} ---", i + 1);
            outln!("unsteered: {:?}", u.text);
            outln!("shifted:   {:?}", s.text);
        }
    }
    Ok(())
}
