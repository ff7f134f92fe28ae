//! The page: a Leptos client-side app. State lives in one [`Ctx`] of signals shared through
//! context; the worker client ([`client`]) turns worker messages into signal updates; each
//! panel is a small component reading and writing that state.
//!
//! Layout: left, the model ([`model`]) and the steering recipe ([`editor`]); right, the
//! results ([`results`]), the layer × coefficient sweep ([`sweep`]), the decoded vocabulary
//! ([`vocab`]), the vector workbench ([`vectors`]: pairs → CAA/PCA vectors, the library kept in
//! IndexedDB by [`idb`]) and the share link ([`sharing`]).

pub mod charts;
pub mod client;
pub mod discover;
pub mod editor;
pub mod fields;
pub mod files;
pub mod gallery;
pub mod heads;
pub mod idb;
pub mod inspect;
pub mod model;
pub mod results;
pub mod sharing;
pub mod storage;
pub mod sweep;
pub mod tour;
pub mod vectors;
pub mod vocab;

use leptos::prelude::*;
use tiller_core::{ModelSpec, Recipe};
use wasm_bindgen::JsCast;

use crate::form::{Form, TokenCounts};
use crate::protocol::{EngineChoice, ErrorKind, GenerationView, LayerVocabView, ModelSource, RunTiming, UserError, DEFAULT_HUB};
use crate::sweep::SweepForm;
use tiller_core::sweep::{SweepRow, SweepSpec};

/// What the model panel shows about the size of the chosen model.
#[derive(Debug, Clone, PartialEq)]
pub enum SizeInfo {
    Unknown,
    /// Waiting for the server; the built-in size, if any, meanwhile.
    Querying(Option<u64>),
    Known {
        bytes: Option<u64>,
        cached: bool,
    },
    Error(String),
}

/// `model-status`'s `data-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Idle,
    Loading,
    Ready,
    Error,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }
}

/// The engine that is ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedModel {
    pub source: ModelSource,
    pub config: ModelSpec,
    pub engine: String,
    pub from_cache: bool,
    pub bytes: u64,
    pub note: Option<String>,
    pub wasm_memory: u64,
    /// The tokenizer adds a BOS itself (Llama 3): the editor's BOS default.
    pub bos_default: bool,
    /// The model has a chat template: the editor offers to render the prompt through it.
    pub chat_template: bool,
}

/// Download progress of `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub loaded: u64,
    pub total: Option<u64>,
    pub from_cache: bool,
    /// `performance.now()`-style milliseconds when the load started.
    pub started_ms: f64,
    pub now_ms: f64,
}

/// `run-status`'s `data-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Idle,
    Running,
    Done,
    Error,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Done => "done",
            Self::Error => "error",
        }
    }
}

/// One run with the recipe that made it, kept in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: u64,
    /// 1, 2, 3… in the order runs were started (for people; `id` is for messages).
    pub number: usize,
    pub source: ModelSource,
    pub recipe: Recipe,
    pub generation: GenerationView,
    pub state: RunState,
    pub stopped: bool,
    pub error: Option<String>,
    /// How long its steps took, as the worker measured them.
    pub timing: RunTiming,
}

/// The latest sweep: its spec, the rows so far, and how far it got.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRun {
    pub id: u64,
    pub source: ModelSource,
    pub spec: SweepSpec,
    pub state: RunState,
    /// Steps done of `total` (0 of 0 until the worker's first report).
    pub done: usize,
    pub total: usize,
    pub rows: Vec<SweepRow>,
    pub stopped: bool,
    pub error: Option<String>,
}

/// The latest vector build (Vectors area).
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRun {
    pub id: u64,
    pub spec: crate::vectors::BuildSpec,
    /// The model it runs on, for the entry's provenance.
    pub model: String,
    pub state: RunState,
    pub done: usize,
    pub total: usize,
    pub stopped: bool,
    pub error: Option<String>,
    /// The name it was saved under.
    pub saved_as: Option<String>,
}

