//! The Heads area: function vectors (Todd et al.). Pick a shipped ICL task or paste pairs, run
//! `tiller fv`'s pipeline on the loaded engine (progress bar, Stop), and read the average
//! indirect effect of every head as a layers × heads heatmap, the top heads, the accuracy by
//! layer with the vector added (zero-shot and shuffled labels), its decoded vocabulary; save it
//! to the library or put it in the recipe (at the last position, as the paper adds it). The
//! logic is plain Rust in [`crate::heads`].

use leptos::prelude::*;
use tiller_core::fv::{self, Phase};

use super::client::{self, send};
use super::fields::{ErrorList, NumInput, Pressed};
use super::{Ctx, ModelState, RunState};
use crate::heads::{heads_text, heat_color, passes, FvForm, ItiForm, TASKS};
use crate::numbers::{check, NumKind};
use crate::protocol::{FromWorker, FvSpec, FvView, ItiView, ToWorker, VocabEntryView};

/// One run of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct FvRunView {
    pub id: u64,
    pub spec: FvSpec,
    pub model: String,
    pub state: RunState,
    pub phase: Phase,
    pub done: usize,
    pub total: usize,
    pub stopped: bool,
    pub result: Option<FvView>,
    pub error: Option<String>,
}

/// The area's state (in [`Ctx`]).
#[derive(Clone, Copy)]
pub struct HeadsState {
    pub open: RwSignal<bool>,
    pub form: RwSignal<FvForm>,
    pub run: RwSignal<Option<FvRunView>>,
    /// The layer the vector is saved at and steers at, as typed (empty: the best layer).
    pub layer: RwSignal<String>,
    /// The heatmap cell under the pointer: (layer, head).
    pub hover: RwSignal<Option<(usize, usize)>>,
    /// What the last save / use did: (ok, message).
    pub note: RwSignal<Option<(bool, String)>>,
    pub iti_form: RwSignal<ItiForm>,
    pub iti_run: RwSignal<Option<ItiRunView>>,
    pub iti_hover: RwSignal<Option<(usize, usize)>>,
    pub iti_note: RwSignal<Option<(bool, String)>>,
}

/// One ITI run.
#[derive(Debug, Clone, PartialEq)]
pub struct ItiRunView {
    pub id: u64,
    pub state: RunState,
    pub done: usize,
    pub total: usize,
    pub stopped: bool,
    pub result: Option<ItiView>,
    pub error: Option<String>,
}

impl HeadsState {
    pub fn new() -> Self {
        Self {
            open: RwSignal::new(false),
            form: RwSignal::new(FvForm::default()),
            run: RwSignal::new(None),
            layer: RwSignal::new(String::new()),
            hover: RwSignal::new(None),
            note: RwSignal::new(None),
            iti_form: RwSignal::new(ItiForm::default()),
            iti_run: RwSignal::new(None),
            iti_hover: RwSignal::new(None),
            iti_note: RwSignal::new(None),
        }
    }

    /// Whether a run (function vector or probes) holds the engine.
    pub fn running(&self) -> bool {
        self.run.with(|r| r.as_ref().is_some_and(|r| r.state == RunState::Running))
            || self.iti_run.with(|r| r.as_ref().is_some_and(|r| r.state == RunState::Running))
    }
}

