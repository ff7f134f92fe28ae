//! `tiller vector …`: CAA and PCA vectors from pair datasets, the A/B evaluation, and vector
//! files (safetensors library entries, GGUF control vectors for llama.cpp, combinations).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use pollster::block_on;
use tiller_core::contrast::{self, Method, TokenChoice};
use tiller_core::generate::Flow;
use tiller_core::library::{self, LayerEntry, VectorEntry};
use tiller_core::pairs::{self, Pair, PairEncoding};
use tiller_core::steer::LayerVector;
use tiller_core::{Backend, Positions, Site, Tokenizer};

use crate::engine::{open_model, Device};
use crate::{ModelArgs, SiteArg};

#[derive(Subcommand)]
pub enum VectorCommand {
    /// A steering vector from a pair dataset: CAA's mean difference, or repeng's PCA.
    Caa(CaaArgs),
    /// CAA's behavioural measure: p(matching answer letter) against the coefficient, per layer.
    #[command(name = "eval-ab")]
    EvalAb(EvalAbArgs),
    /// Converts a vector file: safetensors → GGUF control vector (llama.cpp) or back.
    Export(ConvertArgs),
    /// Reads a GGUF control vector (llama.cpp, repeng) or a safetensors vector into a Tiller
    /// vector file.
    Import(ConvertArgs),
    /// A linear combination of vector files, such as `a - b + 0.5*c`.
    Combine(CombineArgs),
    /// What a vector file holds: provenance, layers, norms (and cosine similarities).
    Info(InfoArgs),
    /// The decoded vocabulary of a saved vector (v · Wᵀ of the model's head), per layer.
    Vocab(VocabArgs),
}

/// `--bos`/`--no-bos` for the dataset's texts.
#[derive(Args)]
pub struct BosArgs {
    /// Prefix each text with the tokenizer's BOS. Default: what the tokenizer's own
    /// post-processor does (on for Llama 3, off for GPT-2).
    #[arg(long, conflicts_with = "no_bos")]
    bos: bool,
    #[arg(long = "no-bos")]
    no_bos: bool,
}

impl BosArgs {
    pub fn bos(&self, tok: &Tokenizer) -> bool {
        crate::bos_choice(self.bos, self.no_bos, tok)
    }
}

#[derive(Args)]
pub struct DatasetArgs {
    /// JSON lines (or a JSON list) of {"positive", "negative"} pairs or CAA's
    /// {"question", "answer_matching_behavior", "answer_not_matching_behavior"} items.
    #[arg(long, value_name = "FILE")]
    pairs: PathBuf,
    #[command(flatten)]
    bos: BosArgs,
    /// Render positive/negative texts through the chat template as the user message (as
    /// --chat-terms does for steering texts).
    #[arg(long)]
    chat: bool,
    /// Multiple-choice items go through the chat template (question as the user message, the
    /// answer as the assistant's) when the tokenizer has one; this turns that off, using CAA's
    /// base-model form `Input: {question}\nResponse: {answer}`.
    #[arg(long = "no-chat")]
    no_chat: bool,
    /// A system message for the chat template.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Keep the last FRACTION of the pairs out (0 ≤ FRACTION < 1): `caa` builds the vector
    /// from the rest, `eval-ab` evaluates only them, so the same number splits one file the
    /// same way in both.
    #[arg(long = "held-out", value_name = "FRACTION", default_value_t = 0.0)]
    held_out: f64,
}

impl DatasetArgs {
    fn read(&self) -> Result<Vec<Pair>> {
        let bytes = read_limited(&self.pairs, pairs::MAX_DATASET_BYTES)?;
        pairs::parse_dataset(&bytes).with_context(|| self.pairs.display().to_string())
    }

    fn check_fraction(&self) -> Result<()> {
        if !(self.held_out.is_finite() && (0.0..1.0).contains(&self.held_out)) {
            bail!("--held-out {} must be a fraction in [0, 1)", self.held_out);
        }
        Ok(())
    }

    fn encoding(&self, tok: &Tokenizer) -> Result<PairEncoding> {
        let system = self.system.clone().unwrap_or_default();
        PairEncoding::new(tok, self.bos.bos(tok), self.chat, !self.no_chat, &system).context("--chat")
    }