/// The latest A/B evaluation (Vectors area).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRun {
    pub id: u64,
    /// Each line's name, in the rows' order.
    pub labels: Vec<String>,
    pub coeffs: Vec<f32>,
    pub state: RunState,
    pub done: usize,
    pub total: usize,
    pub rows: Vec<tiller_core::contrast::AbRow>,
    pub items: usize,
    pub stopped: bool,
    pub error: Option<String>,
}

/// A library vector being read (its vocabulary, its size against the prompt's residual stream).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub id: u64,
    /// The library entry's id.
    pub entry: String,
    pub ln_f: bool,
    pub state: RunState,
    pub layers: Vec<crate::protocol::VectorReading>,
    pub prompt_tokens: Option<usize>,
    pub prompt_problem: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VocabState {
    Empty,
    Loading,
    Ready(Vec<LayerVocabView>),
    Error(String),
}

/// The error banner.
#[derive(Debug, Clone, PartialEq)]
pub struct Banner {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<UserError> for Banner {
    fn from(e: UserError) -> Self {
        Self { kind: e.kind, message: e.message }
    }
}

/// The page's state, shared through context. Every field is a `Copy` handle.
#[derive(Clone, Copy)]
pub struct Ctx {
    /// The Hub endpoint (`?hub=` overrides <https://huggingface.co>).
    pub hub: StoredValue<String>,
    /// Whether the worker sees `navigator.gpu` (None until it has started).
    pub webgpu: RwSignal<Option<bool>>,
    pub model_choice: RwSignal<String>,
    pub model_repo: RwSignal<String>,
    pub model_url: RwSignal<String>,
    /// The user's Hugging Face token (for gated repos): in memory, and in local storage only
    /// while `hf_remember` is ticked. Sent to the Hub endpoint only; never in share links.
    pub hf_token: RwSignal<String>,
    pub hf_remember: RwSignal<bool>,
    pub local_files: StoredValue<Vec<web_sys::File>, LocalStorage>,
    pub local_names: RwSignal<Vec<String>>,
    pub engine_choice: RwSignal<EngineChoice>,
    pub size: RwSignal<SizeInfo>,
    pub model_state: RwSignal<ModelState>,
    /// The source of the load in progress (so a retry can repeat it).
    pub loading_source: RwSignal<Option<ModelSource>>,
    pub loaded: RwSignal<Option<LoadedModel>>,
    pub progress: RwSignal<Option<Progress>>,
    pub cache: RwSignal<Option<(u64, usize)>>,
    pub error: RwSignal<Option<Banner>>,
    /// A share link's model source waiting for the user's consent to download.
    pub pending_confirm: RwSignal<Option<ModelSource>>,
    /// A source to load as soon as the worker is up (a share link naming a default model).
    pub autoload: StoredValue<Option<ModelSource>>,
    pub form: RwSignal<Form>,
    /// Run was pressed: number fields show their problems without waiting for a blur.
    pub fields_checked: RwSignal<bool>,
    /// The Run button (test id) that started the running generation, given focus back when it
    /// ends; None when it was started from the keyboard shortcut (focus stays where it was).
    pub run_focus: StoredValue<Option<&'static str>>,
    /// The BOS box was set by the user, a share link or a history entry: a model that loads
    /// then keeps it instead of applying its tokenizer's default.
    pub bos_pinned: StoredValue<bool>,
    pub preset: RwSignal<String>,
    /// The preset last applied, the depth it was scaled to, and the terms it produced.
    pub applied_preset: RwSignal<Option<(String, usize, Vec<tiller_core::Term>)>>,
    pub counts: RwSignal<Option<TokenCounts>>,
    pub runs: RwSignal<Vec<RunRecord>>,
    pub shown_run: RwSignal<Option<u64>>,
    pub run_state: RwSignal<RunState>,
    pub vocab: RwSignal<VocabState>,
    pub vocab_ln_f: RwSignal<bool>,
    /// The recipe whose vector the panel decoded when it was not a run's (the Decode button).
    pub vocab_recipe: StoredValue<Option<Recipe>>,
    /// The sweep panel as typed, and the depth its "every layer" range was set for.
    pub sweep_form: RwSignal<SweepForm>,
    pub sweep_depth: StoredValue<usize>,
    /// Whether the sweep panel is unfolded (a link with sweep settings unfolds it).
    pub sweep_open: RwSignal<bool>,
    pub sweep: RwSignal<Option<SweepRun>>,
    /// The Vectors area: the build form as typed, the latest build, the library (mirrored in
    /// IndexedDB), the library's last message (ok?, text), and whether the area is unfolded.
    pub vec_form: RwSignal<crate::vectors::VectorForm>,
    pub vec_build: RwSignal<Option<BuildRun>>,
    pub eval_form: RwSignal<crate::vectors::EvalForm>,
    pub vec_eval: RwSignal<Option<EvalRun>>,
    pub vec_reading: RwSignal<Option<Reading>>,
    /// The phase of the load in progress and whether it builds the GPU engine (None when no
    /// load runs).
    pub load_phase: RwSignal<Option<(crate::protocol::LoadPhase, bool)>>,
    pub library: RwSignal<crate::vectors::Library>,
    pub library_note: RwSignal<Option<(bool, String)>>,
    pub vectors_open: RwSignal<bool>,
    /// The Inspect area.
    pub inspect: inspect::InspectState,
    /// The Heads area (function vectors).
    pub heads: heads::HeadsState,
    /// The Discover area (MELBO).
    pub discover: discover::DiscoverState,
    /// Latest request ids; answers to older requests are dropped.
    pub last_size_id: StoredValue<u64>,
    pub last_analysis_id: StoredValue<u64>,
    pub last_vocab_id: StoredValue<u64>,
    pub next_id: StoredValue<u64>,
    pub worker: StoredValue<Option<web_sys::Worker>, LocalStorage>,
    /// Messages posted before the worker said `Started` (its wasm was still starting and a
    /// message then would be lost): sent in order when it does. None once it has started.
    pub outbox: StoredValue<Option<Vec<js_sys::Object>>, LocalStorage>,
}

impl Ctx {
    fn new() -> Self {
        Self {
            hub: StoredValue::new(hub_from_query()),
            webgpu: RwSignal::new(None),
            model_choice: RwSignal::new("gpt2".into()),
            model_repo: RwSignal::new(String::new()),
            model_url: RwSignal::new(String::new()),
            hf_token: RwSignal::new(storage::load_token().unwrap_or_default()),
            hf_remember: RwSignal::new(storage::load_token().is_some()),
            local_files: StoredValue::new_local(Vec::new()),
            local_names: RwSignal::new(Vec::new()),
            engine_choice: RwSignal::new(EngineChoice::Auto),
            size: RwSignal::new(SizeInfo::Unknown),
            model_state: RwSignal::new(ModelState::Idle),
            loading_source: RwSignal::new(None),
            loaded: RwSignal::new(None),
            progress: RwSignal::new(None),
            cache: RwSignal::new(None),
            error: RwSignal::new(None),
            pending_confirm: RwSignal::new(None),
            autoload: StoredValue::new(None),
            form: RwSignal::new(Form::default()),
            fields_checked: RwSignal::new(false),
            run_focus: StoredValue::new(None),
            bos_pinned: StoredValue::new(false),
            preset: RwSignal::new("love-hate".into()),
            applied_preset: RwSignal::new(None),
            counts: RwSignal::new(None),
            runs: RwSignal::new(Vec::new()),
            shown_run: RwSignal::new(None),
            run_state: RwSignal::new(RunState::Idle),
            vocab: RwSignal::new(VocabState::Empty),
            vocab_ln_f: RwSignal::new(false),
            vocab_recipe: StoredValue::new(None),
            sweep_form: RwSignal::new(SweepForm::new(DEFAULT_DEPTH)),
            sweep_depth: StoredValue::new(DEFAULT_DEPTH),
            sweep_open: RwSignal::new(false),
            sweep: RwSignal::new(None),
            vec_form: RwSignal::new(crate::vectors::VectorForm::new(DEFAULT_DEPTH)),
            vec_build: RwSignal::new(None),
            eval_form: RwSignal::new(Default::default()),
            vec_eval: RwSignal::new(None),
            vec_reading: RwSignal::new(None),
            load_phase: RwSignal::new(None),
            library: RwSignal::new(Default::default()),
            library_note: RwSignal::new(None),
            vectors_open: RwSignal::new(false),
            inspect: inspect::InspectState::new(),
            heads: heads::HeadsState::new(),
            discover: discover::DiscoverState::new(),
            last_size_id: StoredValue::new(0),
            last_analysis_id: StoredValue::new(0),
            last_vocab_id: StoredValue::new(0),
            next_id: StoredValue::new(1),
            worker: StoredValue::new_local(None),
            outbox: StoredValue::new_local(Some(Vec::new())),
        }
    }