impl Default for HeadsState {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts a run from the form, or says why it cannot.
fn start(ctx: Ctx) -> Result<(), Vec<String>> {
    let st = ctx.heads;
    let Some(loaded) = ctx.loaded.get_untracked() else {
        return Err(vec!["load a model first (left, top)".into()]);
    };
    if untrack(|| ctx.busy()) {
        return Err(vec!["the engine is busy with a run, a sweep, a build or a reading: wait for it or stop it first".into()]);
    }
    let bos = ctx.form.with_untracked(|f| f.bos);
    let cfg = loaded.config;
    let spec = st.form.with_untracked(|f| f.to_spec(cfg.n_layer, cfg.n_head, bos))?;
    let id = ctx.fresh_id();
    st.note.set(None);
    st.hover.set(None);
    st.run.set(Some(FvRunView {
        id,
        spec: spec.clone(),
        model: loaded.source.model_id(),
        state: RunState::Running,
        phase: Phase::Clean,
        done: 0,
        total: 0,
        stopped: false,
        result: None,
        error: None,
    }));
    send(ctx, &ToWorker::Fv { run_id: id, spec }, &[]);
    Ok(())
}

/// Takes the worker's answers about function vectors; false for any other message.
pub fn on_message(ctx: Ctx, msg: &FromWorker) -> bool {
    let st = ctx.heads;
    let update = |id: u64, f: &mut dyn FnMut(&mut FvRunView)| {
        st.run.update(|r| {
            if let Some(r) = r.as_mut().filter(|r| r.id == id) {
                f(r)
            }
        })
    };
    match msg {
        FromWorker::FvProgress { run_id, phase, done, total } => update(*run_id, &mut |r| {
            r.phase = *phase;
            r.done = *done;
            r.total = *total;
        }),
        FromWorker::FvDone { run_id, result } => update(*run_id, &mut |r| {
            r.state = RunState::Done;
            r.stopped = result.is_none();
            r.result = result.clone();
        }),
        FromWorker::FvFailed { run_id, error } => {
            update(*run_id, &mut |r| {
                r.state = RunState::Error;
                r.error = Some(error.message.clone());
            });
            client::engine_trouble(ctx, error);
        }
        FromWorker::ItiProgress { run_id, done, total } => iti_update(st, *run_id, &mut |r| {
            r.done = *done;
            r.total = *total;
        }),
        FromWorker::ItiDone { run_id, result } => iti_update(st, *run_id, &mut |r| {
            r.state = RunState::Done;
            r.stopped = result.is_none();
            r.result = result.clone();
        }),
        FromWorker::ItiFailed { run_id, error } => {
            iti_update(st, *run_id, &mut |r| {
                r.state = RunState::Error;
                r.error = Some(error.message.clone());
            });
            client::engine_trouble(ctx, error);
        }
        _ => return false,
    }
    true
}

fn iti_update(st: HeadsState, id: u64, f: &mut dyn FnMut(&mut ItiRunView)) {
    st.iti_run.update(|r| {
        if let Some(r) = r.as_mut().filter(|r| r.id == id) {
            f(r)
        }
    })
}

/// Starts ITI's probes from the form, or says why it cannot.
fn start_iti(ctx: Ctx) -> Result<(), Vec<String>> {
    let st = ctx.heads;
    let Some(loaded) = ctx.loaded.get_untracked() else {
        return Err(vec!["load a model first (left, top)".into()]);
    };
    if untrack(|| ctx.busy()) {
        return Err(vec!["the engine is busy with a run, a sweep, a build or a reading: wait for it or stop it first".into()]);
    }
    let bos = ctx.form.with_untracked(|f| f.bos);
    let spec = st.iti_form.with_untracked(|f| f.to_spec(loaded.config.n_layer, loaded.config.n_head, bos))?;
    let id = ctx.fresh_id();
    st.iti_note.set(None);
    st.iti_hover.set(None);
    st.iti_run.set(Some(ItiRunView { id, state: RunState::Running, done: 0, total: 0, stopped: false, result: None, error: None }));
    send(ctx, &ToWorker::Iti { run_id: id, spec }, &[]);
    Ok(())
}

/// Reads a picked .jsonl / .txt file as UTF-8 text into `put`; a problem goes to `problem`,
/// and the text already there stays.
fn read_text_file(ev: web_sys::Event, put: impl Fn(String) + 'static, problem: impl Fn(String) + 'static) {
    let Some(file) = super::files::picked_file(&ev) else { return };
    wasm_bindgen_futures::spawn_local(async move {
        let name = file.name();
        match super::files::read_bytes(&file, tiller_core::pairs::MAX_DATASET_BYTES, "a dataset").await {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => put(text),
                Err(_) => problem(format!("{name} is not UTF-8 text: save it as UTF-8. What was there is unchanged.")),
            },
            Err(e) => problem(format!("{e}. What was there is unchanged.")),
        }
    });
}

/// The layer the vector goes at: the typed one, else the best.
fn chosen_layer(ctx: Ctx, view: &FvView) -> Result<usize, String> {
    let text = ctx.heads.layer.get_untracked();
    if text.trim().is_empty() {
        return Ok(view.best_layer);
    }
    check(&text, NumKind::whole(0, view.n_layer.saturating_sub(1) as u64), "the layer").map(|v| v as usize)
}

/// The library entry of the run's vector at `layer`.
fn entry_of(run: &FvRunView, view: &FvView, layer: usize) -> tiller_core::library::VectorEntry {
    let name = format!("{} fv L{layer}", run.spec.task);
    let created = super::vectors::now_rfc3339();
    let p = fv::Provenance {
        name: &name,
        model: &run.model,
        task: &run.spec.task,
        prompts: view.prompts,
        shots: run.spec.settings.shots,
        created: &created,
    };
    fv::to_entry(&view.vector, &view.vector_heads, layer, &p)
}

/// The area.
#[component]
pub fn HeadsPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.heads;
    view! {
        <details class="card heads" id="area-heads" data-testid="heads-panel" prop:open=move || st.open.get()
            on:toggle=move |ev| st.open.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
            <summary><h2>"Heads: function vectors from in-context examples"</h2></summary>
            <p class="note">
                "Give a model a few examples of a task (“hot → cold, up → down, …”) and some attention heads carry the task itself. "
                "Todd et al. find them by causal mediation: on prompts whose example answers are shuffled, put one head's average output back at the last token "
                "and see how much the right answer's probability recovers (its average indirect effect). "
                "The top heads' outputs, summed, are a function vector: added to a prompt with no examples, it makes the model do the task."
            </p>
            <FvFormView/>
            <FvResults/>
            <ItiFormView/>
            <ItiResults/>
        </details>
    }
}

