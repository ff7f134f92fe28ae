//! The Discover area: MELBO (Mack & Turner), steering vectors found without saying what to
//! steer toward. Type prompts, pick the layers, R and how many vectors; the worker trains them
//! one after another on the loaded engine (a live loss curve, a progress bar with the time
//! left, Stop keeping the finished ones), and each finished vector shows the first prompt
//! completed without it, with it and with its negation, its decoded vocabulary, and buttons to
//! put it in the recipe. Every finished vector goes into the library at once (with its
//! provenance), so a reload keeps them. The form's logic is plain Rust in
//! [`crate::discover`].

use leptos::prelude::*;

use super::client::{self, send};
use super::fields::{ErrorList, NumInput, Pressed};
use super::{Ctx, ModelState, RunState};
use crate::discover::{duration, radius_chart, time_left, DiscoverForm};
use crate::numbers::{check, NumKind};
use crate::protocol::{FromWorker, MelboSpec, MelboSteerSpec, MelboVectorView, ToWorker, VocabEntryView};
use tiller_core::melbo::sweep::RadiusPoint;
use tiller_core::recipe::Sampling;

/// One MELBO run.
#[derive(Debug, Clone, PartialEq)]
pub struct MelboRunView {
    pub id: u64,
    pub spec: MelboSpec,
    pub model: String,
    pub state: RunState,
    /// The vector being trained and the step reached.
    pub vector: usize,
    pub step: usize,
    /// f before each step of the vector being trained.
    pub losses: Vec<f64>,
    /// `Date.now()` when the run started, for the time left.
    pub started_ms: f64,
    pub vectors: Vec<MelboVectorView>,
    pub stopped: bool,
    pub error: Option<String>,
    /// A sweep over R: its radii (empty for a plain run) and the points judged so far.
    pub radii: Vec<f64>,
    pub points: Vec<RadiusPoint>,
}

impl MelboRunView {
    fn sweep(&self) -> bool {
        !self.radii.is_empty()
    }

    /// Steps of every vector of the run (each R's, in a sweep).
    fn total_steps(&self) -> usize {
        self.spec.vectors * self.spec.steps * self.radii.len().max(1)
    }

    fn steps_done(&self) -> usize {
        let running = self.state == RunState::Running;
        if self.sweep() {
            let here = if running { self.vector * self.spec.steps + self.step } else { 0 };
            return self.points.len() * self.spec.vectors * self.spec.steps + here;
        }
        self.vectors.len() * self.spec.steps + if running { self.step } else { 0 }
    }
}

/// The area's state (in [`Ctx`]).
#[derive(Clone, Copy)]
pub struct DiscoverState {
    pub open: RwSignal<bool>,
    pub form: RwSignal<DiscoverForm>,
    pub run: RwSignal<Option<MelboRunView>>,
    /// The coefficient the completions are redone at, as typed.
    pub coeff: RwSignal<String>,
    /// Redo them sampled (the editor's Sampling settings and seed) rather than greedy.
    pub sampled: RwSignal<bool>,
    /// The pending re-steer: (request id, vector index).
    pub steering: RwSignal<Option<(u64, usize)>>,
    /// What the last save / use / steer did: (ok, message).
    pub note: RwSignal<Option<(bool, String)>>,
}

impl DiscoverState {
    pub fn new() -> Self {
        Self {
            open: RwSignal::new(false),
            form: RwSignal::new(DiscoverForm::default()),
            run: RwSignal::new(None),
            coeff: RwSignal::new("1".into()),
            sampled: RwSignal::new(false),
            steering: RwSignal::new(None),
            note: RwSignal::new(None),
        }
    }

    /// Whether a run (or a re-steer) holds the engine.
    pub fn running(&self) -> bool {
        self.run.with(|r| r.as_ref().is_some_and(|r| r.state == RunState::Running)) || self.steering.with(Option::is_some)
    }
}

impl Default for DiscoverState {
    fn default() -> Self {
        Self::new()
    }
}