    /// A fresh id for a request or run.
    pub fn fresh_id(&self) -> u64 {
        let id = self.next_id.get_value();
        self.next_id.set_value(id + 1);
        id
    }

    /// The model source the picker currently describes.
    pub fn chosen_source(&self) -> ModelSource {
        match self.model_choice.get().as_str() {
            "hub" => ModelSource::Hub(self.model_repo.get().trim().to_string()),
            "url" => ModelSource::Url(self.model_url.get().trim().to_string()),
            "local" => ModelSource::Local,
            repo if crate::protocol::suggested(repo).is_some() => ModelSource::Hub(repo.to_string()),
            name => ModelSource::Default(name.to_string()),
        }
    }

    /// Points the picker at a source (share links, history).
    pub fn set_source(&self, source: &ModelSource) {
        match source {
            ModelSource::Hub(repo) => self.model_repo.set(repo.clone()),
            ModelSource::Url(url) => self.model_url.set(url.clone()),
            _ => {}
        }
        self.model_choice.set(source.select_value());
    }

    /// The Hugging Face token, when one was typed. The worker sends it only to URLs under the
    /// Hub endpoint, whatever the source.
    pub fn hub_token(&self) -> Option<String> {
        Some(self.hf_token.get().trim().to_string()).filter(|t| !t.is_empty())
    }