/// What both forms of the area check: `live(n_layer, n_head, bos)` is the form's problems for
/// the loaded model's shape (gpt2-small's before one is loaded), those starting with
/// `own_line` being shown under the form's text instead; `failed`, the last run's error.
fn form_checks(
    ctx: Ctx,
    watch: impl Fn() + Send + Sync + 'static,
    live: impl Fn(usize, usize, bool) -> Vec<String> + Send + Sync + 'static,
    own_line: &'static str,
    failed: impl Fn() -> Option<String> + Send + Sync + 'static,
) -> (Pressed, Memo<Vec<String>>, Signal<Vec<String>>) {
    let pressed = Pressed::new(move || {
        watch();
        ctx.model_state.track();
    });
    let live = Memo::new(move |_| {
        let (l, h) = ctx.config().map_or((12, 12), |c| (c.n_layer, c.n_head));
        live(l, h, ctx.form.with(|f| f.bos))
    });
    let errors = Signal::derive(move || {
        let shown = live.get().into_iter().filter(|m| !m.starts_with(own_line)).collect();
        pressed.with_live(shown, failed())
    });
    (pressed, live, errors)
}

#[component]
fn FvFormView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.heads;
    let (pressed, live, errors) = form_checks(
        ctx,
        move || st.form.track(),
        move |l, h, bos| st.form.with(|f| f.to_spec(l, h, bos).err()).unwrap_or_default(),
        "the pairs: ",
        move || st.run.with(|r| r.as_ref().and_then(|r| r.error.clone())).map(|e| format!("The run failed: {e}")),
    );
    let dims = move || ctx.config().map(|c| (c.n_layer, c.n_head));
    let running = move || st.running();
    let can_run = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy() && live.with(Vec::is_empty);
    let on_run = move |_| pressed.press(|| start(ctx));
    let own = move || st.form.with(|f| !TASKS.iter().any(|t| t.id == f.task));
    let cost = move || {
        let (l, h) = dims()?;
        let bos = ctx.form.with(|f| f.bos);
        let spec = st.form.with(|f| f.to_spec(l, h, bos).ok())?;
        Some(format!(
            "{} passes of the model ({} heads × {} prompts, then the evaluation).",
            passes(&spec, l, h),
            l * h,
            spec.settings.prompts
        ))
    };
    let field = move |testid: &'static str,
                      cap: &'static str,
                      label: &'static str,
                      get: fn(&FvForm) -> String,
                      put: fn(&mut FvForm, String),
                      kind: NumKind| {
        view! {
            <span class="term-cell">
                <span class="cap">{cap}</span>
                <NumInput testid=testid label=label.to_string()
                    value=Signal::derive(move || st.form.with(get))
                    set=move |t: String| st.form.update(|f| put(f, t))
                    kind=kind/>
            </span>
        }
    };
    let heads_kind = move || dims().map_or(144, |(l, h)| l * h) as u64;
    view! {
        <fieldset class="fv-form">
            <legend>"A task, and how to look for its heads"</legend>
            <div class="row">
                <label for="fv-task">"Task"</label>
                <select id="fv-task" data-testid="fv-task" on:change=move |ev| {
                    let v = event_target_value(&ev);
                    st.form.update(|f| f.task = v);
                }>
                    {TASKS.iter().map(|t| view! {
                        <option value=t.id prop:selected=move || st.form.with(|f| f.task == t.id)>{t.label}</option>
                    }).collect_view()}
                    <option value="" prop:selected=own>"My own pairs (below)"</option>
                </select>
            </div>
            {move || own().then(|| view! {
                <label class="fv-own"><span class="cap">"One pair per line, "<code>"input -> output"</code>", or JSON lines of "<code>"{\"input\": \"…\", \"output\": \"…\"}"</code></span>
                    <textarea rows="6" spellcheck="false" data-testid="fv-own" prop:value=move || st.form.with(|f| f.own.clone())
                        on:input=move |ev| st.form.update(|f| f.own = event_target_value(&ev))></textarea></label>
                <label class="vec-file"><span class="cap">"…or read a .jsonl / .txt file"</span>
                    <input type="file" accept=".jsonl,.json,.txt" data-testid="fv-file" on:change=move |ev| read_text_file(ev,
                        move |t| st.form.update(|f| f.own = t),
                        move |m| pressed.set(vec![m]))/></label>
            })}
            {move || match st.form.with(|f| f.summary()) {
                Ok(s) => view! { <p class="note" data-testid="fv-pairs-summary" data-ok="true">{s}</p> }.into_any(),
                Err(e) => view! { <p class="invalid" data-testid="fv-pairs-summary" data-ok="false" role="status">{e}</p> }.into_any(),
            }}
            <label class="check">
                <input type="checkbox" data-testid="fv-both" prop:checked=move || st.form.with(|f| f.both_directions)
                    on:change=move |ev| st.form.update(|f| f.both_directions = event_target_checked(&ev))/>
                "Both directions: mix each pair with its flip (country ↔ capital)"
            </label>
            <div class="fv-settings">
                {field("fv-shots", "examples per prompt", "the examples per prompt", |f| f.shots.clone(), |f, t| f.shots = t, NumKind::whole(2, crate::heads::MAX_SHOTS))}
                {field("fv-prompts", "prompts", "the number of prompts", |f| f.prompts.clone(), |f, t| f.prompts = t, NumKind::whole(1, crate::heads::MAX_PROMPTS))}
                {field("fv-seed", "seed", "the seed", |f| f.seed.clone(), |f, t| f.seed = t, NumKind::whole(0, u32::MAX as u64))}
                <span class="term-cell">
                    <span class="cap">"heads summed"</span>
                    <NumInput testid="fv-top" label="the number of heads summed"
                        value=Signal::derive(move || st.form.with(|f| f.top_heads.clone()))
                        set=move |t: String| st.form.update(|f| f.top_heads = t)
                        kind=Signal::derive(move || NumKind::whole(1, heads_kind()))/>
                </span>
                {field("fv-eval", "held-out pairs to test", "the held-out pairs tested", |f| f.eval_pairs.clone(), |f, t| f.eval_pairs = t, NumKind::whole(0, crate::heads::MAX_EVAL))}
            </div>
            <p class="note" data-testid="fv-cost">{move || cost().unwrap_or_else(|| "Load a model to see what a run costs.".into())}
                " Prompts are tokenized with the editor's BOS box; 30% of the pairs are kept out of the prompts to test the vector on."</p>
            <ErrorList testid="fv-error" errors=errors/>
            <div class="buttons">
                <button class="primary" data-testid="fv-run" disabled=move || !can_run() on:click=on_run>"Find the heads"</button>
                <button data-testid="fv-stop" disabled=move || !running() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
                <span class="run-status" data-testid="fv-status"
                    data-state=move || st.run.with(|r| r.as_ref().map_or("idle", |r| r.state.as_str()))>{move || status(ctx)}</span>
            </div>
            {move || st.run.with(|r| r.as_ref().filter(|r| r.state == RunState::Running && r.total > 0).map(|r| view! {
                <progress data-testid="fv-progress" max=r.total value=r.done></progress>
            }))}
        </fieldset>
    }
}

