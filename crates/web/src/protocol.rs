//! Messages between the page and the engine worker: serde JSON strings over `postMessage`.
//!
//! The page sends [`ToWorker`]; the worker answers with [`FromWorker`]. Local model files
//! cannot travel as JSON: [`ToWorker::Load`] with [`ModelSource::Local`] is posted together
//! with the `File` objects (see [`envelope`]), which the browser clones without copying.
//!
//! Core types that only derive `Serialize` (generation, decoded vocabulary) are mirrored here
//! as views that derive both, so the page can read them back.

use serde::{Deserialize, Serialize};
use tiller_core::sweep::{SweepRow, SweepSpec};
use tiller_core::{ModelSpec, Recipe, Site, Term};

/// The five released GPT-2 checkpoints the picker offers, with their Hub repo ids and the
/// size of their `model.safetensors` (shown before the HEAD request answers).
pub const DEFAULT_MODELS: [(&str, u64); 5] = [
    ("gpt2", 548_105_171),
    ("distilgpt2", 352_824_413),
    ("gpt2-medium", 1_519_984_962),
    ("gpt2-large", 3_247_202_234),
    ("gpt2-xl", 6_431_829_964),
];

/// Small checkpoints of the other families that fit a browser, offered in the picker as Hub
/// repos: (repo id, what it is, rough download size). The exact size is asked of the Hub when
/// one is picked; `gated` repos need the user's Hugging Face token.
pub struct Suggested {
    pub repo: &'static str,
    pub about: &'static str,
    pub approx: &'static str,
    pub gated: bool,
}

pub const SUGGESTED_MODELS: [Suggested; 6] = [
    Suggested { repo: "Qwen/Qwen2.5-0.5B-Instruct", about: "Qwen2, chat", approx: "≈ 1 GB", gated: false },
    Suggested { repo: "HuggingFaceTB/SmolLM2-360M-Instruct", about: "Llama architecture, chat", approx: "≈ 0.7 GB", gated: false },
    Suggested { repo: "HuggingFaceTB/SmolLM2-135M-Instruct", about: "Llama architecture, chat", approx: "≈ 0.3 GB", gated: false },
    Suggested { repo: "EleutherAI/pythia-160m", about: "GPT-NeoX", approx: "≈ 0.3 GB", gated: false },
    Suggested { repo: "EleutherAI/pythia-410m", about: "GPT-NeoX", approx: "≈ 0.9 GB", gated: false },
    Suggested { repo: "meta-llama/Llama-3.2-1B-Instruct", about: "Llama 3, chat; gated: needs a token", approx: "≈ 2.5 GB", gated: true },
];

/// The suggestion for a repo id, if it is one.
pub fn suggested(repo: &str) -> Option<&'static Suggested> {
    SUGGESTED_MODELS.iter().find(|m| m.repo == repo)
}

/// The Hub that serves `/<repo>/resolve/main/<file>`; `?hub=URL` on the page replaces it.
pub const DEFAULT_HUB: &str = "https://huggingface.co";

/// The files a model is made of.
pub const MODEL_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where a model comes from. This is what share links record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// One of [`DEFAULT_MODELS`], by name.
    Default(String),
    /// Any Hugging Face Hub repo id (`owner/name`).
    Hub(String),
    /// A base URL holding the three files.
    Url(String),
    /// Files picked from the user's disk.
    Local,
}

impl ModelSource {
    /// The picker's option value: a default name, `hub`, `url` or `local`.
    pub fn select_value(&self) -> String {
        match self {
            Self::Default(name) => name.clone(),
            Self::Hub(repo) if suggested(repo.trim()).is_some() => repo.trim().to_string(),
            Self::Hub(_) => "hub".into(),
            Self::Url(_) => "url".into(),
            Self::Local => "local".into(),
        }
    }

    pub fn is_default(&self) -> bool {
        matches!(self, Self::Default(name) if default_size(name).is_some())
    }

    /// A short label for history entries and status lines.
    /// The model's name in a vector's provenance: a Hub id, a URL, a default's name.
    pub fn model_id(&self) -> String {
        match self {
            Self::Default(name) | Self::Hub(name) | Self::Url(name) => name.clone(),
            Self::Local => "local files".into(),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Default(name) => name.clone(),
            Self::Hub(repo) => format!("hub: {repo}"),
            Self::Url(url) => format!("url: {url}"),
            Self::Local => "local files".into(),
        }
    }