    fn tokens(&self, tok: &Tokenizer, pairs: &[Pair]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
        Ok(self.encoding(tok)?.tokens(tok, pairs)?)
    }
}

/// Reads a file, refusing one larger than `max` bytes before reading it.
pub fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if len > max as u64 {
        bail!("{} is {:.1} MB, more than the {} MB Tiller reads for this kind of file", path.display(), len as f64 / 1e6, max >> 20);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MethodArg {
    #[value(name = "mean_diff", alias = "mean-diff")]
    MeanDiff,
    #[value(name = "pca_diff", alias = "pca-diff")]
    PcaDiff,
    #[value(name = "pca_center", alias = "pca-center")]
    PcaCenter,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TokenArg {
    Last,
    Mean,
}

#[derive(Args)]
pub struct CaaArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DatasetArgs,
    /// The layer (the residual stream before block L, HF `hidden_states[L]`); repeat it, or
    /// give A..B, for several.
    #[arg(long, value_name = "L", required = true)]
    layer: Vec<String>,
    #[arg(long, value_enum, default_value = "resid_pre")]
    site: SiteArg,
    #[arg(long, value_enum, default_value = "mean_diff")]
    method: MethodArg,
    /// The activation of each text: its last token, or the mean over its tokens.
    #[arg(long, value_enum, default_value = "last")]
    token: TokenArg,
    /// Save the vector: FILE.safetensors (a Tiller vector file) or FILE.gguf (a llama.cpp
    /// control vector; layer L becomes direction.(L-1)).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The entry's name (default: the dataset's file name and the method).
    #[arg(long)]
    name: Option<String>,
    /// Print one JSON object (a list of them for several layers).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalAbArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DatasetArgs,
    /// A vector file, FILE or FILE:LAYER (repeatable); every layer of the file when no layer
    /// is given. Each layer is one line of the chart.
    #[arg(long = "vector", value_name = "FILE[:LAYER]", required = true)]
    vector: Vec<String>,
    /// Coefficients, comma-separated.
    #[arg(long, allow_hyphen_values = true, default_value = "-2,-1,0,1,2")]
    coeffs: String,
    /// Print CSV: a header line, then a row per (layer, coefficient).
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    #[arg(long)]
    json: bool,
}

/// Accepted by every subcommand for uniformity; a conversion runs no model.
#[derive(Args)]
pub struct NoModelArgs {
    #[arg(long, value_enum, hide = true)]
    device: Option<Device>,
    #[arg(long, hide = true)]
    bos: bool,
    #[arg(long = "no-bos", hide = true)]
    no_bos: bool,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The file to read (.safetensors or .gguf).
    input: PathBuf,
    /// The file to write; its extension picks the format (.gguf or .safetensors).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// GGUF: controlvector.model_hint (llama.cpp's architecture name: gpt2, llama, qwen2,
    /// gptneox). Default: the model the vector was made on.
    #[arg(long = "model-hint")]
    model_hint: Option<String>,
    /// Import: the model the vector is for, when the file does not say.
    #[arg(long)]
    model: Option<String>,
    /// The entry's name (default: kept, or the file's name).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ignored: NoModelArgs,
}

#[derive(Args)]
pub struct CombineArgs {
    /// The formula, such as `a - b + 0.5*c`.
    #[arg(long, allow_hyphen_values = true)]
    formula: String,
    /// Binds a name of the formula to a vector file, NAME=FILE (repeatable).
    #[arg(long = "vec", value_name = "NAME=FILE", required = true)]
    vec: Vec<String>,
    /// Combine only this layer (default: every layer all the vectors have).
    #[arg(long)]
    layer: Option<usize>,
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ignored: NoModelArgs,
}

#[derive(Args)]
pub struct InfoArgs {
    /// Vector files; with two or more, their cosine similarities at each shared layer.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ignored: NoModelArgs,
}

#[derive(Args)]
pub struct VocabArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A vector file, FILE or FILE:LAYER (every layer when none is given).
    #[arg(long = "vector", value_name = "FILE[:LAYER]")]
    vector: String,
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Apply the final norm before unembedding (logit lens).
    #[arg(long = "ln-f")]
    ln_f: bool,
    /// Also measure the residual stream at each layer for this prompt: the median over its
    /// tokens (the first left out) of ‖resid_pre‖, beside the vector's norm ("how big is
    /// coefficient 8?"). Tokenized with --bos/--no-bos.
    #[arg(long)]
    prompt: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bos: BosArgs,
}

