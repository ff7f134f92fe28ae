//! The Inspect area: what a vector means and what it did. A vector (a library entry's layer,
//! or a run's steering vector) is projected over the built-in corpus or the user's texts
//! (token heatmaps, the top passages centred on their peak, a histogram, its decoded
//! vocabulary beside its max-activating tokens, CSV/JSON exports); the prompt is read layer by
//! layer (residual norms beside the steering tensor's and the library vectors', the logit
//! lens unsteered and steered); and under each steered completion, "What changed" shows per
//! token the KL and the tokens that rose and fell. The arithmetic is in `crate::inspect`.

use leptos::prelude::*;
use tiller_core::contrast::typical_norm;
use tiller_core::inspect::Measure;
use tiller_core::{Recipe, Site};

use super::{client, files, reveal_area, Ctx, RunState};
use crate::inspect as calc;
use crate::protocol::{
    FromWorker, LensLayerView, LensSteeringView, PositionChangeView, ProbeVector, ProjectionView, ToWorker, VocabEntryView,
};

/// What the area reads: a name, the layers it can be read at, and how texts are tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// "“sentiment mean_diff L2”", "run #3's steering".
    pub label: String,
    /// (layer, the vector there) for each layer the source has.
    pub choices: Vec<(usize, ProbeVector)>,
    pub site: Site,
    pub bos: bool,
    /// The run it came from.
    pub run: Option<u64>,
    /// The recipe it came from (a run's or the editor's): the lens reads its prompt.
    pub recipe: Option<Recipe>,
}

/// The latest projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub id: u64,
    pub label: String,
    pub layer: usize,
    pub site: Site,
    pub bos: bool,
    /// The texts sent, in order (for the JSON export).
    pub texts: Vec<String>,
    pub corpus: bool,
    pub state: RunState,
    pub done: usize,
    pub total: usize,
    pub stopped: bool,
    pub result: Option<ProjectionView>,
    pub error: Option<String>,
}

/// What steering changed along one steered completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    pub id: u64,
    pub run: u64,
    pub index: usize,
    pub state: RunState,
    pub positions: Vec<PositionChangeView>,
    pub error: Option<String>,
}

/// The prompt read layer by layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Lens {
    pub id: u64,
    pub run: Option<u64>,
    pub state: RunState,
    pub tokens: Vec<String>,
    pub layers: Vec<LensLayerView>,
    pub steering: Vec<LensSteeringView>,
    pub error: Option<String>,
}

/// The area's state (in [`Ctx`]).
#[derive(Clone, Copy)]
pub struct InspectState {
    pub open: RwSignal<bool>,
    pub target: RwSignal<Option<Target>>,
    pub layer: RwSignal<usize>,
    /// Read the user's texts instead of the built-in corpus.
    pub own: RwSignal<bool>,
    pub own_texts: RwSignal<String>,
    pub by: RwSignal<Measure>,
    pub projection: RwSignal<Option<Projection>>,
    /// The passage shown whole (its index among the texts).
    pub expanded: RwSignal<Option<usize>>,
    /// The token under the pointer: (text, position).
    pub hover: RwSignal<Option<(usize, usize)>>,
    pub changes: RwSignal<Option<Changes>>,
    /// The position of the change strip whose details are shown.
    pub change_at: RwSignal<Option<usize>>,
    pub lens: RwSignal<Option<Lens>>,
    pub note: RwSignal<Option<String>>,
}

impl InspectState {
    pub fn new() -> Self {
        Self {
            open: RwSignal::new(false),
            target: RwSignal::new(None),
            layer: RwSignal::new(0),
            own: RwSignal::new(false),
            own_texts: RwSignal::new(String::new()),
            by: RwSignal::new(Measure::Dot),
            projection: RwSignal::new(None),
            expanded: RwSignal::new(None),
            hover: RwSignal::new(None),
            changes: RwSignal::new(None),
            change_at: RwSignal::new(None),
            lens: RwSignal::new(None),
            note: RwSignal::new(None),
        }
    }

    /// Whether a projection is running (it holds the engine; Stop ends it).
    pub fn projecting(&self) -> bool {
        self.projection.with(|p| p.as_ref().is_some_and(|p| p.state == RunState::Running))
    }
}

impl Default for InspectState {
    fn default() -> Self {
        Self::new()
    }
}

/// Points the area at a vector and brings it into view.
pub fn inspect(ctx: Ctx, target: Target) {
    let st = ctx.inspect;
    st.layer.set(target.choices.first().map_or(0, |c| c.0));
    st.target.set(Some(target));
    st.note.set(None);
    st.open.set(true);
    reveal_area("area-inspect");
}

/// A library entry, at each of its layers.
pub fn inspect_entry(ctx: Ctx, id: &str) {
    let Some(s) = ctx.library.with_untracked(|l| l.get(id).cloned()) else { return };
    let bos = ctx.form.with_untracked(|f| f.bos);
    inspect(
        ctx,
        Target {
            label: format!("“{}”", s.entry.name),
            choices: s.entry.layers.iter().map(|l| (l.layer, ProbeVector::Values(l.vector.clone()))).collect(),
            site: s.entry.site,
            bos,
            run: None,
            recipe: None,
        },
    );
}

