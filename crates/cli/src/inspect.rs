//! `tiller inspect …`: reading a vector against text. `project`: where in a set of texts the
//! vector's direction is present, token by token (`tiller_core::inspect`); `norms`: how large
//! the residual stream is at each position and layer, beside the steering tensor and vectors.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use pollster::block_on;
use tiller_core::generate::Flow;
use tiller_core::inspect::{self, Measure};
use tiller_core::library::LayerEntry;
use tiller_core::{Site, Term};

use crate::engine::open_model;
use crate::vector::{read_entry, read_limited, split_file_layer, BosArgs};
use crate::{ModelArgs, SiteArg};

/// At most this many bytes of texts, and this many texts, in one run.
const MAX_TEXTS_BYTES: usize = 64 << 20;
const MAX_TEXTS: usize = 100_000;

#[derive(Subcommand)]
pub enum InspectCommand {
    /// Projects every token's activation onto a vector (dot product and cosine) over texts,
    /// one per line: per text the per-token values, the max and the mean; the top texts.
    Project(ProjectArgs),
    /// Where the prompt sits: ‖resid_pre‖ at each position of each layer, beside the norm of
    /// the steering tensor of --add terms (per position) and of each --vector.
    Norms(NormsArgs),
    /// What steering changed: generates as `tiller generate` does (same flags), then at each
    /// token of each steered completion the tokens whose probability rose and fell most
    /// between the steered and the unsteered model given the same prefix, and their KL.
    Diff(DiffArgs),
    /// The logit lens: at every layer the prompt's last position through the final norm and
    /// the unembedding (and the model's output), unsteered and steered by the --add terms and
    /// --vector files as `tiller generate` steers (same flags), with each layer's residual
    /// norms; and the steering tensor's norms and lens.
    Lens(LensArgs),
}

#[derive(Args)]
pub struct LensArgs {
    #[command(flatten)]
    run: crate::GenerateArgs,
    /// How many top tokens to list at each layer.
    #[arg(long = "k", default_value_t = 5)]
    k: usize,
}

#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    run: crate::GenerateArgs,
    /// How many risen and fallen tokens to list at each position.
    #[arg(long = "changes", default_value_t = 5)]
    changes: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum By {
    Dot,
    Cosine,
}

#[derive(Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The vector: FILE:LAYER (FILE alone for a file that holds one layer), a Tiller
    /// safetensors vector or a GGUF control vector.
    #[arg(long = "vector", value_name = "FILE[:LAYER]")]
    vector: String,
    /// Where activations are read (default: the vector's own site).
    #[arg(long, value_enum)]
    site: Option<SiteArg>,
    /// A text file, one text per line (blank lines are skipped).
    #[arg(long, value_name = "FILE")]
    texts: PathBuf,
    /// How many top texts to list (ranked by their max).
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Rank texts and tokens by the dot product or by the cosine.
    #[arg(long, value_enum, default_value = "dot")]
    by: By,
    /// Print one JSON object: every text's per-token values, and the top texts.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: a header line, then a row per (text, token); texts are numbered from 0, as
    /// the JSON's `index`.
    #[arg(long)]
    csv: bool,
    #[command(flatten)]
    bos: BosArgs,
}

#[derive(Args)]
pub struct NormsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// A steering term LAYER:COEFF:TEXT (repeatable): its tensor's norm per position.
    #[arg(long = "add", value_name = "L:C:TEXT", allow_hyphen_values = true)]
    add: Vec<String>,
    /// A vector file FILE or FILE:LAYER (repeatable): its norm at each layer it holds.
    #[arg(long = "vector", value_name = "FILE[:LAYER]")]
    vector: Vec<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bos: BosArgs,
}

pub fn run(cmd: InspectCommand) -> Result<()> {
    match cmd {
        InspectCommand::Project(a) => run_project(a),
        InspectCommand::Norms(a) => run_norms(a),
        InspectCommand::Diff(a) => run_diff(a),
        InspectCommand::Lens(a) => run_lens(a),
    }
}