pub fn run(cmd: VectorCommand) -> Result<()> {
    match cmd {
        VectorCommand::Caa(a) => run_caa(a),
        VectorCommand::EvalAb(a) => run_eval_ab(a),
        VectorCommand::Export(a) | VectorCommand::Import(a) => run_convert(a),
        VectorCommand::Combine(a) => run_combine(a),
        VectorCommand::Info(a) => run_info(a),
        VectorCommand::Vocab(a) => run_vocab(a),
    }
}

/// The current time as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    library::rfc3339_utc(secs)
}

pub(crate) fn file_stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "vector".into())
}

/// The model's name for provenance: its folder's name.
pub(crate) fn model_name(dir: &Path) -> String {
    dir.canonicalize().ok().as_deref().unwrap_or(dir).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn is_gguf(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Reads a vector file of either format.
pub fn read_entry(path: &Path) -> Result<VectorEntry> {
    // `FILE#I`: vector I of a MELBO file (when no file has that whole name)
    let text = path.to_string_lossy();
    if let Some((file, index)) = text.rsplit_once('#').filter(|(_, i)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())) {
        if !path.exists() {
            return melbo_entry(Path::new(file), index.parse().ok());
        }
    }
    let bytes = read_limited(path, tiller_core::melbo::MAX_SET_BYTES.max(library::MAX_FILE_BYTES))?;
    if tiller_core::melbo::MelboSet::from_safetensors(&bytes).is_ok() {
        return melbo_entry(path, None);
    }
    let name = file_stem(path);
    VectorEntry::from_bytes(&bytes, &name).with_context(|| path.display().to_string())
}

/// Vector `index` of a MELBO file as a library entry at its source layer (resid_pre); without
/// an index the file must hold one vector.
fn melbo_entry(path: &Path, index: Option<usize>) -> Result<VectorEntry> {
    let bytes = read_limited(path, tiller_core::melbo::MAX_SET_BYTES)?;
    let set = tiller_core::melbo::MelboSet::from_safetensors(&bytes).with_context(|| path.display().to_string())?;
    let n = set.vectors.len();
    let i = match index {
        Some(i) if i < n => i,
        Some(i) => bail!("{} holds {n} MELBO vectors (0..{}); #{i} is past them", path.display(), n - 1),
        None if n == 1 => 0,
        None => bail!("{} holds {n} MELBO vectors: name one as {}#I (0 ≤ I < {n})", path.display(), path.display()),
    };
    let layer = set.source().with_context(|| format!("{} does not say its source layer", path.display()))?;
    let meta = |k: &str| set.metadata.get(k).cloned().unwrap_or_default();
    Ok(VectorEntry {
        name: format!("{} #{i}", file_stem(path)),
        model: meta("model"),
        site: tiller_core::Site::ResidPre,
        method: meta("method"),
        source: meta("prompts"),
        created: meta("created"),
        formula: None,
        extra: [("melbo.index".to_string(), i.to_string())].into_iter().collect(),
        layers: vec![library::LayerEntry { layer, vector: set.vectors[i].clone(), front: None }],
    })
}

/// Writes an entry in the format the file's extension names; returns notes for stderr.
pub(crate) fn write_entry(entry: &VectorEntry, out: &Path, hint: Option<&str>) -> Result<Vec<String>> {
    let (bytes, notes) = if is_gguf(out) {
        let hint = hint.map(String::from).unwrap_or_else(|| entry.gguf_model_hint());
        entry.to_gguf(&hint)?
    } else {
        (entry.to_safetensors()?, Vec::new())
    };
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(notes)
}

fn parse_layer_list(specs: &[String], n_layer: usize) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for s in specs {
        if s.contains("..") {
            out.extend(crate::parse_layers(s, n_layer)?);
        } else {
            let l: usize = s.trim().parse().with_context(|| format!("--layer `{s}` is not a layer number"))?;
            if l >= n_layer {
                bail!("--layer {l} is out of range: this model has layers 0..{}", n_layer - 1);
            }
            out.push(l);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn run_caa(a: CaaArgs) -> Result<()> {
    a.data.check_fraction()?;
    let method = match a.method {
        MethodArg::MeanDiff => Method::MeanDiff,
        MethodArg::PcaDiff => Method::PcaDiff,
        MethodArg::PcaCenter => Method::PcaCenter,
    };
    let token = match a.token {
        TokenArg::Last => TokenChoice::Last,
        TokenArg::Mean => TokenChoice::Mean,
    };
    let site: Site = a.site.into();
    if let Some(out) = &a.out {
        if is_gguf(out) && site != Site::ResidPre {
            bail!("--out {}: llama.cpp's control vectors steer the residual stream (resid_pre), not {}", out.display(), site.as_str());
        }
    }
    let all = a.data.read()?;
    let (train, _) = pairs::split_held_out(&all, a.data.held_out);
    let (mut engine, tok) = open_model(&a.model)?;
    let n_layer = engine.config().n_layer;
    let layers = parse_layer_list(&a.layer, n_layer)?;
    if let (Some(out), Some(&low)) = (&a.out, layers.last()) {
        if is_gguf(out) && low < 2 {
            bail!(
                "--out {}: layer {low} cannot be a GGUF control vector (llama.cpp's direction.N is added after block N, \
                 N ≥ 1, so Tiller's layers 0 and 1 have none); save it as .safetensors or pick a layer of 2 or more",
                out.display()
            );
        }
    }
    let seqs = a.data.tokens(&tok, train)?;
    let show_progress = !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut results = Vec::new();
    for &layer in &layers {
        let mut progress = |done: usize, total: usize| {
            if show_progress {
                eprint!("\rlayer {layer}: {done}/{total} texts");
                if done == total {
                    eprintln!();
                }
            }
            Flow::Continue
        };
        let v = block_on(contrast::contrast_vector(&mut engine, &seqs, layer, site, method, token, &mut progress))?
            .context("the run was stopped")?;
        results.push(v);
    }
    let dataset = a.data.pairs.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = a.name.clone().unwrap_or_else(|| format!("{} {}", file_stem(&a.data.pairs), method.as_str()));
    let entry = contrast::to_entry(&results, &name, &model_name(&a.model.model), &dataset, train.len(), &now_rfc3339());
    if let Some(out) = &a.out {
        for note in write_entry(&entry, out, None)? {
            eprintln!("note: {note}");
        }
    }
    if a.json {
        let objs: Vec<serde_json::Value> = results
            .iter()
            .map(|v| {
                let mut o = serde_json::to_value(v).expect("a vector serializes");
                o["device"] = engine.describe().into();
                o["model"] = entry.model.clone().into();
                o
            })
            .collect();
        if objs.len() == 1 {
            outln!("{}", objs[0]);
        } else {
            outln!("{}", serde_json::Value::Array(objs));
        }
    } else {
        outln!("{} on {} ({}), {} pairs, {} token", method.as_str(), entry.model, engine.describe(), train.len(), token.as_str());
        for v in &results {
            let explained =
                v.explained_variance.map(|e| format!(", first component {:.1}% of the variance", e * 100.0)).unwrap_or_default();
            outln!(
                "  layer {:>3} {}: norm {:.4} ({:.2}× the texts' mean activation norm, {:.4}){explained}",
                v.layer,
                v.site.as_str(),
                v.norm,
                v.norm / v.activation_norm.max(f64::MIN_POSITIVE),
                v.activation_norm
            );
        }
        if let Some(out) = &a.out {
            outln!("saved to {}", out.display());
        }
    }
    Ok(())
}

/// `FILE` or `FILE:LAYER` (a path may itself hold colons: the part after the last one counts
/// as the layer only when it is a number).
pub fn split_file_layer(spec: &str) -> (PathBuf, Option<usize>) {
    if let Some((file, layer)) = spec.rsplit_once(':') {
        if let Ok(l) = layer.trim().parse::<usize>() {
            return (PathBuf::from(file), Some(l));
        }
    }
    (PathBuf::from(spec), None)
}

fn parse_coeffs(s: &str, flag: &str) -> Result<Vec<f32>> {
    let mut out: Vec<f32> = Vec::new();
    for c in s.split(',') {
        let v: f32 = c.trim().parse().with_context(|| format!("`{c}` in {flag} is not a number"))?;
        if !v.is_finite() || v.abs() > tiller_core::recipe::MAX_COEFF {
            bail!("{flag}: {v} must be a finite number of size at most {}", tiller_core::recipe::MAX_COEFF);
        }
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

fn run_eval_ab(a: EvalAbArgs) -> Result<()> {
    a.data.check_fraction()?;
    let coeffs = parse_coeffs(&a.coeffs, "--coeffs")?;
    let all = a.data.read()?;
    let held = if a.data.held_out > 0.0 { pairs::split_held_out(&all, a.data.held_out).1 } else { &all[..] };
    let mut vectors: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut site = None;
    for spec in &a.vector {
        let (file, layer) = split_file_layer(spec);
        let entry = read_entry(&file)?;
        if site.is_some_and(|s| s != entry.site) {
            bail!("the vectors are at different sites; evaluate one site at a time");
        }
        site = Some(entry.site);
        match layer {
            Some(l) => vectors.push((l, entry.pick(Some(l))?.vector.clone())),
            None => vectors.extend(entry.layers.iter().map(|l| (l.layer, l.vector.clone()))),
        }
    }
    let (mut engine, tok) = open_model(&a.model)?;
    let choices = a.data.encoding(&tok)?.choices;
    let items = contrast::ab_items(&tok, &choices, held).with_context(|| a.data.pairs.display().to_string())?;
    let rows = block_on(contrast::eval_ab(&mut engine, &items, &vectors, site.unwrap_or_default(), &coeffs, &mut |_, _| Flow::Continue))?
        .context("the run was stopped")?;
    if a.json {
        outln!("{}", serde_json::to_string(&rows)?);
    } else if a.csv {
        out!("{}", contrast::ab_csv(&rows));
    } else {
        outln!(
            "p(matching answer) over {} items, unsteered {:.3} ({})",
            items.len(),
            rows.first().map_or(0.0, |r| r.p_matching_unsteered),
            engine.describe()
        );
        outln!("{:>5} {:>9} {:>10} {:>9}", "layer", "coeff", "p_matching", "p_letters");
        for r in &rows {
            outln!("{:>5} {:>9} {:>10.4} {:>9.4}", r.layer, r.coeff, r.p_matching, r.p_letters);
        }
    }
    Ok(())
}

fn summary(entry: &VectorEntry) -> serde_json::Value {
    serde_json::json!({
        "name": entry.name,
        "model": entry.model,
        "site": entry.site.as_str(),
        "method": entry.method,
        "source": entry.source,
        "created": entry.created,
        "formula": entry.formula,
        "width": entry.width(),
        "layers": entry.norms().into_iter().map(|(l, n)| serde_json::json!({"layer": l, "norm": n})).collect::<Vec<_>>(),
    })
}

fn run_convert(a: ConvertArgs) -> Result<()> {
    let mut entry = read_entry(&a.input)?;
    if let Some(n) = &a.name {
        entry.name = n.clone();
    }
    if let Some(m) = &a.model {
        entry.model = m.clone();
    }
    let notes = write_entry(&entry, &a.out, a.model_hint.as_deref()).with_context(|| a.out.display().to_string())?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    if a.json {
        let mut o = summary(&entry);
        o["out"] = a.out.display().to_string().into();
        o["notes"] = notes.into();
        outln!("{o}");
    } else {
        outln!("{} → {} ({} layers: {:?})", a.input.display(), a.out.display(), entry.layers.len(), entry.layer_numbers());
    }
    Ok(())
}

fn run_combine(a: CombineArgs) -> Result<()> {
    let terms = library::parse_formula(&a.formula)?;
    let mut bound: Vec<(String, VectorEntry)> = Vec::new();
    for spec in &a.vec {
        let (name, file) = spec.split_once('=').with_context(|| format!("--vec `{spec}` is not NAME=FILE"))?;
        bound.push((name.to_string(), read_entry(Path::new(file))?));
    }
    let mut picked: Vec<(f64, &VectorEntry)> = Vec::new();
    for (c, name) in &terms {
        let e = bound.iter().find(|(n, _)| n == name).map(|(_, e)| e).with_context(|| {
            format!(
                "the formula names `{name}` but no --vec {name}=FILE gives it (given: {})",
                bound.iter().map(|b| b.0.as_str()).collect::<Vec<_>>().join(", ")
            )
        })?;
        picked.push((*c, e));
    }
    let name = a.name.clone().unwrap_or_else(|| a.formula.clone());
    let mut entry = library::combine(&picked, a.layer, &name, &a.formula)?;
    entry.created = now_rfc3339();
    let notes = write_entry(&entry, &a.out, None)?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    if a.json {
        let mut o = summary(&entry);
        o["out"] = a.out.display().to_string().into();
        o["terms"] = terms.iter().map(|(c, n)| serde_json::json!({"name": n, "coeff": c})).collect::<Vec<_>>().into();
        outln!("{o}");
    } else {
        for (l, n) in entry.norms() {
            outln!("layer {l:>3}: norm {n:.4}");
        }
        outln!("saved {} to {}", a.formula, a.out.display());
    }
    Ok(())
}

fn run_info(a: InfoArgs) -> Result<()> {
    let entries: Vec<VectorEntry> = a.files.iter().map(|f| read_entry(f)).collect::<Result<_>>()?;
    let mut layers: Vec<usize> = entries.iter().flat_map(|e| e.layer_numbers()).collect();
    layers.sort_unstable();
    layers.dedup();
    let cosines: Vec<serde_json::Value> = if entries.len() > 1 {
        layers
            .iter()
            .filter_map(|&l| {
                let at: Vec<&VectorEntry> = entries.iter().filter(|e| e.layer(l).is_some()).collect();
                if at.len() < 2 || at.iter().any(|e| e.width() != at[0].width()) {
                    return None;
                }
                let vs: Vec<&[f32]> = at.iter().map(|e| e.layer(l).expect("filtered").vector.as_slice()).collect();
                let m = library::cosine_matrix(&vs);
                let n = vs.len();
                Some(serde_json::json!({
                    "layer": l,
                    "names": at.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
                    "matrix": (0..n).map(|i| m[i * n..(i + 1) * n].to_vec()).collect::<Vec<_>>(),
                }))
            })
            .collect()
    } else {
        Vec::new()
    };
    if a.json {
        outln!("{}", serde_json::json!({"vectors": entries.iter().map(summary).collect::<Vec<_>>(), "cosine": cosines}));
        return Ok(());
    }
    for e in &entries {
        outln!(
            "{} — {} on {} at {}, {} wide{}",
            e.name,
            e.method,
            if e.model.is_empty() { "?" } else { &e.model },
            e.site.as_str(),
            e.width(),
            e.formula.as_ref().map(|f| format!(", = {f}")).unwrap_or_default()
        );
        if !e.source.is_empty() {
            outln!("  from {}", e.source);
        }
        for (l, n) in e.norms() {
            outln!(
                "  layer {l:>3}: norm {n:.4}{}",
                if e.layer(l).is_some_and(|x| x.front.is_some()) { " (with ActAdd's front tensor)" } else { "" }
            );
        }
    }
    for c in &cosines {
        outln!("cosine similarity at layer {}:", c["layer"]);
        let names: Vec<String> = c["names"].as_array().into_iter().flatten().map(|n| n.as_str().unwrap_or("").to_string()).collect();
        for (i, row) in c["matrix"].as_array().into_iter().flatten().enumerate() {
            let cells: Vec<String> = row.as_array().into_iter().flatten().map(|x| format!("{:>7.3}", x.as_f64().unwrap_or(0.0))).collect();
            outln!("  {:<20} {}", names[i], cells.join(" "));
        }
    }
    Ok(())
}

/// `--vector FILE:LAYER:COEFF` of generate and logits: the saved vector at LAYER (a file with
/// one layer may leave LAYER empty: `FILE::COEFF`) × COEFF, at its own site, at `positions`.
pub fn vector_terms(specs: &[String], positions: Positions, n_layer: usize, width: usize) -> Result<Vec<LayerVector>> {
    let mut out = Vec::new();
    for spec in specs {
        let mut parts = spec.rsplitn(3, ':');
        let (Some(coeff), Some(layer), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("--vector `{spec}` is not FILE:LAYER:COEFF (for example love.safetensors:6:4)");
        };
        let coeff: f32 = coeff.trim().parse().with_context(|| format!("`{coeff}` in --vector `{spec}` is not a coefficient"))?;
        if !coeff.is_finite() || coeff.abs() > tiller_core::recipe::MAX_COEFF {
            bail!("--vector `{spec}`: the coefficient must be a finite number of size at most {}", tiller_core::recipe::MAX_COEFF);
        }
        let layer = if layer.trim().is_empty() {
            None
        } else {
            Some(layer.trim().parse::<usize>().with_context(|| format!("`{layer}` in --vector `{spec}` is not a layer number"))?)
        };
        let entry = read_entry(Path::new(file))?;
        let l = entry.pick(layer).with_context(|| file.to_string())?;
        if l.layer >= n_layer {
            bail!("--vector `{spec}`: layer {} is out of range: this model has layers 0..{}", l.layer, n_layer - 1);
        }
        if l.vector.len() != width {
            bail!(
                "--vector `{spec}`: the vector is {} wide but this model's residual stream is {width}: it was made on another model ({})",
                l.vector.len(),
                if entry.model.is_empty() { "unknown" } else { &entry.model }
            );
        }
        let front = if positions == Positions::Front { l.front.as_ref().map(|(n, rows)| (*n, rows.as_slice())) } else { None };
        out.push(LayerVector::from_saved(l.layer, coeff, &l.vector, front, entry.site, positions));
    }
    Ok(out)
}

fn run_vocab(a: VocabArgs) -> Result<()> {
    let (file, layer) = split_file_layer(&a.vector);
    let entry = read_entry(&file)?;
    let layers: Vec<&LayerEntry> = match layer {
        Some(l) => vec![entry.pick(Some(l))?],
        None => entry.layers.iter().collect(),
    };
    if entry.site == Site::Z {
        bail!("the vector is at the attention heads (z), which the head cannot read");
    }
    let (mut engine, tok) = open_model(&a.model)?;
    let mut out = Vec::new();
    for l in layers {
        let (top, bottom) = block_on(tiller_core::vocab::decode_vector(&mut engine, &tok, &l.vector, a.top, a.ln_f))
            .with_context(|| file.display().to_string())?;
        out.push((l.layer, tiller_core::library::norm(&l.vector), top, bottom));
    }
    let residual = match &a.prompt {
        Some(p) => {
            let ids = tiller_core::steer::encode_with_bos(&tok, p, a.bos.bos(&tok))?;
            let wanted: Vec<usize> = out.iter().map(|o| o.0).collect();
            Some((ids.len(), block_on(contrast::residual_norms(&mut engine, &ids, &wanted)).context("--prompt")?))
        }
        None => None,
    };
    let residual_at = |i: usize| residual.as_ref().map(|(_, n)| n[i]);
    if a.json {
        let v: Vec<serde_json::Value> = out
            .iter()
            .enumerate()
            .map(|(i, (l, norm, top, bottom))| {
                let mut o = serde_json::json!({"layer": l, "norm": norm, "top": top, "bottom": bottom});
                if let Some(r) = residual_at(i) {
                    o["residual_norm"] = serde_json::json!(r);
                }
                o
            })
            .collect();
        let mut o = serde_json::json!({"name": entry.name, "ln_f": a.ln_f, "layers": v});
        if let Some((n, _)) = &residual {
            o["prompt_tokens"] = serde_json::json!(n);
        }
        outln!("{o}");
    } else {
        let show =
            |e: &[tiller_core::vocab::VocabEntry]| e.iter().map(|x| format!("{:?} {:.2}", x.token, x.score)).collect::<Vec<_>>().join(", ");
        for (i, (l, norm, top, bottom)) in out.iter().enumerate() {
            outln!("{} at layer {l}{}:", entry.name, if a.ln_f { " (after the final norm)" } else { "" });
            match residual_at(i) {
                Some(r) => outln!(
                    "  norm {norm:.3}; the prompt's residual stream here: {r:.3} (coefficient 1 adds {:.0}% of it)",
                    100.0 * norm / r
                ),
                None => outln!("  norm {norm:.3}"),
            }
            outln!("  top:    {}", show(top));
            outln!("  bottom: {}", show(bottom));
        }
    }
    Ok(())
}