/// A run's steering vector, at each layer its recipe steers.
pub fn inspect_run(ctx: Ctx, run: u64) {
    let Some((number, recipe)) = ctx.runs.with_untracked(|rs| rs.iter().find(|r| r.id == run).map(|r| (r.number, r.recipe.clone()))) else {
        return;
    };
    inspect_recipe(ctx, format!("run #{number}'s steering"), recipe, Some(run));
}

/// A recipe's steering vector (a run's, or the editor's), at each layer it steers.
pub fn inspect_recipe(ctx: Ctx, label: String, recipe: Recipe, run: Option<u64>) {
    let mut layers: Vec<usize> = recipe.terms.iter().map(|t| t.layer).chain(recipe.vectors.iter().map(|v| v.layer)).collect();
    layers.sort_unstable();
    layers.dedup();
    let empty = layers.is_empty();
    inspect(
        ctx,
        Target {
            label,
            choices: layers.iter().map(|&layer| (layer, ProbeVector::Steering { recipe: recipe.clone(), layer })).collect(),
            site: recipe.site,
            bos: recipe.bos,
            run,
            recipe: Some(recipe.clone()),
        },
    );
    if empty {
        ctx.inspect.note.set(Some("The recipe steers nothing: add a term or a saved vector first.".into()));
    }
}

fn ready(ctx: Ctx) -> Result<(), String> {
    if ctx.loaded.with_untracked(Option::is_none) {
        return Err("load a model first (1 · Model)".into());
    }
    if untrack(|| ctx.busy()) {
        return Err("the engine is busy with a run, a sweep, a build or an evaluation: wait for it or stop it first".into());
    }
    Ok(())
}

/// Starts the projection the area is set to.
fn project(ctx: Ctx) -> Result<(), String> {
    ready(ctx)?;
    let st = ctx.inspect;
    let Some(target) = st.target.get_untracked() else { return Err("pick a vector to read first".into()) };
    let layer = st.layer.get_untracked();
    let Some((_, probe)) = target.choices.iter().find(|c| c.0 == layer).cloned() else {
        return Err(format!("{} has no layer {layer}", target.label));
    };
    let corpus = !st.own.get_untracked();
    let texts = if corpus { calc::corpus() } else { calc::lines(&st.own_texts.get_untracked()) };
    if texts.is_empty() {
        return Err("there are no texts to read it against: paste some, one per line, or load a text file".into());
    }
    if texts.len() > calc::MAX_TEXTS {
        return Err(format!("{} texts is more than the {} one reading takes: use fewer", texts.len(), calc::MAX_TEXTS));
    }
    let id = ctx.fresh_id();
    st.expanded.set(None);
    st.hover.set(None);
    st.projection.set(Some(Projection {
        id,
        label: target.label.clone(),
        layer,
        site: target.site,
        bos: target.bos,
        texts: texts.clone(),
        corpus,
        state: RunState::Running,
        done: 0,
        total: texts.len(),
        stopped: false,
        result: None,
        error: None,
    }));
    client::send(ctx, &ToWorker::Project { run_id: id, vector: probe, layer, site: target.site, texts, bos: target.bos }, &[]);
    Ok(())
}

/// Asks what steering changed along steered completion `index` of `run`.
pub fn open_changes(ctx: Ctx, run: u64, index: usize) {
    let st = ctx.inspect;
    if st.changes.with_untracked(|c| c.as_ref().is_some_and(|c| c.run == run && c.index == index)) {
        st.changes.set(None);
        return;
    }
    let Some((recipe, completion)) = ctx.runs.with_untracked(|rs| {
        rs.iter().find(|r| r.id == run).map(|r| (r.recipe.clone(), r.generation.steered.get(index).map(|c| c.tokens.clone())))
    }) else {
        return;
    };
    let id = ctx.fresh_id();
    st.change_at.set(None);
    let error = ready(ctx).err();
    st.changes.set(Some(Changes {
        id,
        run,
        index,
        state: if error.is_some() { RunState::Error } else { RunState::Running },
        positions: Vec::new(),
        error: error.clone(),
    }));
    if error.is_none() {
        client::send(ctx, &ToWorker::Changes { id, recipe, completion: completion.unwrap_or_default(), top: 8 }, &[]);
    }
}

/// Reads the prompt of `recipe` layer by layer.
fn read_lens(ctx: Ctx, recipe: Recipe, run: Option<u64>) -> Result<(), String> {
    ready(ctx)?;
    let id = ctx.fresh_id();
    ctx.inspect.lens.set(Some(Lens {
        id,
        run,
        state: RunState::Running,
        tokens: Vec::new(),
        layers: Vec::new(),
        steering: Vec::new(),
        error: None,
    }));
    client::send(ctx, &ToWorker::Lens { id, recipe, k: 5 }, &[]);
    Ok(())
}