    /// The loaded model's shapes, if one is ready.
    pub fn config(&self) -> Option<ModelSpec> {
        self.loaded.with(|l| l.as_ref().map(|l| l.config))
    }

    /// The depth presets and layer bounds use: the loaded model's, else the chosen default's.
    pub fn depth(&self) -> usize {
        if let Some(cfg) = self.config() {
            return cfg.n_layer;
        }
        match self.chosen_source() {
            ModelSource::Default(name) => ModelSpec::gpt2_preset(&name).map(|c| c.n_layer).unwrap_or(48),
            _ => 48,
        }
    }

    /// Whether a sweep is running.
    pub fn sweeping(&self) -> bool {
        self.sweep.with(|s| s.as_ref().is_some_and(|s| s.state == RunState::Running))
    }

    /// Whether a vector build is running.
    pub fn building(&self) -> bool {
        self.vec_build.with(|b| b.as_ref().is_some_and(|b| b.state == RunState::Running))
    }

    /// Whether an A/B evaluation is running.
    pub fn evaluating(&self) -> bool {
        self.vec_eval.with(|e| e.as_ref().is_some_and(|e| e.state == RunState::Running))
    }

    /// Whether the engine is busy with a run, a sweep or a vector build (it does one thing at a
    /// time).
    pub fn busy(&self) -> bool {
        self.run_state.get() == RunState::Running
            || self.sweeping()
            || self.building()
            || self.evaluating()
            || self.inspect.projecting()
            || self.heads.running()
            || self.discover.running()
    }

    /// Sets the sweep panel (share links), its "every layer" range for the current depth.
    pub fn set_sweep_form(&self, form: SweepForm) {
        self.sweep_depth.set_value(self.depth());
        self.sweep_form.set(form);
    }

