//! `tiller inspect …`: reading a vector against text. `project`: where in a set of texts the
//! vector's direction is present, token by token (`tiller_core::inspect`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use pollster::block_on;
use tiller_core::generate::Flow;
use tiller_core::inspect::{self, Measure};
use tiller_core::Site;

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

pub fn run(cmd: InspectCommand) -> Result<()> {
    match cmd {
        InspectCommand::Project(a) => run_project(a),
    }
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

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn run_project(a: ProjectArgs) -> Result<()> {
    let (file, layer) = split_file_layer(&a.vector);
    let entry = read_entry(&file)?;
    let l = entry.pick(layer).with_context(|| file.display().to_string())?;
    let site: Site = a.site.map(Into::into).unwrap_or(entry.site);
    let texts = read_texts(&a.texts)?;
    let (mut engine, tok) = open_model(&a.model.model, a.model.device)?;
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
                outln!("{i},{k},{id},{},{},{}", csv_field(&piece), p.dot[k], p.cosine[k]);
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