fn run_norms(a: NormsArgs) -> Result<()> {
    let terms = a.add.iter().map(|s| Term::parse(s).map_err(anyhow::Error::from)).collect::<Result<Vec<_>>>()?;
    let mut vectors = Vec::new();
    for spec in &a.vector {
        let (file, layer) = split_file_layer(spec);
        let entry = read_entry(&file)?;
        let layers: Vec<&LayerEntry> = match layer {
            Some(l) => vec![entry.pick(Some(l)).with_context(|| file.display().to_string())?],
            None => entry.layers.iter().collect(),
        };
        for l in layers {
            vectors.push(serde_json::json!({"name": entry.name, "layer": l.layer, "norm": tiller_core::library::norm(&l.vector)}));
        }
    }
    let (mut engine, tok) = open_model(&a.model)?;
    let bos = a.bos.bos(&tok);
    let ids = tiller_core::steer::encode_with_bos(&tok, &a.prompt, bos)?;
    let depth = tiller_core::Backend::config(&engine).n_layer;
    let all: Vec<usize> = (0..depth).collect();
    let norms = block_on(inspect::position_norms(&mut engine, &ids, &all)).context("--prompt")?;
    let medians: Vec<f64> = norms.iter().map(|at| tiller_core::contrast::typical_norm(at)).collect();
    let steering = if terms.is_empty() {
        Vec::new()
    } else {
        block_on(tiller_core::steer::steering_vectors(&mut engine, &tok, &terms, bos, Site::ResidPre))?
    };
    let c = tiller_core::Backend::config(&engine).n_embd;
    let steer_norms: Vec<(usize, Vec<f64>)> = steering
        .iter()
        .filter(|v| v.head.is_none())
        .map(|v| (v.layer, v.rows.chunks_exact(c).map(tiller_core::library::norm).collect()))
        .collect();
    let pieces = ids.iter().map(|&id| tok.decode(&[id])).collect::<tiller_core::Result<Vec<String>>>()?;
    if a.json {
        let layers: Vec<serde_json::Value> =
            all.iter().map(|&l| serde_json::json!({"layer": l, "residual": norms[l], "median": medians[l]})).collect();
        let steering: Vec<serde_json::Value> =
            steer_norms.iter().map(|(l, n)| serde_json::json!({"layer": l, "n": n.len(), "norms": n})).collect();
        let o = serde_json::json!({
            "prompt_tokens": ids,
            "tokens": pieces,
            "bos": bos,
            "layers": layers,
            "steering": steering,
            "vectors": vectors,
        });
        outln!("{o}");
        return Ok(());
    }
    outln!("‖resid_pre‖ of the prompt ({} tokens), the median over its tokens after the first:", ids.len());
    for &l in &all {
        let mut line = format!("  layer {l:>3}: {:>10.3}", medians[l]);
        if let Some((_, n)) = steer_norms.iter().find(|(sl, _)| *sl == l) {
            let peak = n.iter().copied().fold(0.0f64, f64::max);
            line.push_str(&format!("   steering tensor: largest row {peak:.3} ({:.0}% of the median)", 100.0 * peak / medians[l]));
        }
        for v in vectors.iter().filter(|v| v["layer"] == l) {
            let norm = v["norm"].as_f64().unwrap_or(0.0);
            line.push_str(&format!("   {}: {norm:.3} ({:.0}%)", v["name"].as_str().unwrap_or(""), 100.0 * norm / medians[l]));
        }
        outln!("{line}");
    }
    Ok(())
}

fn read_texts(path: &std::path::Path) -> Result<Vec<String>> {
    let bytes = read_limited(path, MAX_TEXTS_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!("{} is not UTF-8 text (line {line}): save it as UTF-8", path.display())
    })?;
    let texts: Vec<String> = text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()).map(String::from).collect();
    if texts.is_empty() {
        bail!("{} holds no texts: put one text per line", path.display());
    }
    if texts.len() > MAX_TEXTS {
        bail!("{} holds {} texts: Tiller projects at most {MAX_TEXTS} in one run; split the file", path.display(), texts.len());
    }
    Ok(texts)
}