    pub fn show_error(&self, kind: ErrorKind, message: impl Into<String>) {
        self.error.set(Some(Banner { kind, message: message.into() }));
    }
}

/// The depth of the model the picker starts on (gpt2).
const DEFAULT_DEPTH: usize = 12;

/// `?hub=URL` in the page's address replaces the Hugging Face Hub (tests, mirrors).
fn hub_from_query() -> String {
    let search = window().location().search().unwrap_or_default();
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()
        .and_then(|p| p.get("hub"))
        .map(|h| h.trim().trim_end_matches('/').to_string())
        .filter(|h| h.starts_with("http://") || h.starts_with("https://"))
        .unwrap_or_else(|| DEFAULT_HUB.to_string())
}

/// Mounts the page on `<body>`.
pub fn mount() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        show_panic(&info.to_string());
    }));
    leptos::mount::mount_to_body(App);
}

/// Puts a panic's text on the page: the reactive system may be broken by then, so plain DOM.
fn show_panic(text: &str) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else { return };
    let Ok(div) = doc.create_element("div") else { return };
    div.set_class_name("banner banner-error panic");
    let _ = div.set_attribute("data-testid", "error");
    div.set_text_content(Some(&format!(
        "The page hit an internal error and may not work until you reload it: {text}. Please report it with the steps that led to it."
    )));
    if let Some(body) = doc.body() {
        let _ = body.prepend_with_node_1(&div);
    }
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let ctx = Ctx::new();
    provide_context(ctx);
    sharing::restore_from_fragment(ctx);
    sharing::watch_editor_and_hash(ctx);
    client::start(ctx);
    client::watch_size(ctx);
    client::watch_analysis(ctx);
    vectors::load_library(ctx);
    results::keep_history(ctx);
    let tour_step = RwSignal::new(tour::first_visit());

    view! {
        <header class="top">
            <div class="top-line">
                <h1>"Tiller"</h1>
                <tour::TourButton step=tour_step/>
            </div>
            <p class="lede">
                "Steer a language model (GPT-2, Llama, Qwen2, Pythia) by adding activation vectors (ActAdd), right here in your browser. "
                "1. Load a model. 2. Pick a preset or write a prompt and steering terms (e.g. +5 × \"Love\", −5 × \"Hate\" at layer 6). "
                "3. Run: unsteered and steered completions appear side by side, from the same random seeds."
            </p>
        </header>
        <AreaNav/>
        <ErrorBanner/>
        <sharing::ConfirmDialog/>
        <main class="layout">
            <section class="left">
                <model::ModelPanel/>
                <editor::RecipeEditor/>
            </section>
            <section class="right">
                <gallery::Gallery/>
                <results::Results/>
                <sweep::SweepPanel/>
                <vectors::VectorsPanel/>
                <heads::HeadsPanel/>
                <discover::DiscoverPanel/>
                <vocab::VocabPanel/>
                <inspect::InspectPanel/>
                <sharing::SharePanel/>
                <results::History/>
            </section>
        </main>
        <footer class="foot">
            "Everything runs locally: model files come straight from the Hub (or your URL/files) into this tab and are cached by your browser. "
            "Share links carry the whole recipe in the part after #, so opening one sends nothing anywhere. "
            "Ctrl+Enter runs the recipe."
        </footer>
        <tour::Tour step=tour_step/>
    }
}

/// Moves focus to the element with this test id once the page has updated (a button that was
/// just enabled can take it only then), without scrolling: the view stays on the results.
pub fn focus_later(testid: &'static str) {
    set_timeout(
        move || {
            let el = document().query_selector(&format!("[data-testid={testid}]")).ok().flatten();
            if let Some(el) = el.and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
                let options = web_sys::FocusOptions::new();
                options.set_prevent_scroll(true);
                let _ = el.focus_with_options(&options);
            }
        },
        std::time::Duration::ZERO,
    );
}

/// Runs the recipe from a Run button: focus goes to its Stop while it runs and back to it
/// when the run ends (`editor::keep_run_focus`), instead of dropping to the page when the
/// button is disabled.
pub fn run_from(ctx: Ctx, run: &'static str, stop: &'static str) -> Result<(), Vec<String>> {
    client::run(ctx)?;
    ctx.run_focus.set_value(Some(run));
    focus_later(stop);
    Ok(())
}