    /// The base URL under which `model.safetensors`, `tokenizer.json` and `config.json` live,
    /// or an error sentence. `hub` is the Hub endpoint (normally [`DEFAULT_HUB`]).
    pub fn base_url(&self, hub: &str) -> Result<String, String> {
        let hub = hub.trim_end_matches('/');
        match self {
            Self::Default(name) => {
                if default_size(name).is_none() {
                    return Err(format!("`{name}` is not one of the built-in models"));
                }
                Ok(format!("{hub}/{name}/resolve/main"))
            }
            Self::Hub(repo) => {
                let repo = repo.trim().trim_matches('/');
                let valid = !repo.is_empty()
                    && repo.split('/').count() <= 2
                    && repo.split('/').all(|p| {
                        !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    });
                if !valid {
                    return Err(format!(
                        "`{repo}` is not a Hub repo id: use `owner/name` (letters, digits, - _ .), e.g. `openai-community/gpt2`"
                    ));
                }
                Ok(format!("{hub}/{repo}/resolve/main"))
            }
            Self::Url(url) => {
                let url = url.trim().trim_end_matches('/');
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "`{url}` is not a base URL: give one starting with http:// or https:// under which {MODEL_FILE}, {TOKENIZER_FILE} and {CONFIG_FILE} live"
                    ));
                }
                Ok(url.to_string())
            }
            Self::Local => Err("local files have no URL".into()),
        }
    }
}

/// The size of a default model's `model.safetensors`, if `name` is one.
pub fn default_size(name: &str) -> Option<u64> {
    DEFAULT_MODELS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Which engine the worker builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// WebGPU when the browser has it, else the CPU (small models only).
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl EngineChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "gpu" => Some(Self::Gpu),
            "cpu" => Some(Self::Cpu),
            _ => None,
        }
    }
}