/// The worker's answers for this area; false when the message is not one of them.
pub fn on_message(ctx: Ctx, msg: &FromWorker) -> bool {
    let st = ctx.inspect;
    let projection = |run_id: u64, f: &mut dyn FnMut(&mut Projection)| {
        st.projection.update(|p| {
            if let Some(p) = p.as_mut().filter(|p| p.id == run_id) {
                f(p);
            }
        })
    };
    match msg {
        FromWorker::ProjectProgress { run_id, done, total } => projection(*run_id, &mut |p| {
            p.done = *done;
            p.total = *total;
        }),
        FromWorker::ProjectDone { run_id, result } => projection(*run_id, &mut |p| {
            p.state = RunState::Done;
            p.stopped = result.is_none();
            p.result = result.clone();
        }),
        FromWorker::ProjectFailed { run_id, error } => projection(*run_id, &mut |p| {
            p.state = RunState::Error;
            p.error = Some(error.message.clone());
        }),
        FromWorker::Changes { id, positions } => st.changes.update(|c| {
            if let Some(c) = c.as_mut().filter(|c| c.id == *id) {
                c.state = RunState::Done;
                c.positions = positions.clone();
            }
        }),
        FromWorker::ChangesFailed { id, error } => st.changes.update(|c| {
            if let Some(c) = c.as_mut().filter(|c| c.id == *id) {
                c.state = RunState::Error;
                c.error = Some(error.message.clone());
            }
        }),
        FromWorker::Lens { id, tokens, layers, steering } => st.lens.update(|l| {
            if let Some(l) = l.as_mut().filter(|l| l.id == *id) {
                l.state = RunState::Done;
                l.tokens = tokens.clone();
                l.layers = layers.clone();
                l.steering = steering.clone();
            }
        }),
        FromWorker::LensFailed { id, error } => st.lens.update(|l| {
            if let Some(l) = l.as_mut().filter(|l| l.id == *id) {
                l.state = RunState::Error;
                l.error = Some(error.message.clone());
            }
        }),
        _ => return false,
    }
    true
}

/// The worker died: whatever of this area was running failed with it.
pub fn fail_running(ctx: Ctx, message: &str) {
    let st = ctx.inspect;
    st.projection.update(|p| {
        if let Some(p) = p.as_mut().filter(|p| p.state == RunState::Running) {
            p.state = RunState::Error;
            p.error = Some(message.to_string());
        }
    });
    st.changes.update(|c| {
        if let Some(c) = c.as_mut().filter(|c| c.state == RunState::Running) {
            c.state = RunState::Error;
            c.error = Some(message.to_string());
        }
    });
    st.lens.update(|l| {
        if let Some(l) = l.as_mut().filter(|l| l.state == RunState::Running) {
            l.state = RunState::Error;
            l.error = Some(message.to_string());
        }
    });
}

/// A token as shown: spaces visible at its edges, newlines as ⏎.
fn shown_token(t: &str) -> String {
    t.replace('\n', "⏎")
}

/// The heatmap colour of a value: red above 0, blue below, as strong as |x| / scale.
fn heat(x: f32, scale: f32) -> String {
    let a = (x.abs() / scale).clamp(0.0, 1.0) * 0.85;
    if x >= 0.0 {
        format!("background: rgba(214, 39, 40, {a:.3})")
    } else {
        format!("background: rgba(31, 119, 180, {a:.3})")
    }
}

/// The area.
#[component]
pub fn InspectPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.inspect;
    view! {
        <details class="card inspect" id="area-inspect" data-testid="inspect-panel" prop:open=move || st.open.get()
            on:toggle=move |ev| st.open.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
            <summary><h2>"Inspect: what a vector reads, where the prompt sits"</h2></summary>
            <p class="note">
                "Read a vector against text: every token's activation at the vector's layer is projected onto it (x · v, or the cosine), "
                "so the passages where its direction is present light up. Open it from "
                <strong>"Inspect"</strong>" on a library vector (5 · Vectors) or "<strong>"Inspect the steering"</strong>" under a run's completions."
            </p>
            <TargetRow/>
            <ProjectionResults/>
            <LensView/>
        </details>
    }
}