fn status(ctx: Ctx) -> String {
    let ready = ctx.model_state.get() == ModelState::Ready;
    ctx.heads.run.with(|r| match r {
        None if !ready => "Load a model to look for its heads.".into(),
        None => "Ready.".into(),
        Some(r) => match r.state {
            RunState::Running => match r.phase {
                Phase::Clean => format!("Reading the clean prompts… {} of {}.", r.done, r.total),
                Phase::Patched => format!("Patching heads… {} of {} passes.", r.done, r.total),
                Phase::Eval => format!("Testing the vector at every layer… {} of {} passes.", r.done, r.total),
            },
            RunState::Done if r.stopped => "Stopped; nothing was kept.".into(),
            RunState::Done => "Done.".into(),
            RunState::Error => "Failed (see above).".into(),
            RunState::Idle => String::new(),
        },
    })
}

#[component]
fn FvResults() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.heads;
    let view_of = move || st.run.with(|r| r.as_ref().and_then(|r| r.result.clone()));
    move || {
        let v = view_of()?;
        Some(view! {
            <div class="fv-results" data-testid="fv-results">
                <p class="note" data-testid="fv-probs">{format!(
                    "P(right answer) at the last token: {} with the examples as given, {} with their answers shuffled (mean of {} prompts).",
                    prob(v.clean_prob), prob(v.corrupted_prob), v.prompts
                )}</p>
                <details class="fv-example"><summary>"An example prompt, clean and shuffled"</summary>
                    <pre data-testid="fv-example-clean">{v.example.0.clone()}</pre>
                    <pre data-testid="fv-example-corrupted">{v.example.1.clone()}</pre>
                </details>
                <Heatmap values=v.aie.clone() n_layer=v.n_layer n_head=v.n_head
                    top=v.top.iter().map(|h| (h.layer, h.head)).collect() centre=0.0
                    scale=v.aie.iter().fold(0.0f64, |m, x| m.max(x.abs()))
                    caption="Average indirect effect of each head (rows: layers, columns: heads; red raises the right answer, blue lowers it; outlined: the top heads)"
                    testid="fv-heatmap" cell_testid="fv-cell" hover_testid="fv-hover" hover=st.hover
                    describe=|l, h, x| format!("Layer {l}, head {h}: AIE {x:.4e} (P(answer) rises by this much when its mean output is put back).")/>
                <p data-testid="fv-top-heads"><strong>"Top heads: "</strong>{top_line(&v)}</p>
                <p class="note">{format!("The function vector sums the outputs of {} heads ({}) through the output projection: norm {:.3}.",
                    v.vector_heads.len(), heads_text(&v.vector_heads), v.norm)}</p>
                <AccuracyChart view=v.clone()/>
                <FvCompletions view=v.clone()/>
                <FvVocab top=v.top_tokens.clone() bottom=v.bottom_tokens.clone()/>
                <UseRow view=v/>
            </div>
        })
    }
}