/// Page → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// The size of a source's `model.safetensors` (HEAD, then a one-byte Range request).
    /// `token`: the user's Hugging Face token, sent to the Hub endpoint only.
    QuerySize {
        id: u64,
        source: ModelSource,
        hub: String,
        #[serde(default)]
        token: Option<String>,
    },
    /// Downloads (or reads from the cache, or from local files) and builds the engine.
    Load {
        source: ModelSource,
        hub: String,
        engine: EngineChoice,
        #[serde(default)]
        token: Option<String>,
        /// Load weights holding NaN or infinities anyway (the user asked, after the refusal):
        /// runs then stop where their values first stop being finite.
        #[serde(default)]
        allow_non_finite: bool,
    },
    /// Aborts a download in progress.
    CancelLoad,
    /// Token counts for the page's inline warnings (and the prompt as rendered through the
    /// model's chat template when `chat` is on).
    Analyze {
        id: u64,
        prompt: String,
        terms: Vec<String>,
        bos: bool,
        #[serde(default)]
        chat: bool,
        #[serde(default)]
        system: String,
        /// With `chat`, the term texts are counted as rendered through the template too.
        #[serde(default)]
        chat_terms: bool,
    },
    /// Generates n unsteered and n steered completions, streaming [`FromWorker::RunStep`].
    Run { run_id: u64, recipe: Recipe },
    /// Stops the run or sweep in progress after its current step.
    Stop,
    /// A layer × coefficient sweep, streaming [`FromWorker::SweepProgress`].
    Sweep { run_id: u64, spec: SweepSpec },
    /// The decoded vocabulary of the steering tensors of these terms.
    /// `chat_system`: the texts go through the chat template after this system message (the
    /// recipe's chat and chat_terms on), as a run builds them; None: raw text.
    Vocab {
        id: u64,
        terms: Vec<Term>,
        bos: bool,
        site: Site,
        k: usize,
        ln_f: bool,
        #[serde(default)]
        chat_system: Option<String>,
    },
    /// Builds a CAA / PCA vector from contrast pairs, streaming [`FromWorker::BuildProgress`];
    /// Stop ends it.
    BuildVector { run_id: u64, spec: crate::vectors::BuildSpec },
    /// CAA's behavioural measure of library vectors, streaming [`FromWorker::EvalProgress`];
    /// Stop ends it.
    EvalAb { run_id: u64, spec: crate::vectors::EvalSpec },
    /// Reads a library vector: each layer's decoded vocabulary (`k` top and bottom tokens,
    /// after the final norm when `ln_f`) and the residual stream's size at that layer for the
    /// editor's prompt (`prompt`, tokenized as a run tokenizes it; None: no prompt).
    ReadVector { id: u64, layers: Vec<(usize, Vec<f32>)>, k: usize, ln_f: bool, prompt: Option<Recipe> },
    /// Projects every token of `texts` onto a vector at (layer, site) (`tiller inspect
    /// project`'s computation), streaming [`FromWorker::ProjectProgress`]; Stop ends it.
    /// Texts past the context are cut to it.
    Project { run_id: u64, vector: ProbeVector, layer: usize, site: Site, texts: Vec<String>, bos: bool },
    /// What steering changed along one steered completion of a run (`tiller inspect diff`):
    /// at each of its tokens, the steered and unsteered next-token distributions.
    Changes { id: u64, recipe: Recipe, completion: Vec<u32>, top: usize },
    /// The prompt layer by layer (`tiller inspect norms` and the logit lens): residual norms,
    /// the steering tensor's, and the top tokens of the last position at every layer.
    Lens { id: u64, recipe: Recipe, k: usize },
    /// A function vector from an ICL task (`tiller fv`'s pipeline), streaming
    /// [`FromWorker::FvProgress`]; Stop ends it.
    Fv { run_id: u64, spec: FvSpec },
    /// ITI's probes (`tiller iti`'s computation), streaming [`FromWorker::ItiProgress`]; Stop
    /// ends it.
    Iti { run_id: u64, spec: ItiSpec },
    /// MELBO (`tiller melbo`): vectors trained one after another, streaming
    /// [`FromWorker::MelboProgress`] per step and [`FromWorker::MelboVector`] per vector; Stop
    /// ends it, keeping the finished vectors.
    Melbo { run_id: u64, spec: MelboSpec },
    /// A MELBO sweep over R (`tiller melbo-sweep`): at each of `radii`, `spec.vectors` vectors
    /// trained as [`ToWorker::Melbo`] trains them (streaming [`FromWorker::MelboProgress`]),
    /// then judged: [`FromWorker::MelboSweepPoint`] per R, [`FromWorker::MelboDone`] at the end;
    /// Stop ends it, keeping the points done.
    MelboSweep { run_id: u64, spec: MelboSpec, radii: Vec<f64> },
    /// Completions of the run's first prompt with ±coeff·θ at `source`, greedy or sampled.
    MelboSteer { id: u64, spec: MelboSteerSpec },
    /// Reports the cache's size.
    CacheInfo,
    /// Empties the cache.
    CacheClear,
}

/// A function-vector run: the task's pairs (both directions already mixed in when asked) and
/// the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FvSpec {
    /// The task's name ("antonyms", "my pairs").
    pub task: String,
    pub pairs: Vec<tiller_core::fv::IclPair>,
    pub settings: tiller_core::fv::FvSettings,
}

/// A MELBO run, as the Discover form asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelboSpec {
    pub prompts: Vec<String>,
    pub bos: bool,
    pub source: usize,
    pub target: usize,
    pub radius: f64,
    pub vectors: usize,
    pub steps: usize,
    pub p: f64,
    pub q: f64,
    pub target_tokens: tiller_core::melbo::TargetTokens,
    pub orthogonal: bool,
    pub seed: u64,
    /// Tokens of each completion shown for a vector.
    pub new_tokens: usize,
}