/// The vector, its layer, the texts and the measure, with Read / Stop and the progress bar.
#[component]
fn TargetRow() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.inspect;
    let n_corpus = calc::corpus().len();
    let running = move || st.projecting();
    let can_run = move || st.target.with(Option::is_some) && ctx.model_state.get() == super::ModelState::Ready && !ctx.busy();
    let on_run = move |_| {
        if let Err(e) = project(ctx) {
            st.note.set(Some(format!("Cannot read it now: {e}.")));
        } else {
            st.note.set(None);
        }
    };
    let on_file = move |ev: web_sys::Event| {
        let Some(file) = files::picked_file(&ev) else { return };
        wasm_bindgen_futures::spawn_local(async move {
            match files::read_bytes(&file, 4 << 20, "texts").await {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => {
                        let ps = calc::passages(&text, 600);
                        st.own_texts.set(ps.join("\n"));
                        st.own.set(true);
                        st.note.set(Some(format!("{}: {} passages.", file.name(), ps.len())));
                    }
                    Err(_) => st.note.set(Some(format!("{} is not UTF-8 text: save it as UTF-8 and load it again.", file.name()))),
                },
                Err(e) => st.note.set(Some(format!("{e}."))),
            }
        });
    };
    let status = move || {
        st.projection.with(|p| {
            let p = p.as_ref()?;
            Some(match p.state {
                RunState::Running => format!("reading {} of {} texts…", p.done, p.total),
                RunState::Done if p.stopped => "stopped".to_string(),
                RunState::Done => "done".to_string(),
                RunState::Error => format!("failed: {}", p.error.clone().unwrap_or_default()),
                RunState::Idle => String::new(),
            })
        })
    };
    view! {
        {move || match st.target.get() {
            None => view! {
                <p class="placeholder" data-testid="inspect-empty">"No vector picked yet: press “Inspect” on a library vector, or “Inspect the steering” under a run's completions."</p>
            }.into_any(),
            Some(t) => {
                let layers: Vec<usize> = t.choices.iter().map(|c| c.0).collect();
                view! {
                    <p class="inspect-target" data-testid="inspect-target">
                        {format!("Reading {} at {} ", t.label, t.site.as_str())}
                        <label>"layer "
                            <select data-testid="inspect-layer" on:change=move |ev| {
                                if let Ok(l) = event_target_value(&ev).parse() { st.layer.set(l) }
                            }>
                                {layers.into_iter().map(|l| view! {
                                    <option value=l.to_string() selected=move || st.layer.get() == l>{l.to_string()}</option>
                                }).collect_view()}
                            </select>
                        </label>
                    </p>
                }.into_any()
            }
        }}
        <div class="inspect-settings">
            <fieldset>
                <legend>"Texts"</legend>
                <label class="check"><input type="radio" name="inspect-texts" data-testid="inspect-corpus" prop:checked=move || !st.own.get()
                    on:change=move |_| st.own.set(false)/>{format!("the built-in corpus ({n_corpus} passages)")}</label>
                <label class="check"><input type="radio" name="inspect-texts" data-testid="inspect-own" prop:checked=move || st.own.get()
                    on:change=move |_| st.own.set(true)/>"my texts"</label>
            </fieldset>
            <label>"Measure "
                <select data-testid="inspect-by" on:change=move |ev| st.by.set(if event_target_value(&ev) == "cosine" { Measure::Cosine } else { Measure::Dot })>
                    <option value="dot" selected=move || st.by.get() == Measure::Dot>"x · v (dot product)"</option>
                    <option value="cosine" selected=move || st.by.get() == Measure::Cosine>"cosine"</option>
                </select>
            </label>
        </div>
        {move || st.own.get().then(|| view! {
            <div class="inspect-own">
                <textarea data-testid="inspect-texts" rows="5" aria-label="texts to read the vector against, one per line"
                    placeholder="One text per line." prop:value=move || st.own_texts.get()
                    on:input=move |ev| st.own_texts.set(event_target_value(&ev))></textarea>
                <label class="file-pick">"or load a plain-text file (split into passages at blank lines): "
                    <input type="file" accept=".txt,text/plain" data-testid="inspect-file" on:change=on_file/></label>
            </div>
        })}
        <div class="buttons">
            <button class="primary" data-testid="inspect-run" disabled=move || !can_run() on:click=on_run>"Read it"</button>
            <button data-testid="inspect-stop" disabled=move || !running() on:click=move |_| client::send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
            <span class="run-status" data-testid="inspect-status">{status}</span>
        </div>
        {move || st.note.get().map(|n| view! { <p class="invalid" data-testid="inspect-note">{n}</p> })}
        {move || st.projection.with(|p| p.as_ref().filter(|p| p.state == RunState::Running).map(|p| view! {
            <progress data-testid="inspect-progress" max=p.total value=p.done></progress>
        }))}
    }
}

/// A run of tokens as a heatmap; hovering one shows its values.
fn heat_tokens(
    ti: usize,
    from: usize,
    to: usize,
    p: &crate::protocol::ProjectedText,
    by: Measure,
    scale: f32,
    peak: Option<usize>,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.inspect;
    let vals = calc::values(p, by).to_vec();
    (from..to)
        .map(|k| {
            let x = vals[k];
            let title = format!("{:?}: x · v {:.4}, cosine {:.4}", p.tokens[k], p.dot[k], p.cosine[k]);
            view! {
                <span class="heat" class:peak=peak == Some(k) data-testid="inspect-token" data-value=format!("{x}") style=heat(x, scale) title=title
                    on:mouseenter=move |_| st.hover.set(Some((ti, k)))>{shown_token(&p.tokens[k])}</span>
            }
        })
        .collect_view()
}