/// A probability: 0.1234, or 1.23e-7 when small.
fn prob(p: f64) -> String {
    if p >= 1e-3 || p == 0.0 {
        format!("{p:.4}")
    } else {
        format!("{p:.2e}")
    }
}

fn top_line(v: &FvView) -> String {
    v.top.iter().map(|h| format!("{}.{} ({:.2e})", h.layer, h.head, v.aie[h.layer * v.n_head + h.head])).collect::<Vec<_>>().join(", ")
}

/// A layers × heads grid of values, coloured around `centre` (white) by `scale`, the `top`
/// heads outlined, each cell's value read out under the pointer.
#[component]
fn Heatmap(
    values: Vec<f64>,
    n_layer: usize,
    n_head: usize,
    top: Vec<(usize, usize)>,
    centre: f64,
    scale: f64,
    caption: &'static str,
    testid: &'static str,
    cell_testid: &'static str,
    hover_testid: &'static str,
    describe: fn(usize, usize, f64) -> String,
    hover: RwSignal<Option<(usize, usize)>>,
) -> impl IntoView {
    let (nl, nh) = (n_layer, n_head);
    // Small models get larger cells; Llama-sized ones (32 heads) stay on a phone's width.
    let cell = (360.0 / nh.max(1) as f64).clamp(11.0, 36.0);
    let (left, top_pad) = (34.0, 18.0);
    let w = left + nh as f64 * cell + 4.0;
    let hgt = top_pad + nl as f64 * cell + 4.0;
    let cells = (0..nl)
        .flat_map(|l| (0..nh).map(move |h| (l, h)))
        .map(|(l, h)| {
            let x = values[l * nh + h];
            let (cx, cy) = (left + h as f64 * cell, top_pad + l as f64 * cell);
            let outlined = top.contains(&(l, h));
            view! {
                <rect x=cx y=cy width=cell - 1.0 height=cell - 1.0 fill=heat_color(x - centre, scale)
                    class=if outlined { "fv-cell fv-cell-top" } else { "fv-cell" }
                    data-testid=cell_testid data-layer=l data-head=h data-value=format!("{x:e}")
                    on:mouseenter=move |_| hover.set(Some((l, h)))>
                    <title>{describe(l, h, x)}</title>
                </rect>
            }
        })
        .collect_view();
    let head_labels = (0..nh)
        .filter(|h| nh <= 16 || h % 4 == 0)
        .map(|h| view! { <text x=left + h as f64 * cell + cell / 2.0 y=top_pad - 5.0 class="fv-axis" text-anchor="middle">{h}</text> })
        .collect_view();
    let layer_labels = (0..nl)
        .map(|l| view! { <text x=left - 6.0 y=top_pad + l as f64 * cell + cell * 0.7 class="fv-axis" text-anchor="end">{format!("L{l}")}</text> })
        .collect_view();
    let readout = move || {
        hover.get().map_or_else(|| "Point at a cell: its layer, head and value.".to_string(), |(l, h)| describe(l, h, values[l * nh + h]))
    };
    view! {
        <figure class="fv-heatmap" data-testid=testid>
            <figcaption>{caption}</figcaption>
            <svg viewBox=format!("0 0 {w} {hgt}") width=w height=hgt role="img" aria-label=caption
                on:mouseleave=move |_| hover.set(None)>
                {head_labels}
                {layer_labels}
                {cells}
            </svg>
            <p class="note" data-testid=hover_testid aria-live="polite">{readout}</p>
        </figure>
    }
}