fn start(ctx: Ctx, sweep: bool) -> Result<(), Vec<String>> {
    let st = ctx.discover;
    let Some(loaded) = ctx.loaded.get_untracked() else {
        return Err(vec!["load a model first (left, top)".into()]);
    };
    if untrack(|| ctx.busy()) {
        return Err(vec!["the engine is busy with a run, a sweep, a build or a reading: wait for it or stop it first".into()]);
    }
    let bos = ctx.form.with_untracked(|f| f.bos);
    let cfg = loaded.config;
    let (spec, radii) = if sweep {
        st.form.with_untracked(|f| f.to_sweep(cfg.n_layer, cfg.n_embd, bos))?
    } else {
        (st.form.with_untracked(|f| f.to_spec(cfg.n_layer, cfg.n_embd, bos))?, Vec::new())
    };
    let id = ctx.fresh_id();
    st.note.set(None);
    st.run.set(Some(MelboRunView {
        id,
        spec: spec.clone(),
        model: loaded.source.model_id(),
        state: RunState::Running,
        vector: 0,
        step: 0,
        losses: Vec::new(),
        started_ms: js_sys::Date::now(),
        vectors: Vec::new(),
        stopped: false,
        error: None,
        radii: radii.clone(),
        points: Vec::new(),
    }));
    let msg = if sweep { ToWorker::MelboSweep { run_id: id, spec, radii } } else { ToWorker::Melbo { run_id: id, spec } };
    send(ctx, &msg, &[]);
    Ok(())
}

/// The library entry of vector `v` of the run.
fn entry_of(run: &MelboRunView, v: &MelboVectorView) -> tiller_core::library::VectorEntry {
    let name = format!("melbo L{}→{} R{} #{}", run.spec.source, run.spec.target, run.spec.radius, v.index);
    let created = super::vectors::now_rfc3339();
    let p = tiller_core::melbo::Provenance {
        name: &name,
        model: &run.model,
        source: run.spec.source,
        target: run.spec.target,
        radius: run.spec.radius,
        prompts: &run.spec.prompts,
        index: v.index,
        created: &created,
    };
    tiller_core::melbo::to_entry(&v.vector, &p)
}

/// Takes the worker's answers about MELBO; false for any other message.
pub fn on_message(ctx: Ctx, msg: &FromWorker) -> bool {
    let st = ctx.discover;
    let update = |id: u64, f: &mut dyn FnMut(&mut MelboRunView)| {
        st.run.update(|r| {
            if let Some(r) = r.as_mut().filter(|r| r.id == id) {
                f(r)
            }
        })
    };
    match msg {
        FromWorker::MelboProgress { run_id, vector, step, loss, .. } => update(*run_id, &mut |r| {
            if r.vector != *vector {
                r.losses.clear();
            }
            r.vector = *vector;
            r.step = *step;
            r.losses.push(*loss);
        }),
        FromWorker::MelboVector { run_id, vector } => {
            let mut saved = None;
            update(*run_id, &mut |r| {
                saved = Some(super::vectors::save_entry(ctx, entry_of(r, vector)));
                r.vectors.push(vector.clone());
                r.losses.clear();
                r.step = 0;
                r.vector = vector.index + 1;
            });
            match saved {
                Some(Ok(name)) => st.note.set(Some((true, format!("Saved “{name}” to the library (5 · Vectors).")))),
                Some(Err(e)) => st.note.set(Some((false, format!("A vector could not be saved to the library: {e}.")))),
                None => {}
            }
        }
        FromWorker::MelboSweepPoint { run_id, point } => update(*run_id, &mut |r| {
            r.points.push(point.clone());
            r.losses.clear();
            r.vector = 0;
            r.step = 0;
        }),
        FromWorker::MelboDone { run_id, stopped } => update(*run_id, &mut |r| {
            r.state = RunState::Done;
            r.stopped = *stopped;
        }),
        FromWorker::MelboFailed { run_id, error } => {
            update(*run_id, &mut |r| {
                r.state = RunState::Error;
                r.error = Some(error.message.clone());
            });
            client::engine_trouble(ctx, error);
        }
        FromWorker::MelboSteered { id, result } => {
            let Some((pending, index)) = st.steering.get_untracked().filter(|(p, _)| p == id) else { return true };
            let _ = pending;
            st.steering.set(None);
            match result {
                Ok(c) => st.run.update(|r| {
                    if let Some(v) = r.as_mut().and_then(|r| r.vectors.iter_mut().find(|v| v.index == index)) {
                        v.completions = c.clone();
                    }
                }),
                Err(e) => {
                    st.note.set(Some((false, format!("The completions could not be redone: {}", e.message))));
                    client::engine_trouble(ctx, e);
                }
            }
        }
        _ => return false,
    }
    true
}