/// The projection's results: summary, vocabulary beside max-activating tokens, histogram,
/// top passages, exports.
#[component]
fn ProjectionResults() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.inspect;
    move || {
        let p = st.projection.get()?;
        let r = p.result.clone()?;
        let by = st.by.get();
        let scale = calc::scale(&r, by);
        let n_tokens: usize = r.texts.iter().map(|t| t.ids.len()).sum();
        let top = calc::top_texts(&r, by, 20);
        let best = top.first().map(|&i| (i, calc::summary(&r.texts[i], by)));
        let what = if by == Measure::Dot { "x · v" } else { "cosine" };
        let summary_line = format!(
            "{} at layer {} ({}), ‖v‖ = {:.3}, over {} {} ({} tokens){}{}.",
            p.label,
            p.layer,
            p.site.as_str(),
            r.vector_norm,
            r.texts.len(),
            if p.corpus { "passages of the built-in corpus" } else { "texts" },
            n_tokens,
            best.map(|(i, (m, _, _))| format!("; the largest {what} is {m:.3}, in text {}", i + 1)).unwrap_or_default(),
            if r.cut > 0 { format!("; {} texts were cut to the model's context", r.cut) } else { String::new() },
        );
        let vocab = |es: &[VocabEntryView]| {
            es.iter()
                .map(|e| view! { <li title=format!("token id {}, score {:+.3}", e.id, e.score)><code>{e.token.replace(' ', "␣").replace('\n', "⏎")}</code></li> })
                .collect_view()
        };
        let max_toks = calc::max_tokens(&r, by, 10)
            .into_iter()
            .map(|(id, t, x, i)| {
                view! { <li title=format!("token id {id}: {what} {x:.4}, in text {}", i + 1)><code>{t.replace(' ', "␣").replace('\n', "⏎")}</code>{format!(" {x:.3}")}</li> }
            })
            .collect_view();
        let hist = Histogram(calc::histogram(&r, by, 40), what);
        let rs = StoredValue::new(r.clone());
        let rows = top
            .iter()
            .enumerate()
            .map(|(rank, &i)| {
                let t = &r.texts[i];
                let (max, at, mean) = calc::summary(t, by);
                let (from, to) = calc::window(at, t.ids.len(), 10);
                let expanded = move || st.expanded.get() == Some(i);
                view! {
                    <li class="inspect-passage" data-testid="inspect-passage" data-index=i.to_string() data-max=format!("{max}")>
                        <button class="link passage-head" aria-expanded=move || expanded().to_string()
                            on:click=move |_| st.expanded.update(|e| *e = if *e == Some(i) { None } else { Some(i) })>
                            {format!("{}. text {} · max {max:.3} · mean {mean:.3}", rank + 1, i + 1)}
                        </button>
                        <div class="snippet">
                            <span class="before"><span class="inner">{if from > 0 { "…" } else { "" }}{heat_tokens(i, from, at, t, by, scale, None)}</span></span>
                            <span class="at">{heat_tokens(i, at, at + 1, t, by, scale, Some(at))}</span>
                            <span class="after">{heat_tokens(i, at + 1, to, t, by, scale, None)}{if to < t.ids.len() { "…" } else { "" }}</span>
                        </div>
                        {move || expanded().then(|| rs.with_value(|r| {
                            let t = &r.texts[i];
                            view! { <p class="whole" data-testid="inspect-whole">{heat_tokens(i, 0, t.ids.len(), t, by, scale, Some(at))}</p> }
                        }))}
                    </li>
                }
            })
            .collect_view();
        let hover = move || {
            let (ti, k) = st.hover.get()?;
            rs.with_value(|r| {
                let t = r.texts.get(ti)?;
                Some(format!(
                    "Token {:?} (id {}), text {} position {}: x · v = {:.4}, cosine = {:.4}",
                    t.tokens.get(k)?,
                    t.ids.get(k)?,
                    ti + 1,
                    k,
                    t.dot.get(k)?,
                    t.cosine.get(k)?
                ))
            })
        };
        let label = p.label.clone();
        let (layer, site, bos, texts) = (p.layer, p.site, p.bos, StoredValue::new(p.texts.clone()));
        let stem = format!("inspect-L{layer}");
        let stem2 = stem.clone();
        let csv = move |_| {
            let data = rs.with_value(calc::to_csv);
            if let Err(e) = files::download(data.as_bytes(), "text/csv", &format!("{stem}.csv")) {
                st.note.set(Some(e));
            }
        };
        let json = move |_| {
            let data = rs.with_value(|r| {
                texts.with_value(|t| calc::to_json(r, t, &calc::ExportMeta { name: &label, layer, site: site.as_str(), by, bos, top: 20 }))
            });
            if let Err(e) = files::download(data.as_bytes(), "application/json", &format!("{stem2}.json")) {
                st.note.set(Some(e));
            }
        };
        Some(view! {
            <div class="inspect-results" data-testid="inspect-results">
                <p data-testid="inspect-summary">{summary_line}</p>
                <div class="buttons">
                    <button class="small" data-testid="inspect-csv" on:click=csv>"Export CSV"</button>
                    <button class="small" data-testid="inspect-json" on:click=json>"Export JSON"</button>
                </div>
                <div class="inspect-compare" data-testid="inspect-compare">
                    <div>
                        <h4>"Its decoded vocabulary"</h4>
                        <p class="note">"The tokens whose unembedding rows point most along v (and against it)."</p>
                        <ol data-testid="inspect-vocab-top">{vocab(&r.top)}</ol>
                        <p class="cap">"against it"</p>
                        <ol data-testid="inspect-vocab-bottom">{vocab(&r.bottom)}</ol>
                    </div>
                    <div>
                        <h4>"Its max-activating tokens"</h4>
                        <p class="note">{format!("The tokens of these texts with the largest {what}, each at its best.")}</p>
                        <ol data-testid="inspect-max-tokens">{max_toks}</ol>
                    </div>
                </div>
                {hist}
                <p class="inspect-hover" data-testid="inspect-hover" aria-live="polite">
                    {move || hover().unwrap_or_else(|| "Hover a token for its values. Red: along v; blue: against it.".into())}
                </p>
                <h4>{format!("The {} texts with the largest {what}, centred on their peak (click one to see it whole)", top.len())}</h4>
                <ol class="inspect-top" data-testid="inspect-top">{rows}</ol>
            </div>
        })
    }
}