#[component]
fn AccuracyChart(view: FvView) -> impl IntoView {
    let Some(e) = view.eval.clone() else {
        return view! { <p class="note" data-testid="fv-acc-none">"No held-out pairs were tested (give more pairs, or more to test)."</p> }
            .into_any();
    };
    let (w, h, left, bottom, top) = (460.0, 190.0, 40.0, 30.0, 10.0);
    let n = e.layers.len().max(2) as f64 - 1.0;
    let x = move |l: usize| left + (w - left - 10.0) * l as f64 / n;
    let y = move |a: f64| top + (h - top - bottom) * (1.0 - a);
    let line = |pick: fn(&fv::LayerAccuracy) -> f64| {
        crate::chart::polyline(&e.layers.iter().map(|l| (x(l.layer), y(pick(l)))).collect::<Vec<_>>())
    };
    let dots = |pick: fn(&fv::LayerAccuracy) -> f64, class: &'static str, what: &'static str| {
        e.layers
            .iter()
            .map(|l| {
                let a = pick(l);
                view! { <circle cx=x(l.layer) cy=y(a) r="3" class=class><title>{format!("layer {}: {what} accuracy {:.0}%", l.layer, a * 100.0)}</title></circle> }
            })
            .collect_view()
    };
    let ticks = (0..e.layers.len())
        .filter(|l| e.layers.len() <= 16 || l % 2 == 0)
        .map(|l| view! { <text x=x(l) y=h - bottom + 16.0 class="fv-axis" text-anchor="middle">{l}</text> })
        .collect_view();
    let yt = [0.0, 0.5, 1.0]
        .map(|a| view! { <text x=left - 6.0 y=y(a) + 4.0 class="fv-axis" text-anchor="end">{format!("{:.0}%", a * 100.0)}</text> })
        .into_iter()
        .collect_view();
    let (z0, s0) = (e.zero_shot, e.shuffled);
    view! {
        <figure class="fv-acc" data-testid="fv-acc-chart">
            <figcaption>{format!(
                "First-token accuracy on {} held-out pairs with the vector added at each layer (last position). Without it: zero-shot {:.0}%, shuffled labels {:.0}% (dashed).",
                e.pairs, z0 * 100.0, s0 * 100.0
            )}</figcaption>
            <svg viewBox=format!("0 0 {w} {h}") width=w height=h role="img" aria-label="accuracy by layer">
                <line x1=left x2=w - 10.0 y1=y(0.0) y2=y(0.0) class="fv-grid"/>
                <line x1=left x2=w - 10.0 y1=y(1.0) y2=y(1.0) class="fv-grid"/>
                <line x1=left x2=w - 10.0 y1=y(z0) y2=y(z0) class="fv-base fv-zero"/>
                <line x1=left x2=w - 10.0 y1=y(s0) y2=y(s0) class="fv-base fv-shuffled"/>
                <path d=line(|l| l.zero_shot) class="fv-line fv-zero" data-testid="fv-acc-zero"/>
                <path d=line(|l| l.shuffled) class="fv-line fv-shuffled"/>
                {dots(|l| l.zero_shot, "fv-dot fv-zero", "zero-shot")}
                {dots(|l| l.shuffled, "fv-dot fv-shuffled", "shuffled-label")}
                {ticks}
                {yt}
                <text x=(left + w) / 2.0 y=h - 2.0 class="fv-axis" text-anchor="middle">"layer the vector is added at"</text>
            </svg>
            <p class="legend"><span class="fv-key fv-zero">"● zero-shot (no examples)"</span>" "<span class="fv-key fv-shuffled">"● examples with shuffled answers"</span></p>
        </figure>
    }
    .into_any()
}

/// The paper's demonstration: held-out zero-shot prompts completed without and with the vector.
#[component]
fn FvCompletions(view: FvView) -> impl IntoView {
    (!view.completions.is_empty()).then(|| {
        let rows = view
            .completions
            .iter()
            .map(|c| {
                view! {
                    <tr data-testid="fv-completion">
                        <td><code>{format!("Q: {}\\nA:", c.input)}</code></td>
                        <td>{c.expected.clone()}</td>
                        <td class="fv-unsteered">{format!("{:?}", c.unsteered)}</td>
                        <td class="fv-steered">{format!("{:?}", c.steered)}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <figure class="fv-completions" data-testid="fv-completions">
                <figcaption>{format!("Greedy completions of held-out prompts with no examples, the vector added at layer {} (the best) at the last position of every step:", view.best_layer)}</figcaption>
                <table>
                    <thead><tr><th>"prompt"</th><th>"expected"</th><th>"without"</th><th>"with the vector"</th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </figure>
        }
    })
}

#[component]
fn FvVocab(top: Vec<VocabEntryView>, bottom: Vec<VocabEntryView>) -> impl IntoView {
    let list = |entries: Vec<VocabEntryView>, testid: &'static str| {
        view! { <ol class="fv-tokens" data-testid=testid>{entries.into_iter().map(|e| view! { <li title=format!("{:.3}", e.score)><code>{format!("{:?}", e.token)}</code></li> }).collect_view()}</ol> }
    };
    view! {
        <div class="fv-vocab" data-testid="fv-vocab">
            <p class="note">"Its decoded vocabulary (the vector through the final norm and the unembedding; a heuristic): the tokens it points towards, and away from."</p>
            <div class="fv-vocab-cols">
                <div><span class="cap">"towards"</span>{list(top, "fv-vocab-top")}</div>
                <div><span class="cap">"away from"</span>{list(bottom, "fv-vocab-bottom")}</div>
            </div>
        </div>
    }
}

/// The layer to put it at, "Save to library" and "Use in recipe".
#[component]
fn UseRow(view: FvView) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.heads;
    let n_layer = view.n_layer;
    let best = view.best_layer;
    let v = StoredValue::new(view);
    let entry = move || -> Result<tiller_core::library::VectorEntry, String> {
        let run = st.run.get_untracked().ok_or("no run")?;
        let layer = v.with_value(|v| chosen_layer(ctx, v))?;
        Ok(v.with_value(|view| entry_of(&run, view, layer)))
    };
    let save = move |_| match entry().and_then(|e| super::vectors::save_entry(ctx, e)) {
        Ok(name) => st.note.set(Some((true, format!("Saved to the library (5 · Vectors) as “{name}”.")))),
        Err(e) => st.note.set(Some((false, format!("Not saved: {e}.")))),
    };
    let use_it = move |_| {
        let e = match entry() {
            Ok(e) => e,
            Err(e) => return st.note.set(Some((false, format!("Not added: {e}.")))),
        };
        let mut form = ctx.form.get_untracked();
        match form.add_vector_entry(&e) {
            Ok(said) => {
                ctx.form.set(form);
                st.note.set(Some((true, format!("In the recipe, at the last position of every step: {said} (editor, left)."))));
            }
            Err(err) => st.note.set(Some((false, format!("Not added: “{}” {err}.", e.name)))),
        }
    };
    view! {
        <div class="fv-use">
            <span class="term-cell">
                <span class="cap">{format!("at layer (empty: {best}, the best)")}</span>
                <NumInput testid="fv-layer" label="the layer the vector goes at"
                    value=Signal::derive(move || st.layer.get())
                    set=move |t: String| st.layer.set(t)
                    kind=NumKind::whole(0, n_layer.saturating_sub(1) as u64)
                    empty_ok=true placeholder="best"/>
            </span>
            <div class="buttons">
                <button class="small" data-testid="fv-save" on:click=save>"Save to library"</button>
                <button class="small" data-testid="fv-use" on:click=use_it>"Use in recipe"</button>
            </div>
            {move || st.note.get().map(|(ok, m)| view! { <p class=if ok { "note" } else { "invalid" } data-testid="fv-note" role="status">{m}</p> })}
        </div>
    }
}