#[component]
pub fn DiscoverPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.discover;
    view! {
        <details class="card discover" id="area-discover" data-testid="discover-panel" prop:open=move || st.open.get()
            on:toggle=move |ev| st.open.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
            <summary><h2>"Discover: steering vectors nobody asked for (MELBO)"</h2></summary>
            <p class="note">
                "Every other method here needs you to say what to steer toward. MELBO (Mack & Turner) does not: it looks for vectors of a fixed norm R that, "
                "added to the residual stream at an early layer, change a later layer's activations as much as possible, each orthogonal to the ones before. "
                "Many turn out to be behaviours: another language, code, a refusal switched off. Read each vector's completions to find out which."
            </p>
            <DiscoverFormView/>
            <TrainingView/>
            <SweepView/>
            <VectorList/>
        </details>
    }
}

#[component]
fn DiscoverFormView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.discover;
    let pressed = Pressed::new(move || {
        st.form.track();
        ctx.model_state.track();
    });
    let live = Memo::new(move |_| {
        let (l, c) = ctx.config().map_or((12, 768), |c| (c.n_layer, c.n_embd));
        st.form.with(|f| f.to_spec(l, c, ctx.form.with(|f| f.bos)).err()).unwrap_or_default()
    });
    let errors = Signal::derive(move || {
        let failed = st.run.with(|r| r.as_ref().and_then(|r| r.error.clone())).map(|e| format!("The run failed: {e}"));
        pressed.with_live(live.get().into_iter().filter(|m| !m.starts_with("the prompts")).collect(), failed)
    });
    let can_run = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy() && live.with(Vec::is_empty);
    let sweep_live = Memo::new(move |_| {
        let (l, c) = ctx.config().map_or((12, 768), |c| (c.n_layer, c.n_embd));
        st.form.with(|f| f.to_sweep(l, c, ctx.form.with(|f| f.bos)).err()).unwrap_or_default()
    });
    let radii_problem =
        move || sweep_live.with(|l| l.iter().find(|m| m.starts_with("the radii") || m.contains("2 or more vectors")).cloned());
    let can_sweep = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy() && sweep_live.with(Vec::is_empty);
    let running = move || st.run.with(|r| r.as_ref().is_some_and(|r| r.state == RunState::Running));
    let depth = move || ctx.config().map_or(12, |c| c.n_layer);
    let defaults = move || {
        let (s, t) = tiller_core::melbo::default_layers(depth());
        format!("Empty layers: {s} and {t}, a quarter and three quarters of the depth (the replication's advice).")
    };
    let field = move |testid: &'static str,
                      cap: &'static str,
                      label: &'static str,
                      get: fn(&DiscoverForm) -> String,
                      put: fn(&mut DiscoverForm, String),
                      kind: Signal<NumKind>,
                      placeholder: &'static str| {
        let empty_ok = !placeholder.is_empty();
        view! {
            <span class="term-cell">
                <span class="cap">{cap}</span>
                <NumInput testid=testid label=label.to_string()
                    value=Signal::derive(move || st.form.with(get))
                    set=move |t: String| st.form.update(|f| put(f, t))
                    kind=kind empty_ok=empty_ok placeholder=placeholder/>
            </span>
        }
    };
    let layer_kind = Signal::derive(move || NumKind::whole(0, depth().saturating_sub(1) as u64));
    let fixed = |k: NumKind| Signal::derive(move || k);
    let prompt_problem = move || live.with(|l| l.iter().find(|m| m.starts_with("the prompts")).cloned());
    view! {
        <fieldset class="fv-form discover-form">
            <legend>"Prompts, layers and how many vectors"</legend>
            <label class="fv-own"><span class="cap">"Prompts, one per line (the objective sums over them)"</span>
                <textarea rows="3" spellcheck="false" data-testid="melbo-prompts" prop:value=move || st.form.with(|f| f.prompts.clone())
                    on:input=move |ev| st.form.update(|f| f.prompts = event_target_value(&ev))></textarea></label>
            {move || prompt_problem().map(|m| view! { <p class="invalid" data-testid="melbo-prompts-error" role="status">{m}</p> })}
            <div class="fv-settings">
                {field("melbo-source", "source layer", "the source layer", |f| f.source.clone(), |f, t| f.source = t, layer_kind, "auto")}
                {field("melbo-target", "target layer", "the target layer", |f| f.target.clone(), |f, t| f.target = t, layer_kind, "auto")}
                {field("melbo-radius", "R (norm)", "R (the vectors' norm)", |f| f.radius.clone(), |f, t| f.radius = t, fixed(NumKind::above(0.0, 1e6)), "")}
                {field("melbo-vectors", "vectors", "the number of vectors", |f| f.vectors.clone(), |f, t| f.vectors = t, fixed(NumKind::whole(1, crate::discover::MAX_VECTORS)), "")}
                {field("melbo-steps", "steps each", "the steps per vector", |f| f.steps.clone(), |f, t| f.steps = t, fixed(NumKind::whole(1, crate::discover::MAX_STEPS)), "")}
                {field("melbo-p", "p", "p", |f| f.p.clone(), |f, t| f.p = t, fixed(NumKind::real(1.0, 16.0)), "")}
                {field("melbo-q", "q (empty: p)", "q", |f| f.q.clone(), |f, t| f.q = t, fixed(NumKind::real(0.25, 16.0)), "= p")}
                {field("melbo-seed", "seed", "the seed", |f| f.seed.clone(), |f, t| f.seed = t, fixed(NumKind::whole(0, u32::MAX as u64)), "")}
                {field("melbo-new-tokens", "tokens shown", "the completion length", |f| f.new_tokens.clone(), |f, t| f.new_tokens = t, fixed(NumKind::whole(1, crate::discover::MAX_NEW_TOKENS)), "")}
                <span class="term-cell">
                    <span class="cap">"target tokens"</span>
                    <select data-testid="melbo-target-tokens" aria-label="which tokens the target layer is read at" on:change=move |ev| {
                        let v = event_target_value(&ev);
                        st.form.update(|f| f.target_tokens = v);
                    }>
                        {["all", "last:1", "last:2", "last:4"].map(|t| view! {
                            <option value=t prop:selected=move || st.form.with(|f| f.target_tokens == t)>{t}</option>
                        }).into_iter().collect_view()}
                    </select>
                </span>
            </div>
            <div class="melbo-radii">
                <label><span class="cap">"Radii for a sweep over R (each gets the vectors above)"</span>
                    <input type="text" data-testid="melbo-radii" aria-label="the radii of a sweep over R" spellcheck="false"
                        prop:value=move || st.form.with(|f| f.radii.clone())
                        on:input=move |ev| st.form.update(|f| f.radii = event_target_value(&ev))/></label>
                {move || radii_problem().map(|m| view! { <p class="invalid" data-testid="melbo-radii-error" role="status">{m}</p> })}
            </div>
            <label class="check">
                <input type="checkbox" data-testid="melbo-orthogonal" prop:checked=move || st.form.with(|f| f.orthogonal)
                    on:change=move |ev| st.form.update(|f| f.orthogonal = event_target_checked(&ev))/>
                "Each vector orthogonal to the ones before (MELBO's default)"
            </label>
            <p class="note" data-testid="melbo-defaults">{defaults}
                " f = (Σ over the prompt's tokens of ‖change‖^p)^(1/q) at the target layer; each step is a forward and a backward pass of the blocks between the two layers."</p>
            <ErrorList testid="melbo-error" errors=errors/>
            <div class="buttons">
                <button class="primary" data-testid="melbo-run" disabled=move || !can_run() on:click=move |_| pressed.press(|| start(ctx, false))>"Find vectors"</button>
                <button data-testid="melbo-sweep-run" disabled=move || !can_sweep() title="Train the vectors at each radius of the list and chart how varied and how likely their completions are"
                    on:click=move |_| pressed.press(|| start(ctx, true))>"Sweep R"</button>
                <button data-testid="melbo-stop" disabled=move || !running() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop (keeps the finished ones)"</button>
                <span class="run-status" data-testid="melbo-status"
                    data-state=move || st.run.with(|r| r.as_ref().map_or("idle", |r| r.state.as_str()))>{move || status(ctx)}</span>
            </div>
        </fieldset>
    }
}