/// One trained MELBO vector, for the Discover area.
/// What [`ToWorker::MelboSteer`] completes: `prompt` without a vector and with ±`coeff`·θ
/// (θ at resid_pre of `source`, every position), `new_tokens` each, decoded with `sampling`
/// from `seed` (greedy when `sampling.greedy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelboSteerSpec {
    pub prompt: String,
    pub bos: bool,
    pub vector: Vec<f32>,
    pub source: usize,
    pub coeff: f32,
    pub new_tokens: usize,
    pub sampling: tiller_core::recipe::Sampling,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelboVectorView {
    pub index: usize,
    /// `[C]`
    pub vector: Vec<f32>,
    /// f at the vector, summed over the prompts.
    pub objective: f64,
    /// f before each step.
    pub losses: Vec<f64>,
    /// The first prompt completed greedily without it, with it and with its negation.
    pub completions: tiller_core::melbo::Completions,
    /// Its decoded vocabulary (after the final norm): towards, away from.
    pub top_tokens: Vec<VocabEntryView>,
    pub bottom_tokens: Vec<VocabEntryView>,
}

/// What a function-vector run found, for the Heads area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FvView {
    pub n_layer: usize,
    pub n_head: usize,
    /// `[L, NH]`, layer-major.
    pub aie: Vec<f64>,
    pub top: Vec<tiller_core::fv::Head>,
    pub vector_heads: Vec<tiller_core::fv::Head>,
    /// `[C]`
    pub vector: Vec<f32>,
    pub norm: f64,
    pub clean_prob: f64,
    pub corrupted_prob: f64,
    pub eval: Option<tiller_core::fv::Evaluation>,
    /// The layer of best zero-shot accuracy (else a third of the depth).
    pub best_layer: usize,
    pub prompts: usize,
    pub held_out: usize,
    /// The first clean prompt and its corrupted form, as text.
    pub example: (String, String),
    /// The vector's decoded vocabulary (after the final norm).
    pub top_tokens: Vec<VocabEntryView>,
    pub bottom_tokens: Vec<VocabEntryView>,
    /// Greedy completions of a few held-out zero-shot prompts without and with the vector at
    /// `best_layer`.
    pub completions: Vec<tiller_core::fv::FvCompletion>,
}

/// An ITI run: labelled statements and how to probe them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItiSpec {
    pub statements: Vec<tiller_core::iti::Statement>,
    /// The validation fraction and the seed of the split.
    pub val: f64,
    pub seed: u64,
    pub top_heads: usize,
    pub direction: tiller_core::iti::Direction,
    pub bos: bool,
}

/// What ITI found, for the Heads area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItiView {
    pub n_layer: usize,
    pub n_head: usize,
    pub heads: Vec<tiller_core::iti::HeadProbe>,
    pub top: Vec<tiller_core::iti::HeadShift>,
    pub train: usize,
    pub val: usize,
}

/// What went wrong, so the page can offer the right action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The browser has no WebGPU (offer the CPU for small models).
    NoWebGpu,
    /// The adapter's limits are too small for this model (suggest a smaller one).
    AdapterLimits,
    OutOfMemory,
    /// The GPU device was lost; the engine must be rebuilt (reload the model).
    DeviceLost,
    /// A download failed (offer retry).
    Download,
    /// The file or repo cannot be had as named: the server says it is not there or not
    /// readable with this token (HTTP 401/403/404/410), or the id or URL is not one. Retrying
    /// would give the same answer; the message says what to fix.
    NotFound,
    /// A model file is malformed (the message names the file).
    BadFile,
    /// The recipe cannot run (the message says what to change).
    Recipe,
    /// The user cancelled.
    Cancelled,
    /// Anything else; the message is all there is.
    Internal,
}

/// An error as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorKind {
    /// The snake_case name (as in JSON), for `data-kind` attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoWebGpu => "no_web_gpu",
            Self::AdapterLimits => "adapter_limits",
            Self::OutOfMemory => "out_of_memory",
            Self::DeviceLost => "device_lost",
            Self::Download => "download",
            Self::NotFound => "not_found",
            Self::BadFile => "bad_file",
            Self::Recipe => "recipe",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }
}

impl UserError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// One completion as it streams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionView {
    pub text: String,
    pub tokens: Vec<u32>,
    pub done: bool,
    /// Per token: the model's probability of it (see `tiller_core::generate::Completion`).
    #[serde(default)]
    pub probs: Vec<f32>,
    /// Per token: the characters of `text` once it is decoded.
    #[serde(default)]
    pub ends: Vec<usize>,
}