#[component]
fn ItiFormView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.heads;
    let (pressed, live, errors) = form_checks(
        ctx,
        move || st.iti_form.track(),
        move |l, h, bos| st.iti_form.with(|f| f.to_spec(l, h, bos).err()).unwrap_or_default(),
        "the statements: ",
        move || st.iti_run.with(|r| r.as_ref().and_then(|r| r.error.clone())).map(|e| format!("The probes failed: {e}")),
    );
    let dims = move || ctx.config().map(|c| (c.n_layer, c.n_head));
    let running = move || st.iti_run.with(|r| r.as_ref().is_some_and(|r| r.state == RunState::Running));
    let can_run = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy() && live.with(Vec::is_empty);
    let on_run = move |_| pressed.press(|| start_iti(ctx));
    let heads_kind = move || dims().map_or(144, |(l, h)| l * h) as u64;
    let directions = [
        (tiller_core::iti::Direction::MassMean, "mass mean (true − false), Li et al.'s best"),
        (tiller_core::iti::Direction::Probe, "the probe's weights"),
    ];
    view! {
        <fieldset class="fv-form iti-form">
            <legend>"Truth probes (ITI, Li et al.): which heads read whether a statement is true"</legend>
            <p class="note">"A logistic-regression probe on each head's output at the last token of true and false statements; "
                "the heads whose probes are most accurate on held-out statements are shifted along their direction at every position while the model writes."</p>
            <label class="check">
                <input type="checkbox" data-testid="iti-own" prop:checked=move || st.iti_form.with(|f| f.own)
                    on:change=move |ev| st.iti_form.update(|f| f.own = event_target_checked(&ev))/>
                "My own statements (otherwise the 120 shipped ones)"
            </label>
            {move || st.iti_form.with(|f| f.own).then(|| view! {
                <label class="fv-own"><span class="cap">"JSON lines of "<code>"{\"text\": \"…\", \"label\": true}"</code>" or false"</span>
                    <textarea rows="5" spellcheck="false" data-testid="iti-texts" prop:value=move || st.iti_form.with(|f| f.own_text.clone())
                        on:input=move |ev| st.iti_form.update(|f| f.own_text = event_target_value(&ev))></textarea></label>
                <label class="vec-file"><span class="cap">"…or read a .jsonl file"</span>
                    <input type="file" accept=".jsonl,.json,.txt" data-testid="iti-file" on:change=move |ev| read_text_file(ev,
                        move |t| st.iti_form.update(|f| f.own_text = t),
                        move |m| pressed.set(vec![m]))/></label>
            })}
            {move || match st.iti_form.with(|f| f.summary()) {
                Ok(s) => view! { <p class="note" data-testid="iti-summary" data-ok="true">{s}</p> }.into_any(),
                Err(e) => view! { <p class="invalid" data-testid="iti-summary" data-ok="false" role="status">{e}</p> }.into_any(),
            }}
            <div class="fv-settings">
                <span class="term-cell">
                    <span class="cap">"held out (fraction)"</span>
                    <NumInput testid="iti-val" label="the fraction of statements held out"
                        value=Signal::derive(move || st.iti_form.with(|f| f.val.clone()))
                        set=move |t: String| st.iti_form.update(|f| f.val = t)
                        kind=NumKind::above(0.0, 0.9)/>
                </span>
                <span class="term-cell">
                    <span class="cap">"seed"</span>
                    <NumInput testid="iti-seed" label="the seed of the split"
                        value=Signal::derive(move || st.iti_form.with(|f| f.seed.clone()))
                        set=move |t: String| st.iti_form.update(|f| f.seed = t)
                        kind=NumKind::whole(0, u32::MAX as u64)/>
                </span>
                <span class="term-cell">
                    <span class="cap">"heads shifted"</span>
                    <NumInput testid="iti-top" label="the number of heads shifted"
                        value=Signal::derive(move || st.iti_form.with(|f| f.top_heads.clone()))
                        set=move |t: String| st.iti_form.update(|f| f.top_heads = t)
                        kind=Signal::derive(move || NumKind::whole(1, heads_kind()))/>
                </span>
                <label><span class="cap">"direction"</span>
                    <super::fields::ChoiceSelect testid="iti-direction" options=directions.to_vec()
                        value=Signal::derive(move || st.iti_form.with(|f| f.direction))
                        set=move |v| st.iti_form.update(|f| f.direction = v)/></label>
            </div>
            <ErrorList testid="iti-error" errors=errors/>
            <div class="buttons">
                <button class="primary" data-testid="iti-run" disabled=move || !can_run() on:click=on_run>"Probe the heads"</button>
                <button data-testid="iti-stop" disabled=move || !running() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
                <span class="run-status" data-testid="iti-status"
                    data-state=move || st.iti_run.with(|r| r.as_ref().map_or("idle", |r| r.state.as_str()))>{move || st.iti_run.with(|r| match r {
                        None => String::new(),
                        Some(r) => match r.state {
                            RunState::Running => format!("Reading the statements… {} of {}.", r.done, r.total),
                            RunState::Done if r.stopped => "Stopped.".into(),
                            RunState::Done => "Done.".into(),
                            RunState::Error => "Failed (see above).".into(),
                            RunState::Idle => String::new(),
                        },
                    })}</span>
            </div>
            {move || st.iti_run.with(|r| r.as_ref().filter(|r| r.state == RunState::Running && r.total > 0).map(|r| view! {
                <progress data-testid="iti-progress" max=r.total value=r.done></progress>
            }))}
        </fieldset>
    }
}