/// A histogram of every token's value as an SVG bar chart.
#[allow(non_snake_case)]
fn Histogram(bins: Vec<(f32, f32, usize)>, what: &'static str) -> impl IntoView {
    let (w, h, left, bottom) = (640.0, 150.0, 44.0, 24.0);
    let max = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    let bw = (w - left - 8.0) / bins.len().max(1) as f64;
    let bars = bins
        .iter()
        .enumerate()
        .map(|(i, &(lo, hi, c))| {
            let bh = (h - bottom - 8.0) * c as f64 / max;
            let color = if hi <= 0.0 {
                "#1f77b4"
            } else if lo >= 0.0 {
                "#d62728"
            } else {
                "#999"
            };
            view! {
                <rect x=left + i as f64 * bw y=h - bottom - bh width=(bw - 1.0).max(1.0) height=bh fill=color>
                    <title>{format!("{lo:.3} to {hi:.3}: {c} tokens")}</title>
                </rect>
            }
        })
        .collect_view();
    let (lo, hi) = (bins.first().map_or(0.0, |b| b.0), bins.last().map_or(0.0, |b| b.1));
    view! {
        <figure class="inspect-hist" data-testid="inspect-histogram">
            <div class="chart-scroll" tabindex="0" role="region" aria-label="histogram of every token's value">
                <svg viewBox=format!("0 0 {w} {h}") role="img" aria-label=format!("histogram of {what} over every token, {lo:.3} to {hi:.3}")>
                    {bars}
                    <line x1=left y1=h - bottom x2=w - 8.0 y2=h - bottom stroke="#666"/>
                    <text class="tick" x=left y=h - 6.0>{format!("{lo:.2}")}</text>
                    <text class="tick" x=w - 8.0 y=h - 6.0 text-anchor="end">{format!("{hi:.2}")}</text>
                    <text class="tick" x=left - 4.0 y="16" text-anchor="end">{format!("{}", max as usize)}</text>
                </svg>
            </div>
            <figcaption>{format!("How often each value of {what} occurs, over every token of the texts.")}</figcaption>
        </figure>
    }
}

/// The prompt, layer by layer: norms and the logit lens.
#[component]
fn LensView() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.inspect;
    let on_read = move |_| {
        let (run, from_target) = st.target.with_untracked(|t| t.as_ref().map_or((None, None), |t| (t.run, t.recipe.clone())));
        let run = run.or_else(|| if from_target.is_none() { ctx.shown_run.get_untracked() } else { None });
        let recipe = from_target
            .or_else(|| run.and_then(|id| ctx.runs.with_untracked(|rs| rs.iter().find(|r| r.id == id).map(|r| r.recipe.clone()))));
        let recipe = match recipe {
            Some(r) => Ok(r),
            None => {
                let cfg = ctx.config();
                ctx.form.with_untracked(|f| f.to_recipe(cfg.as_ref())).map_err(|e| e.join("; "))
            }
        };
        if let Err(e) = recipe.and_then(|r| read_lens(ctx, r, run)) {
            st.note.set(Some(format!("Cannot read the prompt now: {e}.")));
        }
    };
    let can = move || ctx.model_state.get() == super::ModelState::Ready && !ctx.busy();
    let body = move || {
        let l = st.lens.get()?;
        Some(match l.state {
            RunState::Running | RunState::Idle => view! { <p class="note">"Reading the prompt…"</p> }.into_any(),
            RunState::Error => {
                view! { <p class="invalid" data-testid="lens-error">{format!("The reading failed: {}", l.error.unwrap_or_default())}</p> }
                    .into_any()
            }
            RunState::Done => lens_done(ctx, l).into_any(),
        })
    };
    view! {
        <section class="lens" data-testid="lens" data-state=move || st.lens.with(|l| l.as_ref().map_or("idle", |l| l.state.as_str()))>
            <h3>"Where the prompt sits, layer by layer"</h3>
            <p class="note">"For the prompt of the vector's run (or the shown run's, or the editor's): the size of the residual stream at each layer beside the steering tensor's and the library vectors', so you can tell whether a coefficient is big at that layer; and the logit lens (each layer's last position through the final norm and the unembedding), unsteered and steered. A layer's row is the stream entering that layer's block, before the steering added there."</p>
            <div class="buttons">
                <button data-testid="lens-run" disabled=move || !can() on:click=on_read>"Read the prompt"</button>
            </div>
            {body}
        </section>
    }
}