fn run_project(a: ProjectArgs) -> Result<()> {
    let (file, layer) = split_file_layer(&a.vector);
    let entry = read_entry(&file)?;
    let l = entry.pick(layer).with_context(|| file.display().to_string())?;
    let site: Site = a.site.map(Into::into).unwrap_or(entry.site);
    let texts = read_texts(&a.texts)?;
    let (mut engine, tok) = open_model(&a.model)?;
    let bos = a.bos.bos(&tok);
    let ids = texts
        .iter()
        .enumerate()
        .map(|(i, t)| tiller_core::steer::encode_with_bos(&tok, t, bos).with_context(|| format!("text {} of {}", i + 1, a.texts.display())))
        .collect::<Result<Vec<_>>>()?;
    let projections = block_on(inspect::project(&mut engine, &ids, l.layer, site, &l.vector, &mut |_, _| Flow::Continue))
        .with_context(|| format!("{} (texts from {})", a.vector, a.texts.display()))?
        .unwrap_or_default();
    let by = match a.by {
        By::Dot => Measure::Dot,
        By::Cosine => Measure::Cosine,
    };
    let top = inspect::top_texts(&projections, by, a.top);
    let pieces = |t: &[u32]| t.iter().map(|&id| tok.decode(&[id])).collect::<tiller_core::Result<Vec<String>>>();
    if a.csv {
        outln!("text_index,position,token_id,token,dot,cosine");
        for (i, (t, p)) in ids.iter().zip(&projections).enumerate() {
            for (k, (id, piece)) in t.iter().zip(pieces(t)?).enumerate() {
                outln!("{i},{k},{id},{},{},{}", tiller_core::sweep::csv_field(&piece), p.dot[k], p.cosine[k]);
            }
        }
    } else if a.json {
        let mut all = Vec::with_capacity(texts.len());
        for (i, ((text, t), p)) in texts.iter().zip(&ids).zip(&projections).enumerate() {
            let tokens: Vec<serde_json::Value> = t
                .iter()
                .zip(pieces(t)?)
                .enumerate()
                .map(|(k, (id, piece))| serde_json::json!({"id": id, "text": piece, "dot": p.dot[k], "cosine": p.cosine[k]}))
                .collect();
            let (max, max_at) = p.max(by);
            all.push(serde_json::json!({"index": i, "text": text, "tokens": tokens, "max": max, "max_at": max_at, "mean": p.mean(by)}));
        }
        let o = serde_json::json!({
            "vector": entry.name,
            "layer": l.layer,
            "site": site.as_str(),
            "vector_norm": tiller_core::library::norm(&l.vector),
            "by": by,
            "bos": bos,
            "texts": all,
            "top": top,
        });
        outln!("{o}");
    } else {
        let what = if by == Measure::Dot { "x · v" } else { "cosine" };
        outln!(
            "{} at layer {} ({}), ‖v‖ = {:.3}: the {} of {} texts with the largest {what}",
            entry.name,
            l.layer,
            site.as_str(),
            tiller_core::library::norm(&l.vector),
            top.len(),
            texts.len()
        );
        for (rank, &i) in top.iter().enumerate() {
            let p = &projections[i];
            let (max, at) = p.max(by);
            let ps = pieces(&ids[i])?;
            // The peak token in brackets, with a few tokens either side.
            let from = at.saturating_sub(8);
            let to = (at + 9).min(ps.len());
            let before: String = ps[from..at].concat();
            let after: String = ps[at + 1..to].concat();
            outln!(
                "{:>3}. text {} max {max:.4} (mean {:.4}): {}{before}[{}]{after}{}",
                rank + 1,
                i + 1,
                p.mean(by),
                if from > 0 { "…" } else { "" },
                ps[at],
                if to < ps.len() { "…" } else { "" }
            );
        }
    }
    Ok(())
}