/// Opens (if folded) and brings into view the area with this element id.
pub fn reveal_area(id: &str) {
    let Some(el) = document().get_element_by_id(id) else { return };
    if let Some(d) = el.dyn_ref::<web_sys::HtmlDetailsElement>() {
        d.set_open(true);
    }
    el.scroll_into_view();
}

/// The page's areas, one click away (a folded area opens), from a bar that stays at the top.
#[component]
fn AreaNav() -> impl IntoView {
    const AREAS: [(&str, &str); 12] = [
        ("area-gallery", "Gallery"),
        ("area-model", "1 Model"),
        ("area-recipe", "2 Recipe"),
        ("area-results", "3 Completions"),
        ("area-sweep", "4 Sweep"),
        ("area-vectors", "5 Vectors"),
        ("area-heads", "Heads"),
        ("area-discover", "Discover"),
        ("area-vocab", "Vocabulary"),
        ("area-inspect", "Inspect"),
        ("area-share", "Share"),
        ("area-history", "History"),
    ];
    let go = |id: &'static str| {
        move |ev: web_sys::MouseEvent| {
            ev.prevent_default();
            reveal_area(id);
            // Keyboard users land in the area they asked for.
            if let Some(h) = document().get_element_by_id(id).and_then(|el| el.dyn_into::<web_sys::HtmlElement>().ok()) {
                h.set_tab_index(-1);
                let _ = h.focus();
            }
        }
    };
    view! {
        <nav class="areas" aria-label="areas of the page" data-testid="area-nav">
            {AREAS.iter().map(|&(id, label)| view! { <a href=format!("#{id}") data-area=id on:click=go(id)>{label}</a> }).collect_view()}
        </nav>
    }
}

/// The error banner: present only while an error is shown, with the action that fits it
/// (Retry for a download that broke, not for a file the server says is not there).
#[component]
fn ErrorBanner() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || {
        ctx.error.get().map(|b| {
            let action = match b.kind {
                ErrorKind::Download | ErrorKind::DeviceLost | ErrorKind::OutOfMemory => {
                    let label = if b.kind == ErrorKind::Download { "Retry" } else { "Reload the model" };
                    Some(view! {
                        <button data-testid="error-retry" on:click=move |_| {
                            ctx.error.set(None);
                            let source = ctx.loading_source.get_untracked().or_else(|| ctx.loaded.get_untracked().map(|l| l.source));
                            client::load(ctx, source.unwrap_or_else(|| ctx.chosen_source()));
                        }>{label}</button>
                    })
                }
                _ => None,
            };
            // Weights with NaN or infinities: refused, unless the user asks to see where they go.
            let anyway = (b.kind == ErrorKind::BadFile && b.message.contains("not finite (NaN or infinity)")).then(|| {
                view! {
                    <button data-testid="error-load-anyway" title="Load the weights as they are; a run stops where its values first stop being finite"
                        on:click=move |_| {
                            ctx.error.set(None);
                            let source = ctx.loading_source.get_untracked().unwrap_or_else(|| ctx.chosen_source());
                            client::load_with(ctx, source, true);
                        }>"Load anyway"</button>
                }
            });
            let cpu = matches!(b.kind, ErrorKind::NoWebGpu).then(|| {
                view! {
                    <button data-testid="error-use-cpu" on:click=move |_| {
                        ctx.error.set(None);
                        ctx.engine_choice.set(EngineChoice::Cpu);
                        client::load(ctx, ctx.chosen_source());
                    }>"Use the CPU instead (small models)"</button>
                }
            });
            view! {
                <div class="banner banner-error" role="alert">
                    <span data-testid="error" data-kind=b.kind.as_str()>{b.message.clone()}</span>
                    {action}
                    {anyway}
                    {cpu}
                    <button class="dismiss" title="Dismiss" on:click=move |_| ctx.error.set(None)>"×"</button>
                </div>
            }
        })
    }
}
