//! `tiller`: scripted steering experiments on the same engine as the playground.
//!
//! Subcommands: `logits` (next-token logits of a steered prompt), `generate` (unsteered and
//! steered completions side by side), `vocab` (decoded vocabulary of a steering tensor),
//! `sweep` (perplexity ratio and KL over layers and coefficients) and `vector` (CAA/PCA
//! vectors from pair datasets, the A/B evaluation, vector files and GGUF control vectors).

/// `print!` to stdout, but a closed pipe (`tiller … | head`) ends the program quietly
/// instead of panicking; any other write error is reported on one line.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` through [`out!`].
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}

mod engine;
mod fv;
mod inspect;
mod iti;
mod melbo;
mod output;
mod vector;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pollster::block_on;
use tiller_core::generate::Flow;
use tiller_core::sample::top_k_indices;
use tiller_core::steer::{self, RowSpan};
use tiller_core::sweep::{self, EvalSet, SweepSpec};
use tiller_core::{Backend, LogitRows, Positions, Recipe, Sampling, SeqStep, Site, StepRequest, Term, Tokenizer};

use engine::{open_model, Device};

#[derive(Parser)]
#[command(
    name = "tiller",
    version,
    about = "Activation steering (ActAdd) on GPT-2, Llama, Qwen2 and GPT-NeoX models, from the command line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Top-K next-token logits at the last position of the (steered) prompt.
    Logits(LogitsArgs),
    /// Unsteered and steered completions, side by side, generated in one batch.
    Generate(GenerateArgs),
    /// Decoded vocabulary of the steering tensor at each layer that has terms.
    Vocab(VocabArgs),
    /// Perplexity ratio and KL of steered vs unsteered over layers and coefficients.
    Sweep(SweepArgs),
    /// Vectors from pair datasets (CAA, PCA), their evaluation, files, GGUF control vectors.
    #[command(subcommand)]
    Vector(vector::VectorCommand),
    /// Reading a vector against text: per-token projections over a set of texts.
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// A function vector (Todd et al.) from an ICL task: every head's average indirect effect,
    /// the sum of the top heads' mean outputs, its accuracy by layer on held-out pairs.
    Fv(fv::FvArgs),
    /// Inference-Time Intervention (Li et al.): a probe per attention head on labelled
    /// statements, the best heads, and their shifts as per-head steering.
    Iti(iti::ItiArgs),
    /// MELBO (Mack & Turner): unsupervised steering vectors of norm R at block --source that
    /// change block --target's input the most, each orthogonal to the ones before.
    Melbo(melbo::MelboArgs),
    /// MELBO-ortho: vectors orthogonal to a chosen one (and each other) that reproduce its
    /// change of the target layer's mean residual.
    MelboOrtho(melbo::OrthoArgs),
    /// A MELBO sweep over the radius R: K vectors at each R, and against R the diversity of
    /// their greedy completions and the unsteered model's perplexity of them (CSV with --csv).
    MelboSweep(melbo::SweepArgs),
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// A Hugging Face model folder: model.safetensors (or the shards of
    /// model.safetensors.index.json), tokenizer.json, config.json (optional for GPT-2),
    /// optional tokenizer_config.json (its chat template).
    #[arg(long, value_name = "DIR")]
    pub(crate) model: PathBuf,
    /// Engine: `gpu` (the default when a GPU adapter exists) or the `cpu` reference.
    #[arg(long, value_enum)]
    pub(crate) device: Option<Device>,
    /// Load weights that hold NaN or infinities instead of refusing them (each such tensor is
    /// named on stderr); a run still stops where its values first stop being finite.
    #[arg(long = "allow-non-finite")]
    pub(crate) allow_non_finite: bool,
}

#[derive(Args)]
struct SteerArgs {
    /// A steering term LAYER:COEFF:TEXT (repeatable), e.g. `--add 6:5:Love --add 6:-5:Hate`.
    #[arg(long = "add", value_name = "L:C:TEXT", allow_hyphen_values = true)]
    add: Vec<String>,
    /// Prefix prompt and steering texts with the tokenizer's BOS (GPT-2: <|endoftext|>, 50256;
    /// Llama 3: <|begin_of_text|>). Default: what the tokenizer's own post-processor does.
    #[arg(long, conflicts_with = "no_bos")]
    bos: bool,
    /// No BOS, even where the tokenizer adds one by default.
    #[arg(long = "no-bos")]
    no_bos: bool,
}