/// How long a run's steps took, measured in the worker (wall clock, milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunTiming {
    /// From the start of the run to its first tokens: the steering vectors, the prompt pass
    /// and the first sampling.
    pub first_ms: f64,
    /// Steps done, the first included (one token for every sequence still going).
    pub steps: usize,
    /// The steps after the first, together: decode, readback and sampling.
    pub rest_ms: f64,
    /// The worker's wasm memory when the run ended (it only grows: flat over many runs means
    /// nothing leaks there). 0 in runs saved before it was kept.
    #[serde(default)]
    pub wasm_memory: u64,
}

impl RunTiming {
    /// Mean wall-clock time of a step after the first, if there was one.
    pub fn ms_per_step(&self) -> Option<f64> {
        (self.steps > 1).then(|| self.rest_ms / (self.steps - 1) as f64)
    }
}

/// A run's completions so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationView {
    pub prompt_tokens: Vec<u32>,
    pub unsteered: Vec<CompletionView>,
    pub steered: Vec<CompletionView>,
}

impl From<&tiller_core::generate::Generation> for GenerationView {
    fn from(g: &tiller_core::generate::Generation) -> Self {
        let view = |c: &tiller_core::generate::Completion| CompletionView {
            text: c.text.clone(),
            tokens: c.tokens.clone(),
            done: c.done,
            probs: c.probs.clone(),
            ends: c.ends.clone(),
        };
        Self {
            prompt_tokens: g.prompt_tokens.clone(),
            unsteered: g.unsteered.iter().map(view).collect(),
            steered: g.steered.iter().map(view).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VocabEntryView {
    pub id: u32,
    pub token: String,
    pub score: f32,
}

/// One layer of a library vector, read against the loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorReading {
    pub layer: usize,
    pub norm: f64,
    pub top: Vec<VocabEntryView>,
    pub bottom: Vec<VocabEntryView>,
    /// The median ‖resid_pre‖ over the prompt's tokens (the first left out) at this layer.
    pub residual_norm: Option<f64>,
}

/// The decoded vocabulary of one layer's steering tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerVocabView {
    pub layer: usize,
    pub positions: Vec<Vec<VocabEntryView>>,
    pub positions_bottom: Vec<Vec<VocabEntryView>>,
    pub sum: Vec<VocabEntryView>,
    pub bottom: Vec<VocabEntryView>,
    pub term_tokens: Vec<Vec<String>>,
}

impl From<&tiller_core::vocab::VocabEntry> for VocabEntryView {
    fn from(e: &tiller_core::vocab::VocabEntry) -> Self {
        Self { id: e.id, token: e.token.clone(), score: e.score }
    }
}

impl From<&tiller_core::vocab::LayerVocab> for LayerVocabView {
    fn from(v: &tiller_core::vocab::LayerVocab) -> Self {
        let list = |es: &[tiller_core::vocab::VocabEntry]| es.iter().map(VocabEntryView::from).collect::<Vec<_>>();
        Self {
            layer: v.layer,
            positions: v.positions.iter().map(|p| list(p)).collect(),
            positions_bottom: v.positions_bottom.iter().map(|p| list(p)).collect(),
            sum: list(&v.sum),
            bottom: list(&v.bottom),
            term_tokens: v.term_tokens.clone(),
        }
    }
}

/// The phases of a load, in order: each has its own words in the page, so it never looks stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadPhase {
    /// config.json, tokenizer.json and the like.
    Files,
    /// Asking the browser for a WebGPU adapter and device.
    Adapter,
    /// Streaming the weights into the engine.
    Weights,
    /// After the last byte: the engine compiles its kernels and finishes its buffers.
    Setup,
}

impl LoadPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Adapter => "adapter",
            Self::Weights => "weights",
            Self::Setup => "setup",
        }
    }

    /// What the page says while in this phase.
    pub fn words(self, gpu: bool) -> &'static str {
        match self {
            Self::Files => "reading the model's description and tokenizer",
            Self::Adapter => "asking the browser for the GPU",
            Self::Weights => "streaming the weights into the engine",
            Self::Setup if gpu => "setting up the GPU: compiling its kernels and finishing the weights (a few seconds, no download)",
            Self::Setup => "setting up the CPU engine (no download)",
        }
    }
}