fn status(ctx: Ctx) -> String {
    let ready = ctx.model_state.get() == ModelState::Ready;
    ctx.discover.run.with(|r| match r {
        None if !ready => "Load a model to look for its vectors.".into(),
        None => "Ready.".into(),
        Some(r) => match r.state {
            RunState::Running => {
                let left = time_left((js_sys::Date::now() - r.started_ms) / 1000.0, r.steps_done(), r.total_steps())
                    .map_or_else(|| "timing the first step…".to_string(), |s| format!("{} left", duration(s)));
                let at = format!("vector {} of {}, step {} of {}", r.vector + 1, r.spec.vectors, r.step, r.spec.steps);
                match r.radii.get(r.points.len()) {
                    Some(radius) if r.sweep() => format!("R = {radius} ({} of {}), {at}: {left}.", r.points.len() + 1, r.radii.len()),
                    _ => format!("{}{}: {left}.", at[..1].to_uppercase(), &at[1..]),
                }
            }
            RunState::Done if r.sweep() && r.stopped => format!("Stopped: {} of {} radii done.", r.points.len(), r.radii.len()),
            RunState::Done if r.sweep() => format!("Done: {} radii.", r.points.len()),
            RunState::Done if r.stopped => format!("Stopped: {} finished vector(s) kept.", r.vectors.len()),
            RunState::Done => format!("Done: {} vectors.", r.vectors.len()),
            RunState::Error => "Failed (see above).".into(),
            RunState::Idle => String::new(),
        },
    })
}