fn lens_done(ctx: Ctx, l: Lens) -> impl IntoView {
    let n = l.layers.len().saturating_sub(1);
    let medians: Vec<f64> = l.layers[..n].iter().map(|x| typical_norm(&x.norms)).collect();
    let steered: Vec<f64> = l.layers[..n].iter().map(|x| typical_norm(&x.steered_norms)).collect();
    let peaks: Vec<(usize, f64)> = l.steering.iter().map(|s| (s.layer, s.norms.iter().copied().fold(0.0, f64::max))).collect();
    let library: Vec<(String, usize, f64)> = ctx.library.with_untracked(|lib| {
        lib.entries
            .iter()
            .filter(|s| s.entry.site == Site::ResidPre)
            .flat_map(|s| {
                s.entry
                    .layers
                    .iter()
                    .filter(|x| x.layer < n)
                    .map(|x| (s.entry.name.clone(), x.layer, tiller_core::library::norm(&x.vector)))
            })
            .collect()
    });
    let chart = norms_chart(&medians, &steered, &peaks, &library);
    let toks = |es: &[VocabEntryView]| es.iter().map(|e| e.token.replace(' ', "␣").replace('\n', "⏎")).collect::<Vec<_>>().join("  ");
    let rows = l
        .layers
        .iter()
        .map(|x| {
            let steer = l.steering.iter().find(|s| s.layer == x.layer);
            let name = if x.layer == n { "output".to_string() } else { x.layer.to_string() };
            let norm = if x.layer < n { format!("{:.2}", medians[x.layer]) } else { String::new() };
            let snorm = steer.map(|s| format!("{:.2}", s.norms.iter().copied().fold(0.0, f64::max))).unwrap_or_default();
            let changed = x.top.first().map(|e| e.id) != x.steered_top.first().map(|e| e.id);
            view! {
                <tr data-testid="lens-row" data-layer=x.layer.to_string() class:changed=changed>
                    <th scope="row">{name}</th>
                    <td class="num">{norm}</td>
                    <td><code>{toks(&x.top)}</code></td>
                    <td><code>{toks(&x.steered_top)}</code></td>
                    <td class="num">{snorm}</td>
                    <td><code>{steer.map(|s| toks(&s.top)).unwrap_or_default()}</code></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <p class="note" data-testid="lens-prompt">{format!("The prompt: {} tokens ({}).", l.tokens.len(), l.tokens.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(" "))}</p>
        {chart}
        <div class="table-scroll" tabindex="0" role="region" aria-label="the logit lens, layer by layer">
            <table class="lens-table" data-testid="lens-table">
                <thead><tr>
                    <th scope="col">"layer"</th><th scope="col">"‖resid‖ (median)"</th><th scope="col">"lens, unsteered"</th>
                    <th scope="col">"lens, steered"</th><th scope="col">"‖steering‖ (largest row)"</th><th scope="col">"the steering vector's lens"</th>
                </tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
        <p class="note">"Rows in bold: the steered model's top token differs from the unsteered one's."</p>
    }
}

/// The norms chart: the residual stream's median norm per layer (unsteered, steered), the
/// steering tensor's largest row at its layers, and each library vector at its layers.
fn norms_chart(medians: &[f64], steered: &[f64], peaks: &[(usize, f64)], library: &[(String, usize, f64)]) -> impl IntoView {
    let (w, h, left, right, top, bottom) = (640.0, 220.0, 56.0, 12.0, 12.0, 36.0);
    let n = medians.len().max(1);
    let ymax = medians
        .iter()
        .chain(steered)
        .copied()
        .chain(peaks.iter().map(|p| p.1))
        .chain(library.iter().map(|x| x.2))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = move |l: usize| left + (w - left - right) * if n > 1 { l as f64 / (n - 1) as f64 } else { 0.5 };
    let y = move |v: f64| h - bottom - (h - top - bottom) * v / ymax;
    let line = |vs: &[f64]| vs.iter().enumerate().map(|(l, &v)| format!("{:.1},{:.1}", x(l), y(v))).collect::<Vec<_>>().join(" ");
    let dots = |pts: Vec<(usize, f64, String)>, color: &'static str, testid: &'static str| {
        pts.into_iter()
            .map(|(l, v, tip)| view! { <circle data-testid=testid cx=x(l) cy=y(v) r="4.5" fill=color><title>{tip}</title></circle> })
            .collect_view()
    };
    let ticks = chart_ticks(ymax);
    view! {
        <figure class="lens-chart" data-testid="lens-chart">
            <div class="chart-scroll" tabindex="0" role="region" aria-label="norms by layer">
                <svg viewBox=format!("0 0 {w} {h}") role="img" aria-label="the residual stream's norm at each layer, with the steering tensor's and the library vectors'">
                    {ticks.into_iter().map(|t| view! {
                        <line x1=left y1=y(t) x2=w - right y2=y(t) stroke="#e3e3e3"/>
                        <text class="tick" x=left - 4.0 y=y(t) + 4.0 text-anchor="end">{crate::chart::value_text(t)}</text>
                    }).collect_view()}
                    {(0..n).map(|l| view! { <text class="tick" x=x(l) y=h - bottom + 16.0 text-anchor="middle">{l.to_string()}</text> }).collect_view()}
                    <text class="axis-label" x=(left + w - right) / 2.0 y=h - 4.0 text-anchor="middle">"layer"</text>
                    <polyline points=line(medians) fill="none" stroke="#555" stroke-width="2"/>
                    <polyline points=line(steered) fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="5 4"/>
                    {dots(peaks.iter().map(|&(l, v)| (l, v, format!("steering tensor at layer {l}: largest row {v:.3}"))).collect(), "#ff7f0e", "lens-steering-dot")}
                    {dots(library.iter().map(|(name, l, v)| (*l, *v, format!("“{name}” at layer {l}: norm {v:.3}"))).collect(), "#2ca02c", "lens-library-dot")}
                </svg>
            </div>
            <figcaption>
                <span class="key"><span class="swatch" style="background:#555"></span>"‖resid_pre‖, median over the prompt (the first token left out)"</span>
                <span class="key"><span class="swatch" style="background:#d62728"></span>"the same, steered (dashed)"</span>
                <span class="key"><span class="swatch dot" style="background:#ff7f0e"></span>"the steering tensor's largest row"</span>
                <span class="key"><span class="swatch dot" style="background:#2ca02c"></span>"library vectors (resid_pre)"</span>
            </figcaption>
        </figure>
    }
}

fn chart_ticks(max: f64) -> Vec<f64> {
    let step = crate::chart::nice_step(max, 4);
    (0..).map(|i| i as f64 * step).take_while(|&t| t <= max).collect()
}

/// The strip under a steered completion: its tokens shaded by how far steering moved the
/// prediction (KL), each one clickable for the tokens that rose and fell there.
#[component]
pub fn ChangeStrip(run: u64, index: usize) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let st = ctx.inspect;
    move || {
        let c = st.changes.get().filter(|c| c.run == run && c.index == index)?;
        Some(match c.state {
            RunState::Running | RunState::Idle => view! { <div class="change-strip" data-testid="changes-strip" data-state="running"><p class="note">"Comparing the two models token by token…"</p></div> }.into_any(),
            RunState::Error => view! { <div class="change-strip" data-testid="changes-strip" data-state="error"><p class="invalid">{format!("Cannot show what changed: {}", c.error.unwrap_or_default())}</p></div> }.into_any(),
            RunState::Done => {
                let max_kl = c.positions.iter().map(|p| p.kl).fold(0.0f64, f64::max).max(1e-9);
                let positions = StoredValue::new(c.positions.clone());
                let tokens = c
                    .positions
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        let a = (p.kl / max_kl).clamp(0.0, 1.0) * 0.8;
                        let title = format!("KL {:.4} nats; p {:.3} (unsteered {:.3})", p.kl, p.token.p_steered, p.token.p_unsteered);
                        view! {
                            <button class="change-token" data-testid="change-token" data-kl=format!("{}", p.kl) aria-pressed=move || (st.change_at.get() == Some(k)).to_string()
                                style=format!("background: rgba(148, 103, 189, {a:.3})") title=title
                                on:click=move |_| st.change_at.update(|at| *at = if *at == Some(k) { None } else { Some(k) })>{shown_token(&p.token.text)}</button>
                        }
                    })
                    .collect_view();
                let detail = move || {
                    let k = st.change_at.get()?;
                    positions.with_value(|ps| {
                        let p = ps.get(k)?;
                        let list = |cs: &[crate::protocol::ChangeView]| {
                            cs.iter()
                                .map(|c| view! { <li><code>{shown_token(&c.text).replace(' ', "␣")}</code>{format!(" {:+.3} ({:.3} → {:.3})", c.p_steered - c.p_unsteered, c.p_unsteered, c.p_steered)}</li> })
                                .collect_view()
                        };
                        Some(view! {
                            <div class="change-detail" data-testid="change-detail">
                                <p>{format!("Token {} {:?}: the steered model gave it {:.3}, the unsteered {:.3}; KL(steered ‖ unsteered) = {:.4} nats.",
                                    k + 1, p.token.text, p.token.p_steered, p.token.p_unsteered, p.kl)}</p>
                                <div class="change-lists">
                                    <div><p class="cap">"rose most"</p><ol data-testid="change-rose">{list(&p.rose)}</ol></div>
                                    <div><p class="cap">"fell most"</p><ol data-testid="change-fell">{list(&p.fell)}</ol></div>
                                </div>
                            </div>
                        })
                    })
                };
                view! {
                    <div class="change-strip" data-testid="changes-strip" data-state="done">
                        <p class="note">"Each token of the steered completion, shaded by how far steering moved the model's prediction of it (KL between the steered and unsteered next-token distributions, both given the same text before it). Click one for the tokens that rose and fell most."</p>
                        <div class="change-tokens">{tokens}</div>
                        {detail}
                    </div>
                }
                .into_any()
            }
        })
    }
}