/// Worker → page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker is up; `webgpu` says whether `navigator.gpu` exists in it.
    Started {
        webgpu: bool,
    },
    /// Answer to [`ToWorker::QuerySize`]: bytes, or why the size is unknown.
    Size {
        id: u64,
        bytes: Option<u64>,
        cached: bool,
        error: Option<String>,
    },
    /// A load reached a new phase (the weights' own progress comes as [`FromWorker::Progress`]).
    LoadPhase {
        phase: LoadPhase,
        /// Whether the engine being built is the GPU's (known from the weights phase on).
        #[serde(default)]
        gpu: bool,
    },
    /// Download or read progress of one file.
    Progress {
        file: String,
        loaded: u64,
        total: Option<u64>,
        from_cache: bool,
    },
    /// The engine is ready.
    /// `wasm_memory`: the worker's wasm memory after loading (bytes), which on the GPU path
    /// stays far below the model's size.
    /// `bos_default`: whether the tokenizer adds a BOS itself (Llama 3); `chat_template`:
    /// whether the model has one (tokenizer_config.json).
    Loaded {
        config: ModelSpec,
        engine: String,
        from_cache: bool,
        bytes: u64,
        note: Option<String>,
        wasm_memory: u64,
        #[serde(default)]
        bos_default: bool,
        #[serde(default)]
        chat_template: bool,
    },
    /// `kept`: the model loaded before is still loaded (the load failed before its weights
    /// started to replace it), so the page can go on using it.
    LoadFailed {
        error: UserError,
        #[serde(default)]
        kept: bool,
    },
    /// `prompt_text`: the rendered chat template, when chat is on (or why it failed to render).
    Analysis {
        id: u64,
        prompt_tokens: usize,
        term_tokens: Vec<usize>,
        #[serde(default)]
        prompt_text: Option<String>,
    },
    RunStep {
        run_id: u64,
        generation: GenerationView,
        timing: RunTiming,
    },
    RunDone {
        run_id: u64,
        generation: GenerationView,
        stopped: bool,
        timing: RunTiming,
    },
    RunFailed {
        run_id: u64,
        error: UserError,
    },
    Vocab {
        id: u64,
        layers: Vec<LayerVocabView>,
    },
    /// After each step of a sweep: `done` of `total` steps, and the rows finished since the
    /// last message (a layer's rows arrive together, when its last step is done).
    SweepProgress {
        run_id: u64,
        done: usize,
        total: usize,
        rows: Vec<SweepRow>,
    },
    /// The sweep finished, or stopped early (the rows sent so far are its result).
    SweepDone {
        run_id: u64,
        stopped: bool,
    },
    SweepFailed {
        run_id: u64,
        error: UserError,
    },
    VocabFailed {
        id: u64,
        error: UserError,
    },
    /// `done` of `total` texts of a vector build have run.
    BuildProgress {
        run_id: u64,
        done: usize,
        total: usize,
    },
    /// The vectors (one per layer asked for), made from `n_pairs` pairs; None when it was
    /// stopped.
    BuildDone {
        run_id: u64,
        vectors: Option<Vec<tiller_core::contrast::ContrastVector>>,
        n_pairs: usize,
    },
    BuildFailed {
        run_id: u64,
        error: UserError,
    },
    /// A library vector read: one reading per layer, in the request's order.
    VectorRead {
        id: u64,
        layers: Vec<VectorReading>,
        /// The prompt's tokens, when it was measured.
        prompt_tokens: Option<usize>,
        /// Why the prompt could not be measured (e.g. it is empty).
        prompt_problem: Option<String>,
    },
    VectorReadFailed {
        id: u64,
        error: UserError,
    },
    /// `done` of `total` batches of an A/B evaluation have run.
    EvalProgress {
        run_id: u64,
        done: usize,
        total: usize,
    },
    /// The evaluation's rows (each vector's, one per coefficient, in the spec's order); empty
    /// when it was stopped.
    EvalDone {
        run_id: u64,
        rows: Vec<tiller_core::contrast::AbRow>,
        items: usize,
        stopped: bool,
    },
    EvalFailed {
        run_id: u64,
        error: UserError,
    },
    /// `done` of `total` texts projected.
    ProjectProgress {
        run_id: u64,
        done: usize,
        total: usize,
    },
    /// The projections; None when stopped.
    ProjectDone {
        run_id: u64,
        result: Option<ProjectionView>,
    },
    ProjectFailed {
        run_id: u64,
        error: UserError,
    },
    Changes {
        id: u64,
        positions: Vec<PositionChangeView>,
    },
    ChangesFailed {
        id: u64,
        error: UserError,
    },
    Lens {
        id: u64,
        /// The prompt's tokens, decoded one by one.
        tokens: Vec<String>,
        layers: Vec<LensLayerView>,
        steering: Vec<LensSteeringView>,
    },
    LensFailed {
        id: u64,
        error: UserError,
    },
    FvProgress {
        run_id: u64,
        phase: tiller_core::fv::Phase,
        done: usize,
        total: usize,
    },
    /// None: stopped.
    FvDone {
        run_id: u64,
        result: Option<FvView>,
    },
    FvFailed {
        run_id: u64,
        error: UserError,
    },
    ItiProgress {
        run_id: u64,
        done: usize,
        total: usize,
    },
    /// After each step of a MELBO run: where it is and f before the step.
    MelboProgress {
        run_id: u64,
        vector: usize,
        vectors: usize,
        step: usize,
        steps: usize,
        loss: f64,
    },
    /// A vector finished (with its completions and vocabulary).
    MelboVector {
        run_id: u64,
        vector: MelboVectorView,
    },
    /// One R of a sweep, judged.
    MelboSweepPoint {
        run_id: u64,
        point: tiller_core::melbo::sweep::RadiusPoint,
    },
    /// The run ended: all vectors done, or stopped (the finished ones were sent).
    MelboDone {
        run_id: u64,
        stopped: bool,
    },
    MelboFailed {
        run_id: u64,
        error: UserError,
    },
    /// The answer to [`ToWorker::MelboSteer`].
    MelboSteered {
        id: u64,
        result: Result<tiller_core::melbo::Completions, UserError>,
    },
    /// None: stopped.
    ItiDone {
        run_id: u64,
        result: Option<ItiView>,
    },
    ItiFailed {
        run_id: u64,
        error: UserError,
    },
    CacheInfo {
        bytes: u64,
        files: usize,
    },
    /// The engine broke (device lost, panic): the model must be loaded again.
    Fatal {
        error: UserError,
    },
}