/// The progress bar and the live loss curve: f before each step of the vector in training,
/// over the final f of the finished ones.
#[component]
fn TrainingView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.discover;
    move || {
        st.run.with(|r| {
            // A finished sweep's story is its chart below; a plain run keeps its curves.
            let r = r.as_ref().filter(|r| !(r.sweep() && r.state != RunState::Running))?;
            let total = r.total_steps();
            let (w, h, left, bottom, top) = (460.0, 170.0, 48.0, 26.0, 10.0);
            let mut all: Vec<f64> = r.losses.clone();
            all.extend(r.vectors.iter().flat_map(|v| v.losses.iter().copied().chain([v.objective])));
            let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0), lo.max(1.0) + 1.0) };
            let x = |i: usize, n: usize| left + (w - left - 10.0) * i as f64 / (n.max(2) - 1) as f64;
            let y = |v: f64| top + (h - top - bottom) * (1.0 - (v - lo) / (hi - lo));
            let curve = |losses: &[f64]| crate::chart::polyline(&losses.iter().enumerate().map(|(i, &l)| (x(i, r.spec.steps), y(l))).collect::<Vec<_>>());
            let old = r.vectors.iter().map(|v| view! { <path d=curve(&v.losses) class="melbo-old"/> }).collect_view();
            let current = (!r.losses.is_empty()).then(|| view! { <path d=curve(&r.losses) class="melbo-loss" data-testid="melbo-curve" data-points=r.losses.len()/> });
            let ticks = [lo, (lo + hi) / 2.0, hi]
                .map(|v| view! { <text x=left - 6.0 y=y(v) + 4.0 class="fv-axis" text-anchor="end">{format!("{v:.3}")}</text> })
                .into_iter()
                .collect_view();
            Some(view! {
                <div class="melbo-training" data-testid="melbo-training">
                    {(r.state == RunState::Running).then(|| view! { <progress data-testid="melbo-progress" max=total value=r.steps_done()></progress> })}
                    <figure class="melbo-chart" data-testid="melbo-chart">
                        <figcaption>{format!(
                            "f before each step ({} steps a vector): the vector in training in colour, the finished ones in grey. f should rise.",
                            r.spec.steps
                        )}</figcaption>
                        <svg viewBox=format!("0 0 {w} {h}") width=w height=h role="img" aria-label="MELBO objective by step">
                            <line x1=left x2=w - 10.0 y1=h - bottom y2=h - bottom class="fv-grid"/>
                            {ticks}
                            {old}
                            {current}
                            <text x=(left + w) / 2.0 y=h - 6.0 class="fv-axis" text-anchor="middle">"step"</text>
                        </svg>
                    </figure>
                </div>
            })
        })
    }
}