#[component]
fn ItiResults() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.heads;
    let view_of = move || st.iti_run.with(|r| r.as_ref().and_then(|r| r.result.clone()));
    move || {
        let v = view_of()?;
        let accuracy: Vec<f64> = v.heads.iter().map(|h| h.accuracy).collect();
        let top: Vec<(usize, usize)> = v.top.iter().map(|s| (s.layer, s.head)).collect();
        let rows = v
            .top
            .iter()
            .map(|s| view! { <li data-testid="iti-top-head">{format!("{}.{}: accuracy {:.0}%, σ {:.3}", s.layer, s.head, s.accuracy * 100.0, s.sigma)}</li> })
            .collect_view();
        let stored = StoredValue::new(v.clone());
        let use_it = move |_| {
            let alpha = match st.iti_form.with_untracked(|f| f.alpha()) {
                Ok(a) => a,
                Err(e) => return st.iti_note.set(Some((false, format!("Not added: {e}.")))),
            };
            let terms = stored.with_value(|v| tiller_core::iti::terms(&v.top, alpha));
            let mut form = ctx.form.get_untracked();
            let room = tiller_core::recipe::MAX_VECTOR_TERMS - form.vectors.len().min(tiller_core::recipe::MAX_VECTOR_TERMS);
            if terms.len() > room {
                return st.iti_note.set(Some((
                    false,
                    format!(
                        "Not added: {} heads, but the recipe has room for {room} more vector terms: remove some, or shift fewer heads.",
                        terms.len()
                    ),
                )));
            }
            let n = terms.len();
            form.vectors.extend(terms);
            ctx.form.set(form);
            st.iti_note.set(Some((
                true,
                format!("In the recipe: {n} head shifts with α = {alpha}, at every position (editor, left). Run to compare."),
            )));
        };
        Some(view! {
            <div class="fv-results iti-results" data-testid="iti-results">
                <p class="note">{format!("Probes trained on {} statements, checked on {} held out.", v.train, v.val)}</p>
                <Heatmap values=accuracy n_layer=v.n_layer n_head=v.n_head top=top centre=0.5 scale=0.5
                    caption="Validation accuracy of each head's probe (red above chance, blue below; outlined: the heads shifted)"
                    testid="iti-heatmap" cell_testid="iti-cell" hover_testid="iti-hover" hover=st.iti_hover
                    describe=|l, h, x| format!("Layer {l}, head {h}: probe accuracy {:.1}% on the held-out statements.", x * 100.0)/>
                <ol class="iti-top" data-testid="iti-top-heads">{rows}</ol>
                <div class="fv-use">
                    <span class="term-cell">
                        <span class="cap">"α (strength, × σ)"</span>
                        <NumInput testid="iti-alpha" label="α, the shift's strength"
                            value=Signal::derive(move || st.iti_form.with(|f| f.alpha.clone()))
                            set=move |t: String| st.iti_form.update(|f| f.alpha = t)
                            kind=NumKind::real(-tiller_core::recipe::MAX_COEFF as f64, tiller_core::recipe::MAX_COEFF as f64) flip=true/>
                    </span>
                    <div class="buttons"><button class="small" data-testid="iti-use" on:click=use_it>"Use in recipe"</button></div>
                    {move || st.iti_note.get().map(|(ok, m)| view! { <p class=if ok { "note" } else { "invalid" } data-testid="iti-note" role="status">{m}</p> })}
                </div>
            </div>
        })
    }
}