/// The JS value posted between page and worker: `{ msg: "<json>", files?: [File, …] }`.
pub mod envelope {
    pub const MSG: &str = "msg";
    pub const FILES: &str = "files";
}

impl ToWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"type\":\"invalid\",\"error\":\"{e}\"}}"))
    }
}

impl FromWorker {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!("{{\"type\":\"fatal\",\"error\":{{\"kind\":\"internal\",\"message\":\"cannot encode a message: {e}\"}}}}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_hub_layout() {
        let hub = "http://127.0.0.1:8081/";
        assert_eq!(ModelSource::Default("gpt2".into()).base_url(hub).as_deref(), Ok("http://127.0.0.1:8081/gpt2/resolve/main"));
        assert_eq!(
            ModelSource::Hub("openai-community/gpt2".into()).base_url(DEFAULT_HUB).as_deref(),
            Ok("https://huggingface.co/openai-community/gpt2/resolve/main")
        );
        assert!(ModelSource::Hub("../etc".into()).base_url(DEFAULT_HUB).is_err());
        assert!(ModelSource::Hub("a b".into()).base_url(DEFAULT_HUB).is_err());
        assert!(ModelSource::Url("ftp://x".into()).base_url(DEFAULT_HUB).is_err());
        assert!(ModelSource::Default("gpt5".into()).base_url(DEFAULT_HUB).is_err());
    }