#[derive(Args)]
struct VectorTermArgs {
    /// A saved vector FILE:LAYER:COEFF (repeatable; `FILE::COEFF` for a file with one layer):
    /// added at its own site, at every position unless --positions says otherwise (as CAA).
    #[arg(long = "vector", value_name = "FILE:L:C", allow_hyphen_values = true)]
    vector: Vec<String>,
}

impl SteerArgs {
    fn terms(&self) -> Result<Vec<Term>> {
        self.add.iter().map(|s| Term::parse(s).map_err(Into::into)).collect()
    }

    fn bos(&self, tok: &Tokenizer) -> bool {
        bos_choice(self.bos, self.no_bos, tok)
    }
}

/// BOS on or off: as `--bos`/`--no-bos` ask, else the tokenizer's default.
fn bos_choice(bos: bool, no_bos: bool, tok: &Tokenizer) -> bool {
    if bos {
        true
    } else if no_bos {
        false
    } else {
        tok.bos_by_default()
    }
}

#[derive(Args)]
struct PromptArgs {
    #[arg(long)]
    prompt: String,
    /// Render the prompt as the user message of the model's chat template (tokenizer_config.json),
    /// with the generation prompt added, as Hugging Face's apply_chat_template does.
    #[arg(long)]
    chat: bool,
    /// A system message before the prompt (with --chat).
    #[arg(long, value_name = "TEXT", requires = "chat")]
    system: Option<String>,
    /// With --chat, render each steering text through the chat template too (the same way as
    /// the prompt, after the same system message), so a pair's template tokens line up with the
    /// prompt's and cancel.
    #[arg(long, requires = "chat")]
    chat_terms: bool,
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    steer: SteerArgs,
    #[command(flatten)]
    vectors: VectorTermArgs,
    /// Where the steering goes: front (ActAdd, the default for text terms), all or last (the
    /// default for --vector terms is all).
    #[arg(long, value_enum)]
    positions: Option<PositionsArg>,
    /// How many of the largest logits to print.
    #[arg(long, default_value_t = 20, allow_hyphen_values = true, value_parser = parse_top)]
    top: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PositionsArg {
    Front,
    All,
    Last,
}

impl From<PositionsArg> for Positions {
    fn from(p: PositionsArg) -> Self {
        match p {
            PositionsArg::Front => Positions::Front,
            PositionsArg::All => Positions::All,
            PositionsArg::Last => Positions::Last,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SiteArg {
    /// The residual stream before block L (ActAdd's choice).
    #[value(name = "resid_pre", alias = "resid-pre")]
    ResidPre,
    /// The attention sublayer's output of block L, before it joins the residual stream.
    #[value(name = "attn_out", alias = "attn-out")]
    AttnOut,
    /// The MLP sublayer's output of block L, before it joins the residual stream.
    #[value(name = "mlp_out", alias = "mlp-out")]
    MlpOut,
}

impl From<SiteArg> for Site {
    fn from(s: SiteArg) -> Self {
        match s {
            SiteArg::ResidPre => Site::ResidPre,
            SiteArg::AttnOut => Site::AttnOut,
            SiteArg::MlpOut => Site::MlpOut,
        }
    }
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    steer: SteerArgs,
    #[command(flatten)]
    vectors: VectorTermArgs,
    /// Number of comparisons (each an unsteered and a steered completion).
    #[arg(long, default_value_t = 3)]
    pub(crate) n: usize,
    #[arg(long = "max-tokens", default_value_t = 50)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    temperature: f32,
    #[arg(long = "top-p", default_value_t = 0.3)]
    top_p: f32,
    /// 0 turns top-k off.
    #[arg(long = "top-k", default_value_t = 0)]
    top_k: usize,
    /// Default 1 (the ActAdd post's), or 0 with --greedy.
    #[arg(long = "freq-penalty", allow_hyphen_values = true)]
    freq_penalty: Option<f32>,
    #[arg(long = "rep-penalty", default_value_t = 1.0)]
    rep_penalty: f32,
    /// Plain argmax instead of sampling, as Hugging Face's greedy decoding (no frequency
    /// penalty unless --freq-penalty is given).
    #[arg(long)]
    greedy: bool,
    /// Stop a completion at the tokenizer's end-of-sequence token (<|endoftext|> for GPT-2).
    #[arg(long = "stop-at-eot")]
    stop_at_eot: bool,
    /// front = ActAdd (prompt positions 0..n, once; the default for text terms); all = every
    /// position (CAA-style; the default for --vector terms); last = the last position of every step.
    #[arg(long, value_enum)]
    positions: Option<PositionsArg>,
    #[arg(long, value_enum, default_value = "resid_pre")]
    site: SiteArg,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
struct VocabArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    steer: SteerArgs,
    /// How many tokens to print at each end of the vocabulary.
    #[arg(long, default_value_t = 10, allow_hyphen_values = true, value_parser = parse_top)]
    top: usize,
    /// Apply the final LayerNorm before unembedding (logit lens).
    #[arg(long = "ln-f")]
    ln_f: bool,
    #[arg(long, value_enum, default_value = "resid_pre")]
    site: SiteArg,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    steer: SteerArgs,
    /// An evaluation set NAME=FILE, one text per line (repeatable).
    #[arg(long = "texts", value_name = "NAME=FILE", required = true)]
    texts: Vec<String>,
    /// Injection layers A..B (inclusive; default: every layer).
    #[arg(long)]
    layers: Option<String>,
    /// Coefficient multipliers, comma-separated (default: 1).
    #[arg(long, allow_hyphen_values = true)]
    coeffs: Option<String>,
    #[arg(long, value_enum, default_value = "resid_pre")]
    site: SiteArg,
    /// Print CSV: one header line, then a row per (set, layer, coefficient).
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Print the rows as one JSON list.
    #[arg(long)]
    json: bool,
}

fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// The arguments, or a usage error on one line (clap's first line, and where to read more);
/// `--help` and `--version` print as clap prints them.
fn parse_args() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            // Clap puts what is wrong on the first lines (a missing argument's name on the
            // next one), then the usage: keep what comes before the usage, on one line.
            let what = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let what = if what.is_empty() { "error: the arguments could not be read".to_string() } else { what };
            let command = std::env::args().nth(1).filter(|c| !c.starts_with('-')).map(|c| format!(" {c}")).unwrap_or_default();
            eprintln!("{what} (see `tiller{command} --help`)");
            std::process::exit(2);
        }
    }
}

fn main() {
    let cli = parse_args();
    let result = match cli.command {
        Command::Logits(a) => run_logits(a),
        Command::Generate(a) => run_generate(a),
        Command::Vocab(a) => run_vocab(a),
        Command::Sweep(a) => run_sweep(a),
        Command::Vector(c) => vector::run(c),
        Command::Inspect(c) => inspect::run(c),
        Command::Fv(a) => fv::run(a),
        Command::Iti(a) => iti::run(a),
        Command::Melbo(a) => melbo::run(a),
        Command::MelboOrtho(a) => melbo::run_ortho(a),
        Command::MelboSweep(a) => melbo::run_sweep(a),
    };
    if let Err(e) = result {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn run_logits(a: LogitsArgs) -> Result<()> {
    let terms = a.steer.terms()?;
    let (mut engine, tok) = open_model(&a.model)?;
    let cfg = *engine.config();
    let bos = a.steer.bos(&tok);
    let recipe = Recipe {
        prompt: a.prompt.prompt.clone(),
        chat: a.prompt.chat,
        system: a.prompt.system.clone().unwrap_or_default(),
        chat_terms: a.prompt.chat_terms,
        terms: terms.clone(),
        bos,
        max_new_tokens: 0,
        n: 1,
        ..Recipe::default()
    };
    recipe.validate(&cfg)?;
    let positions: Positions = a.positions.map_or(Positions::Front, Into::into);
    let saved = vector::vector_terms(&a.vectors.vector, a.positions.map_or(Positions::All, Into::into), cfg.n_layer, cfg.n_embd)?;
    let prompt = steer::prompt_tokens(&tok, &recipe, cfg.n_positions)?;
    let mut vectors = block_on(steer::steering_vectors(&mut engine, &tok, &terms, steer::TextEncoding::of_terms(&recipe), Site::ResidPre))?;
    vectors.extend(saved);
    steer::check_fits(&vectors, prompt.len(), positions)?;
    engine.reset(1, prompt.len())?;
    let spans = [RowSpan { start: 0, len: prompt.len(), steered: true }];
    let req = StepRequest {
        seqs: vec![SeqStep { slot: 0, tokens: prompt.clone() }],
        injections: steer::injections(&vectors, Site::ResidPre, positions, &spans),
        captures: Vec::new(),
        logits: LogitRows::Last,
    };
    let logits = block_on(engine.step(&req))?.logits;
    let top: Vec<output::TopLogit> = top_k_indices(&logits, a.top)
        .into_iter()
        .map(|i| output::TopLogit { id: i as u32, token: tok.token_text(i as u32), logit: logits[i] })
        .collect();
    if a.json {
        let mut obj = serde_json::json!({ "tokens": prompt, "top": top, "device": engine.describe() });
        if recipe.chat {
            obj["text"] = steer::prompt_text(&tok, &recipe)?.into();
        }
        outln!("{obj}");
    } else {
        output::print_logits(&engine.describe(), &prompt, &top);
    }
    Ok(())
}

/// A run's engine, tokenizer, recipe, prompt tokens and steering vectors (text terms and
/// `--vector` files), as `generate` and `inspect diff` take them from their flags.
pub(crate) struct Prepared {
    pub engine: engine::Engine,
    pub tok: Tokenizer,
    pub recipe: Recipe,
    pub prompt: Vec<u32>,
    pub vectors: Vec<steer::LayerVector>,
}

pub(crate) fn prepare_run(a: &GenerateArgs) -> Result<Prepared> {
    let (mut engine, tok) = open_model(&a.model)?;
    let recipe = Recipe {
        prompt: a.prompt.prompt.clone(),
        chat: a.prompt.chat,
        system: a.prompt.system.clone().unwrap_or_default(),
        chat_terms: a.prompt.chat_terms,
        terms: a.steer.terms()?,
        vectors: Vec::new(),
        bos: a.steer.bos(&tok),
        positions: a.positions.map_or(Positions::Front, Into::into),
        site: a.site.into(),
        sampling: Sampling {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            freq_penalty: a.freq_penalty.unwrap_or(if a.greedy { 0.0 } else { 1.0 }),
            rep_penalty: a.rep_penalty,
            greedy: a.greedy,
        },
        seed: a.seed,
        n: a.n,
        max_new_tokens: a.max_tokens,
        stop_at_eot: a.stop_at_eot,
    };
    recipe.validate(engine.config())?;
    let cfg = *engine.config();
    let saved = vector::vector_terms(&a.vectors.vector, a.positions.map_or(Positions::All, Into::into), cfg.n_layer, cfg.n_embd)?;
    let prompt = steer::prompt_tokens(&tok, &recipe, cfg.n_positions)?;
    let mut vectors =
        block_on(steer::steering_vectors(&mut engine, &tok, &recipe.terms, steer::TextEncoding::of_terms(&recipe), recipe.site))?;
    vectors.extend(saved);
    steer::check_fits(&vectors, prompt.len(), recipe.positions)?;
    Ok(Prepared { engine, tok, recipe, prompt, vectors })
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    let Prepared { mut engine, tok, recipe, prompt, vectors } = prepare_run(&a)?;
    let gen =
        block_on(tiller_core::generate::generate_with_vectors(&mut engine, &tok, &recipe, &prompt, &vectors, &mut |_| Flow::Continue))?;
    if a.json {
        let obj = serde_json::json!({
            "prompt_tokens": gen.prompt_tokens,
            "unsteered": gen.unsteered.iter().map(|c| serde_json::json!({"text": c.text, "tokens": c.tokens, "probs": c.probs})).collect::<Vec<_>>(),
            "steered": gen.steered.iter().map(|c| serde_json::json!({"text": c.text, "tokens": c.tokens, "probs": c.probs})).collect::<Vec<_>>(),
            "recipe": recipe,
            "device": engine.describe(),
            "prompt_text": steer::prompt_text(&tok, &recipe)?,
            "vectors": a.vectors.vector,
        });
        outln!("{obj}");
    } else {
        output::print_generation(&engine.describe(), &recipe, &gen, &a.vectors.vector);
    }
    Ok(())
}

fn run_vocab(a: VocabArgs) -> Result<()> {
    let terms = a.steer.terms()?;
    if terms.is_empty() {
        bail!("give at least one steering term with --add L:C:TEXT");
    }
    let (mut engine, tok) = open_model(&a.model)?;
    let bos = a.steer.bos(&tok);
    let recipe = Recipe { terms: terms.clone(), bos, max_new_tokens: 0, n: 1, ..Recipe::default() };
    recipe.validate(engine.config())?;
    let vocab = block_on(tiller_core::vocab::decode_vocab(&mut engine, &tok, &terms, bos, a.site.into(), a.top, a.ln_f))?;
    if a.json {
        outln!("{}", serde_json::to_string(&vocab)?);
    } else {
        output::print_vocab(&vocab, a.ln_f);
    }
    Ok(())
}

/// `--top`: a count of 1 or more (a negative number is named as such, not taken for a flag).
fn parse_top(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|_| format!("{n} is too large")),
        Ok(n) => Err(format!("{n} is not a count: give how many tokens to print, 1 or more")),
        Err(_) => Err(format!("`{s}` is not a whole number: give how many tokens to print, 1 or more")),
    }
}

fn parse_layers(spec: &str, n_layer: usize) -> Result<Vec<usize>> {
    let (a, b) = spec.split_once("..").with_context(|| format!("--layers `{spec}` is not A..B (for example 0..11)"))?;
    let a: usize = a.trim().parse().with_context(|| format!("`{a}` in --layers is not a layer number"))?;
    let b: usize = b.trim().trim_start_matches('=').parse().with_context(|| format!("`{b}` in --layers is not a layer number"))?;
    if a > b || b >= n_layer {
        bail!("--layers {a}..{b} must satisfy A <= B < {n_layer} (this model's depth)");
    }
    Ok((a..=b).collect())
}

fn run_sweep(a: SweepArgs) -> Result<()> {
    let terms = a.steer.terms()?;
    if terms.is_empty() {
        bail!("give at least one steering term with --add L:C:TEXT (its layer is replaced by each swept layer)");
    }
    let mut sets = Vec::new();
    for spec in &a.texts {
        let (name, file) = spec.split_once('=').with_context(|| format!("--texts `{spec}` is not NAME=FILE"))?;
        let body = std::fs::read_to_string(file).with_context(|| format!("reading evaluation texts {file}"))?;
        let texts: Vec<String> = body.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        if texts.is_empty() {
            bail!("{file} has no texts (one per line)");
        }
        sets.push(EvalSet { name: name.to_string(), texts });
    }
    let (mut engine, tok) = open_model(&a.model)?;
    let n_layer = engine.config().n_layer;
    let layers = match &a.layers {
        Some(s) => parse_layers(s, n_layer)?,
        None => (0..n_layer).collect(),
    };
    let coeffs: Vec<f32> = match &a.coeffs {
        Some(s) => s
            .split(',')
            .map(|c| c.trim().parse::<f32>().with_context(|| format!("`{c}` in --coeffs is not a number")))
            .collect::<Result<_>>()?,
        None => vec![1.0],
    };
    let spec = SweepSpec { terms, bos: a.steer.bos(&tok), site: a.site.into(), layers, coeffs, sets };
    let rows = block_on(sweep::sweep(&mut engine, &tok, &spec, |_, _| Flow::Continue))?;
    if a.json {
        outln!("{}", serde_json::to_string(&rows)?);
    } else if a.csv {
        out!("{}", sweep::to_csv(&rows));
    } else {
        output::print_sweep(&rows);
    }
    Ok(())
}