/// A sweep over R: diversity and perplexity against R, the table, and the CSV.
#[component]
fn SweepView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.discover;
    let csv = move |_| {
        let Some((text, model)) =
            st.run.with_untracked(|r| r.as_ref().map(|r| (tiller_core::melbo::sweep::to_csv(&r.points), r.model.clone())))
        else {
            return;
        };
        let name = format!("tiller-melbo-sweep-{}.csv", model.replace(['/', ':', ' '], "-"));
        if let Err(e) = super::files::download(text.as_bytes(), "text/csv", &name) {
            st.note.set(Some((false, format!("The CSV could not be saved: {e}."))));
        }
    };
    move || {
        let run = st.run.get()?;
        if !run.sweep() {
            return None;
        }
        use crate::chart::{polyline, HEIGHT, MARGINS, WIDTH};
        let c = radius_chart(&run.points);
        let (x0, x1, y0) = (MARGINS.left, WIDTH - crate::discover::RADIUS_CHART_RIGHT, HEIGHT - MARGINS.bottom);
        let dots = |pts: &[(f64, f64)], class: &'static str, testid: &'static str| {
            pts.iter().map(|&(x, y)| view! { <circle cx=x cy=y r="4" class=class data-testid=testid/> }).collect_view()
        };
        let fmt = |x: Option<f64>, d: usize| x.map_or_else(|| "–".to_string(), |x| format!("{x:.d$}"));
        let rows = run
            .points
            .iter()
            .map(|p| {
                let sample = p.completions.first().and_then(|c| c.first()).map(|r| format!("{:?}", r.text)).unwrap_or_default();
                let mean_f = p.objectives.iter().sum::<f64>() / p.objectives.len().max(1) as f64;
                view! {
                    <tr data-testid="melbo-sweep-row" data-radius=p.radius.to_string()
                        data-diversity=p.diversity.map(|d| format!("{d:e}")).unwrap_or_default()
                        data-perplexity=p.perplexity.map(|d| format!("{d:e}")).unwrap_or_default()>
                        <td>{p.radius.to_string()}</td>
                        <td>{fmt(p.diversity, 3)}</td>
                        <td>{fmt(p.perplexity, 1)}</td>
                        <td>{fmt(p.unsteered_perplexity, 1)}</td>
                        <td>{format!("{mean_f:.3}")}</td>
                        <td class="fv-steered">{sample}</td>
                    </tr>
                }
            })
            .collect_view();
        let pending = run.radii.len() - run.points.len();
        Some(view! {
            <div class="melbo-sweep" data-testid="melbo-sweep">
                <figure class="melbo-sweep-chart" data-testid="melbo-sweep-chart" data-points=run.points.len()>
                    <figcaption>
                        "Against R (log scale): "<span class="key-div">"● diversity"</span>" (left: 1 − mean cosine between the vectors' completions) and "
                        <span class="key-ppl">"● perplexity"</span>" (right, log scale: how unlikely the unsteered model finds them; dashed: its own completion's). "
                        "The goldilocks R is where diversity has risen and perplexity has not yet run away."
                    </figcaption>
                    <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img" aria-label="diversity and perplexity against R">
                        <line x1=x0 x2=x1 y1=y0 y2=y0 class="fv-grid"/>
                        {c.left.iter().map(|(l, y)| view! { <text x=x0 - 6.0 y=y + 4.0 class="fv-axis" text-anchor="end">{l.clone()}</text> }).collect_view()}
                        {c.right.iter().map(|(l, y)| view! { <text x=x1 + 4.0 y=y + 4.0 class="fv-axis ppl-axis">{l.clone()}</text> }).collect_view()}
                        {c.xs.iter().map(|(r, x)| view! { <text x=*x y=y0 + 18.0 class="fv-axis" text-anchor="middle">{r.to_string()}</text> }).collect_view()}
                        {c.unsteered.map(|y| view! { <line x1=x0 x2=x1 y1=y y2=y class="melbo-base"/> })}
                        <path d=polyline(&c.diversity) class="melbo-div"/>
                        <path d=polyline(&c.perplexity) class="melbo-ppl"/>
                        {dots(&c.diversity, "melbo-div-dot", "melbo-sweep-div")}
                        {dots(&c.perplexity, "melbo-ppl-dot", "melbo-sweep-ppl")}
                        <text x=(x0 + x1) / 2.0 y=HEIGHT - 12.0 class="fv-axis" text-anchor="middle">"R (the vectors' norm)"</text>
                    </svg>
                </figure>
                <div class="melbo-scroll">
                    <table class="melbo-table melbo-sweep-table">
                        <caption>{format!(
                            "{} vectors at each R; completions of {} token(s), greedy; the first vector's completion of the first prompt shown.{}",
                            run.spec.vectors,
                            run.spec.new_tokens,
                            if pending > 0 && run.state == RunState::Running { format!(" {pending} R still to come.") } else { String::new() }
                        )}</caption>
                        <thead><tr><th>"R"</th><th>"diversity"</th><th>"perplexity"</th><th>"unsteered"</th><th>"mean f"</th><th>"vector #0 says"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
                <div class="buttons">
                    <button class="small" data-testid="melbo-sweep-csv" disabled=run.points.is_empty() on:click=csv>"Download CSV"</button>
                </div>
                <p class="note">"A sweep's vectors are not kept in the library: train at the R you pick (Find vectors) to keep them."</p>
            </div>
        })
    }
}