    #[test]
    fn messages_round_trip() {
        let m = ToWorker::Run { run_id: 3, recipe: Recipe { prompt: "I hate you because".into(), ..Recipe::default() } };
        let back: ToWorker = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(back, m);
        let f = FromWorker::Progress { file: MODEL_FILE.into(), loaded: 5, total: Some(10), from_cache: false };
        let back: FromWorker = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(back, f);
        let spec = SweepSpec {
            terms: vec![Term { layer: 0, coeff: 1.0, text: " weddings".into(), head: None }],
            bos: false,
            site: Site::ResidPre,
            layers: vec![0, 1],
            coeffs: vec![0.0, 4.0],
            sets: crate::sweep::default_sets(),
        };
        let m = ToWorker::Sweep { run_id: 4, spec };
        assert!(m.to_json().contains(r#""type":"sweep""#));
        assert_eq!(serde_json::from_str::<ToWorker>(&m.to_json()).unwrap(), m);
        let f = FromWorker::SweepProgress { run_id: 4, done: 1, total: 6, rows: Vec::new() };
        assert!(f.to_json().contains(r#""type":"sweep_progress""#));
        assert_eq!(serde_json::from_str::<FromWorker>(&f.to_json()).unwrap(), f);
        let timing = RunTiming { first_ms: 400.0, steps: 3, rest_ms: 200.0, wasm_memory: 0 };
        let f = FromWorker::RunDone { run_id: 5, generation: GenerationView::default(), stopped: false, timing };
        assert_eq!(serde_json::from_str::<FromWorker>(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn ms_per_step_leaves_out_the_first_step() {
        assert_eq!(RunTiming { first_ms: 900.0, steps: 1, rest_ms: 0.0, wasm_memory: 0 }.ms_per_step(), None);
        assert_eq!(RunTiming { first_ms: 900.0, steps: 5, rest_ms: 400.0, wasm_memory: 0 }.ms_per_step(), Some(100.0));
    }
}

/// The vector a projection reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeVector {
    /// Given values (a library entry's layer).
    Values(Vec<f32>),
    /// A recipe's steering vector at `layer`: Σ coeff × activation at each term's last token
    /// (the vector ActAdd adds in positions mode `all`), summed over the terms at that layer.
    Steering { recipe: Recipe, layer: usize },
}

/// One text's projections, token by token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectedText {
    pub ids: Vec<u32>,
    /// Each token decoded alone.
    pub tokens: Vec<String>,
    pub dot: Vec<f32>,
    pub cosine: Vec<f32>,
}

/// A projection's result: the texts, the vector's norm and its decoded vocabulary (top and
/// bottom tokens of the raw unembedding), for the page's side-by-side reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionView {
    pub vector_norm: f64,
    pub texts: Vec<ProjectedText>,
    /// Texts cut to the model's context.
    pub cut: usize,
    pub top: Vec<VocabEntryView>,
    pub bottom: Vec<VocabEntryView>,
}

/// One token's probability under both models, decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeView {
    pub id: u32,
    pub text: String,
    pub p_steered: f32,
    pub p_unsteered: f32,
}

/// What steering changed at one position of a steered completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionChangeView {
    pub token: ChangeView,
    pub kl: f64,
    pub rose: Vec<ChangeView>,
    pub fell: Vec<ChangeView>,
}

/// [`tiller_core::inspect::LensLayer`], for the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensLayerView {
    pub layer: usize,
    pub norms: Vec<f64>,
    pub steered_norms: Vec<f64>,
    pub top: Vec<VocabEntryView>,
    pub steered_top: Vec<VocabEntryView>,
}

impl From<&tiller_core::inspect::LensLayer> for LensLayerView {
    fn from(l: &tiller_core::inspect::LensLayer) -> Self {
        let v = |e: &[tiller_core::vocab::VocabEntry]| e.iter().map(VocabEntryView::from).collect();
        Self {
            layer: l.layer,
            norms: l.norms.clone(),
            steered_norms: l.steered_norms.clone(),
            top: v(&l.top),
            steered_top: v(&l.steered_top),
        }
    }
}

/// [`tiller_core::inspect::LensSteering`], for the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensSteeringView {
    pub layer: usize,
    pub norms: Vec<f64>,
    pub top: Vec<VocabEntryView>,
    pub bottom: Vec<VocabEntryView>,
}

impl From<&tiller_core::inspect::LensSteering> for LensSteeringView {
    fn from(l: &tiller_core::inspect::LensSteering) -> Self {
        let v = |e: &[tiller_core::vocab::VocabEntry]| e.iter().map(VocabEntryView::from).collect();
        Self { layer: l.layer, norms: l.norms.clone(), top: v(&l.top), bottom: v(&l.bottom) }
    }
}