fn run_diff(a: DiffArgs) -> Result<()> {
    if a.changes == 0 || a.changes > 100 {
        bail!("--changes {} is not usable: list between 1 and 100 tokens", a.changes);
    }
    let crate::Prepared { mut engine, tok, recipe, prompt, vectors } = crate::prepare_run(&a.run)?;
    let gen =
        block_on(tiller_core::generate::generate_with_vectors(&mut engine, &tok, &recipe, &prompt, &vectors, &mut |_| Flow::Continue))?;
    let piece = |id: u32| tok.decode(&[id]);
    let change_json = |c: &inspect::TokenChange| -> Result<serde_json::Value> {
        Ok(serde_json::json!({"id": c.id, "text": piece(c.id)?, "p_steered": c.p_steered, "p_unsteered": c.p_unsteered}))
    };
    let mut completions = Vec::new();
    for (i, c) in gen.steered.iter().enumerate() {
        let changes =
            block_on(inspect::token_changes(&mut engine, &prompt, &c.tokens, &vectors, recipe.site, recipe.positions, a.changes))?;
        if a.run.json {
            let mut at = Vec::new();
            for (k, ch) in changes.iter().enumerate() {
                at.push(serde_json::json!({
                    "position": k,
                    "token": change_json(&ch.token)?,
                    "kl": ch.kl,
                    "rose": ch.rose.iter().map(change_json).collect::<Result<Vec<_>>>()?,
                    "fell": ch.fell.iter().map(change_json).collect::<Result<Vec<_>>>()?,
                }));
            }
            completions.push(serde_json::json!({"index": i, "text": c.text, "tokens": c.tokens, "positions": at}));
        } else {
            outln!("steered completion {} of {}: {:?}", i + 1, gen.steered.len(), c.text);
            for (k, ch) in changes.iter().enumerate() {
                let list = |cs: &[inspect::TokenChange]| -> Result<String> {
                    Ok(cs
                        .iter()
                        .map(|c| Ok(format!("{:?} {:+.3}", piece(c.id)?, c.p_steered - c.p_unsteered)))
                        .collect::<Result<Vec<_>>>()?
                        .join(", "))
                };
                outln!(
                    "  {k:>3} {:<16} p {:.3} (unsteered {:.3})  KL {:.4}  rose: {}  fell: {}",
                    format!("{:?}", piece(ch.token.id)?),
                    ch.token.p_steered,
                    ch.token.p_unsteered,
                    ch.kl,
                    list(&ch.rose)?,
                    list(&ch.fell)?
                );
            }
        }
    }
    if a.run.json {
        outln!("{}", serde_json::json!({"prompt_tokens": prompt, "recipe": recipe, "steered": completions}));
    }
    Ok(())
}

fn run_lens(a: LensArgs) -> Result<()> {
    if a.k == 0 || a.k > 100 {
        bail!("--k {} is not usable: list between 1 and 100 tokens", a.k);
    }
    let crate::Prepared { mut engine, tok, recipe, prompt, vectors } = crate::prepare_run(&a.run)?;
    let (layers, steering) = block_on(inspect::prompt_lens(&mut engine, &tok, &prompt, &vectors, recipe.site, recipe.positions, a.k))?;
    let entries = |es: &[tiller_core::vocab::VocabEntry]| -> Vec<serde_json::Value> {
        es.iter().map(|e| serde_json::json!({"id": e.id, "text": e.token, "logit": e.score})).collect()
    };
    if a.run.json {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "layer": l.layer,
                    "norms": l.norms,
                    "steered_norms": l.steered_norms,
                    "top": entries(&l.top),
                    "steered_top": entries(&l.steered_top),
                })
            })
            .collect();
        let steering: Vec<serde_json::Value> = steering
            .iter()
            .map(|s| serde_json::json!({"layer": s.layer, "norms": s.norms, "top": entries(&s.top), "bottom": entries(&s.bottom)}))
            .collect();
        outln!("{}", serde_json::json!({"prompt_tokens": prompt, "layers": layers, "steering": steering}));
        return Ok(());
    }
    let n = layers.len() - 1;
    let list = |es: &[tiller_core::vocab::VocabEntry]| es.iter().map(|e| format!("{:?}", e.token)).collect::<Vec<_>>().join(" ");
    outln!("The logit lens of the prompt's last position ({} tokens), unsteered | steered:", prompt.len());
    for l in &layers {
        let name = if l.layer == n { "output".to_string() } else { format!("layer {:>3}", l.layer) };
        outln!("  {name:>9}: {}  |  {}", list(&l.top), list(&l.steered_top));
    }
    for s in &steering {
        outln!(
            "steering tensor at layer {}: largest row {:.3}; its vector's lens: {} (against: {})",
            s.layer,
            s.norms.iter().copied().fold(0.0, f64::max),
            list(&s.top),
            list(&s.bottom)
        );
    }
    Ok(())
}