/// The finished vectors: their completions (without, with +c·θ, with −c·θ), f, vocabulary,
/// and how they relate; each is already in the library.
#[component]
fn VectorList() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.discover;
    let coeff = move || check(&st.coeff.get_untracked(), NumKind::real(-100.0, 100.0), "the coefficient").map(|c| c as f32);
    let resteer = move |index: usize| {
        let Some(run) = st.run.get_untracked() else { return };
        let Some(v) = run.vectors.iter().find(|v| v.index == index) else { return };
        let c = match coeff() {
            Ok(c) => c,
            Err(e) => return st.note.set(Some((false, format!("Not redone: {e}.")))),
        };
        let (sampling, seed) = if st.sampled.get_untracked() {
            match ctx.form.with_untracked(|f| f.sampling()) {
                Ok((s, seed)) => (s, seed),
                Err(e) => return st.note.set(Some((false, format!("Not redone: {} (Sampling, in the editor).", e.join("; "))))),
            }
        } else {
            (Sampling::greedy(), 0)
        };
        if untrack(|| ctx.busy()) {
            return st.note.set(Some((false, "Not redone: the engine is busy; wait for it or stop it first.".into())));
        }
        let id = ctx.fresh_id();
        st.steering.set(Some((id, index)));
        let spec = MelboSteerSpec {
            prompt: run.spec.prompts[0].clone(),
            bos: run.spec.bos,
            vector: v.vector.clone(),
            source: run.spec.source,
            coeff: c,
            new_tokens: run.spec.new_tokens,
            sampling,
            seed,
        };
        send(ctx, &ToWorker::MelboSteer { id, spec }, &[]);
    };
    let use_it = move |index: usize| {
        let Some(run) = st.run.get_untracked() else { return };
        let Some(v) = run.vectors.iter().find(|v| v.index == index) else { return };
        let e = entry_of(&run, v);
        let mut form = ctx.form.get_untracked();
        match form.add_vector_entry(&e) {
            Ok(said) => {
                ctx.form.set(form);
                st.note.set(Some((true, format!("In the recipe, at every position: {said} (editor, left)."))));
            }
            Err(err) => st.note.set(Some((false, format!("Not added: “{}” {err}.", e.name)))),
        }
    };
    move || {
        let run = st.run.get()?;
        if run.vectors.is_empty() {
            return None;
        }
        let views: Vec<&[f32]> = run.vectors.iter().map(|v| v.vector.as_slice()).collect();
        let n = views.len();
        let max_cos = tiller_core::library::max_abs_cosine(&views);
        // The matrix of the first MATRIX vectors (beyond that the cells get too small to read).
        const MATRIX: usize = 24;
        let shown = &run.vectors[..n.min(MATRIX)];
        let labels: Vec<String> = shown.iter().map(|v| format!("#{}", v.index)).collect();
        let matrix = tiller_core::library::cosine_matrix(&views[..shown.len()]);
        let matrix = (n >= 2).then(|| {
            view! {
                <details class="melbo-cos-matrix" open=n <= 12>
                    <summary>{format!("Cosine between every two vectors{}", if n > MATRIX { format!(" (the first {MATRIX})") } else { String::new() })}</summary>
                    {super::vectors::cosine_svg(&labels, &labels, &matrix, "melbo-cos-matrix", "melbo-cos-cell", format!("cosine similarity of {} MELBO vectors", shown.len()))}
                </details>
            }
        });
        let rows = run
            .vectors
            .iter()
            .map(|v| {
                let index = v.index;
                let first = v.losses.first().copied().unwrap_or(v.objective);
                let vocab = |e: &[VocabEntryView]| e.iter().take(6).map(|t| format!("{:?}", t.token)).collect::<Vec<_>>().join(" ");
                view! {
                    <tr data-testid="melbo-vector" data-index=index data-objective=format!("{:e}", v.objective) data-first=format!("{first:e}")>
                        <td>{format!("#{index}")}<br/><span class="cap" data-testid="melbo-decoding">{format!("c = {}, {}", v.completions.coeff, v.completions.decoding)}</span></td>
                        <td>{format!("{first:.3} → {:.3}", v.objective)}</td>
                        <td class="fv-unsteered" data-testid="melbo-unsteered" data-text=v.completions.unsteered.clone()>{format!("{:?}", v.completions.unsteered)}</td>
                        <td class="fv-steered" data-testid="melbo-plus" data-text=v.completions.plus.clone()>{format!("{:?}", v.completions.plus)}</td>
                        <td class="fv-steered" data-testid="melbo-minus" data-text=v.completions.minus.clone()>{format!("{:?}", v.completions.minus)}</td>
                        <td class="melbo-vocab" data-testid="melbo-vocab"><code>{vocab(&v.top_tokens)}</code></td>
                        <td class="buttons">
                            <button class="small" data-testid="melbo-resteer" on:click=move |_| resteer(index)>"Redo at c"</button>
                            <button class="small" data-testid="melbo-use" on:click=move |_| use_it(index)>"Use in recipe"</button>
                        </td>
                    </tr>
                }
            })
            .collect_view();
        let prompt = run.spec.prompts[0].clone();
        Some(view! {
            <div class="melbo-vectors" data-testid="melbo-vectors">
                <p class="note" data-testid="melbo-cos">{format!(
                    "{n} vector(s) of norm {}, each added at layer {} at every position; the largest |cosine| between two of them is {max_cos:.1e}{}.",
                    run.spec.radius, run.spec.source, if run.spec.orthogonal { " (orthogonal by construction)" } else { "" }
                )}</p>
                {matrix}
                <div class="melbo-coeff">
                    <span class="term-cell">
                        <span class="cap">"coefficient c for “Redo at c”"</span>
                        <NumInput testid="melbo-coeff" label="the coefficient" value=Signal::derive(move || st.coeff.get())
                            set=move |t: String| st.coeff.set(t) kind=NumKind::real(-100.0, 100.0) slider=Signal::derive(|| (-4.0, 4.0, 0.25))/>
                    </span>
                    <label class="check">
                        <input type="checkbox" data-testid="melbo-sampled" prop:checked=move || st.sampled.get()
                            on:change=move |ev| st.sampled.set(event_target_checked(&ev))/>
                        {move || {
                            let how = ctx.form.with(|f| f.sampling()).map(|(s, seed)| s.describe(seed)).unwrap_or_else(|e| e.join("; "));
                            let how = how.strip_prefix("sampled: ").unwrap_or(&how);
                            format!("Sample them with the editor's Sampling settings ({how}); unticked: greedy")
                        }}
                    </label>
                </div>
                <div class="melbo-scroll">
                    <table class="melbo-table">
                        <caption>{format!("Completions of {prompt:?}: without a vector, with +c·θ and with −c·θ, all three from the same seed (greedy at c = 1 until redone; each row says how), and each vector's decoded vocabulary.")}</caption>
                        <thead><tr><th>"vector"</th><th>"f first → final"</th><th>"without"</th><th>"+θ"</th><th>"−θ"</th><th>"tokens it points to"</th><th></th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
                {move || st.note.get().map(|(ok, m)| view! { <p class=if ok { "note" } else { "invalid" } data-testid="melbo-note" role="status">{m}</p> })}
                <p class="note">"Every finished vector is in the library (5 · Vectors) as “melbo L…#i”, with its model, layers, R and prompts: it stays after a reload, and exports to GGUF from there."</p>
            </div>
        })
    }
}
