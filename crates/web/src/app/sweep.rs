//! The sweep panel: the ActAdd post's wedding study for any recipe. The editor's terms are
//! moved to each layer of a range and scaled by each coefficient of a list; for every
//! evaluation set the worker reports the perplexity ratio and the KL divergence, drawn here
//! as an inline SVG line chart (hover a point for its values) and offered as CSV.

use leptos::prelude::*;
use tiller_core::sweep::to_csv_with_terms;
use tiller_core::Positions;

use super::charts::ChartView;
use super::client::{self, send};
use super::fields::{ErrorList, NumInput, Pressed};
use super::{Ctx, ModelState, RunState, SweepRun};
use crate::chart;
use crate::numbers::NumKind;
use crate::protocol::ToWorker;
use crate::sweep::{Metric, XAxis};

/// Puts the ActAdd post's wedding vector in the editor: +1 × " weddings" − 1 × "" (the empty
/// text padded with spaces), no preset.
pub fn use_wedding_vector(ctx: Ctx) {
    ctx.preset.set(String::new());
    ctx.form.update(|f| {
        f.set_terms(&[
            tiller_core::Term { layer: 0, coeff: 1.0, text: " weddings".into(), head: None },
            tiller_core::Term { layer: 0, coeff: -1.0, text: String::new(), head: None },
        ]);
    });
}

/// The panel: settings, Run/Stop, progress, chart, CSV.
#[component]
pub fn SweepPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // A range covering every layer keeps covering every layer when the model changes.
    Effect::new(move |_| {
        let depth = ctx.depth();
        let old = ctx.sweep_depth.get_value();
        if old != depth {
            ctx.sweep_depth.set_value(depth);
            ctx.sweep_form.update(|f| f.follow_depth(old, depth));
        }
    });
    // Problems found on clicking Run sweep that the live check cannot see (no model, busy):
    // they go as soon as anything is edited.
    let pressed = Pressed::new(move || {
        ctx.sweep_form.track();
        ctx.form.track();
        ctx.model_state.track();
    });
    let live_errors = Memo::new(move |_| {
        let depth = ctx.depth();
        ctx.form.with(|editor| ctx.sweep_form.with(|f| f.to_spec(editor, depth).err())).unwrap_or_default()
    });
    let errors = Signal::derive(move || {
        let failed = ctx.sweep.with(|s| s.as_ref().and_then(|s| s.error.clone())).map(|f| format!("The sweep failed: {f}"));
        pressed.with_live(live_errors.get(), failed)
    });
    let running = move || ctx.sweeping();
    let can_run = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy();
    let on_run = move |_| pressed.press(|| client::run_sweep(ctx));
    let front_only_note = move || {
        (ctx.form.with(|f| f.positions) != Positions::Front).then(|| {
            view! { <p class="note warn">"The sweep always adds the vector the ActAdd way (once, at the first n positions of each text), whatever the editor's Positions setting says."</p> }
        })
    };
    let estimate = move || {
        let depth = ctx.depth();
        let spec = ctx.form.with(|editor| ctx.sweep_form.with(|f| f.to_spec(editor, depth).ok()))?;
        let texts: usize = spec.sets.iter().map(|s| s.texts.len()).sum();
        Some(format!(
            "{} layer{} × {} coefficient{} × {} text{}: {} steered passes, plus the unsteered ones.",
            spec.layers.len(),
            plural(spec.layers.len()),
            spec.coeffs.len(),
            plural(spec.coeffs.len()),
            texts,
            plural(texts),
            spec.layers.len() * spec.coeffs.len() * texts
        ))
    };
    view! {
        <details class="card sweep" id="area-sweep" data-testid="sweep-panel" prop:open=move || ctx.sweep_open.get()
            on:toggle=move |ev| ctx.sweep_open.set(event_target::<web_sys::HtmlDetailsElement>(&ev).open())>
            <summary><h2>"4 · Sweep: how strongly does the vector change other texts?"</h2></summary>
            <p class="note">
                "As in the ActAdd post's wedding study: the editor's steering terms are moved to each layer of the range and their coefficients multiplied by each number of the list (0 = unsteered, 1 = the recipe as written). "
                "For every set of texts the page compares the steered and unsteered model on those texts: the "
                <strong>"perplexity ratio"</strong>
                " exp(mean loss steered − mean loss unsteered) is 1 when nothing changes, above 1 when the steered model finds the texts less likely, below 1 when more likely; the "
                <strong>"KL divergence"</strong>
                " measures how far the next-token predictions move. The positions where the vector is added are left out of both."
            </p>
            {front_only_note}
            <SetsEditor/>
            <SweepSettingsRow/>
            <p class="note">{move || estimate().unwrap_or_default()}</p>
            <ErrorList testid="sweep-error" errors=errors/>
            <div class="buttons">
                <button class="primary" data-testid="sweep-run" disabled=move || !can_run() on:click=on_run>"Run sweep"</button>
                <button data-testid="sweep-stop" disabled=move || !running() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
                <button class="small" title="Put the post's wedding vector in the editor: +1 × \" weddings\" − 1 × \"\" (an empty text is padded with spaces)"
                    disabled=running
                    on:click=move |_| use_wedding_vector(ctx)>"Use the post's wedding vector"</button>
                <span class="run-status">{move || status(ctx)}</span>
            </div>
            <SweepProgressBar/>
            <SweepResults/>
        </details>
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The status line next to the buttons.
fn status(ctx: Ctx) -> String {
    let ready = ctx.model_state.get() == ModelState::Ready;
    ctx.sweep.with(|s| match s {
        None if !ready => "Load a model to run a sweep.".into(),
        None => "Ready to sweep.".into(),
        Some(s) => {
            let layers_done = layers_done(s);
            match s.state {
                RunState::Running => format!("Sweeping… {layers_done} of {} layers done.", s.spec.layers.len()),
                RunState::Done if s.stopped => format!("Stopped after {layers_done} of {} layers.", s.spec.layers.len()),
                RunState::Done => format!("Done: {} layers × {} coefficients.", s.spec.layers.len(), s.spec.coeffs.len()),
                RunState::Error => "The sweep failed (see above).".into(),
                RunState::Idle => String::new(),
            }
        }
    })
}

fn layers_done(s: &SweepRun) -> usize {
    let per_layer = (s.spec.coeffs.len() * s.spec.sets.len()).max(1);
    s.rows.len() / per_layer
}

/// The evaluation sets: a name and a textarea each, add and remove.
#[component]
fn SetsEditor() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let ids = move || ctx.sweep_form.with(|f| f.sets.iter().map(|s| s.id).collect::<Vec<_>>());
    view! {
        <fieldset class="sweep-sets">
            <legend>"Evaluation sets: a name, then one text per line"</legend>
            <div class="sweep-set-list">
                <For each=ids key=|id| *id children=move |id| view! { <SetView id=id/> }/>
            </div>
            <button class="small" data-testid="sweep-set-add" on:click=move |_| {
                ctx.sweep_form.update(|f| {
                    let name = format!("set {}", f.sets.len() + 1);
                    f.add_set(&name, "");
                });
            }>"+ Add set"</button>
        </fieldset>
    }
}

/// One evaluation set.
#[component]
fn SetView(
    /// The set's id in [`crate::sweep::SweepForm::sets`].
    id: u32,
) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let field = move |get: fn(&crate::sweep::SetRow) -> String| {
        move || ctx.sweep_form.with(|f| f.sets.iter().find(|s| s.id == id).map(get).unwrap_or_default())
    };
    let set = move |apply: fn(&mut crate::sweep::SetRow, String), value: String| {
        ctx.sweep_form.update(|f| {
            if let Some(s) = f.set_mut(id) {
                apply(s, value)
            }
        });
    };
    let color = move || {
        let i = ctx.sweep_form.with(|f| f.sets.iter().position(|s| s.id == id)).unwrap_or(0);
        format!("border-left-color: {}", chart::PALETTE[i % chart::PALETTE.len()])
    };
    let count = move || ctx.sweep_form.with(|f| f.sets.iter().find(|s| s.id == id).map(|s| s.lines().len()).unwrap_or(0));
    view! {
        <div class="sweep-set" data-testid="sweep-set" style=color>
            <div class="row">
                <input type="text" data-testid="sweep-set-name" placeholder="name, e.g. related" prop:value=field(|s| s.name.clone())
                    on:input=move |ev| set(|s, v| s.name = v, event_target_value(&ev))/>
                <span class="note">{move || format!("{} text{}", count(), plural(count()))}</span>
                <button class="small" data-testid="sweep-set-remove" title="Remove this set"
                    on:click=move |_| ctx.sweep_form.update(|f| f.sets.retain(|s| s.id != id))>"✕"</button>
            </div>
            <textarea data-testid="sweep-set-texts" rows="4" placeholder="one text per line"
                prop:value=field(|s| s.texts.clone())
                on:input=move |ev| set(|s, v| s.texts = v, event_target_value(&ev))></textarea>
        </div>
    }
}

/// Layer range and coefficient list.
#[component]
fn SweepSettingsRow() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let last = move || ctx.depth().saturating_sub(1);
    view! {
        <div class="sweep-settings">
            <label class="num" title="The first and last layer (inclusive) to move the terms to">
                <span>"layers"</span>
                <span class="range">
                    <NumInput testid="sweep-layer-from" label="the sweep's first layer"
                        value=Signal::derive(move || ctx.sweep_form.with(|f| f.layer_from.clone()))
                        set=move |v| ctx.sweep_form.update(|f| f.layer_from = v)
                        kind=Signal::derive(move || NumKind::whole(0, last() as u64))/>
                    " to "
                    <NumInput testid="sweep-layer-to" label="the sweep's last layer"
                        value=Signal::derive(move || ctx.sweep_form.with(|f| f.layer_to.clone()))
                        set=move |v| ctx.sweep_form.update(|f| f.layer_to = v)
                        kind=Signal::derive(move || NumKind::whole(0, last() as u64))/>
                </span>
            </label>
            <button class="small" title="Every layer of the model" on:click=move |_| ctx.sweep_form.update(|f| {
                f.layer_from = "0".into();
                f.layer_to = last().to_string();
            })>{move || format!("all (0 to {})", last())}</button>
            <label class="num coeffs" title="Multipliers of the terms' coefficients, comma-separated: 0 is the unsteered model, 1 the recipe as written">
                <span>"coefficients ×"</span>
                <input type="text" data-testid="sweep-coeffs" placeholder="0,1,2,4"
                    prop:value=move || ctx.sweep_form.with(|f| f.coeffs.clone())
                    on:input=move |ev| ctx.sweep_form.update(|f| f.coeffs = event_target_value(&ev))/>
            </label>
        </div>
    }
}

/// The progress of the sweep: steps done of the total.
#[component]
fn SweepProgressBar() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    move || {
        ctx.sweep.with(|s| {
            let s = s.as_ref()?;
            let pct = if s.total == 0 { 0.0 } else { 100.0 * s.done as f64 / s.total as f64 };
            let text = if s.total == 0 {
                "starting…".to_string()
            } else {
                format!("step {} of {} ({pct:.0} %) · {} of {} layers done", s.done, s.total, layers_done(s), s.spec.layers.len())
            };
            Some(view! {
                <div class="progress" data-testid="sweep-progress" data-done=s.done.to_string() data-total=s.total.to_string() data-state=s.state.as_str()>
                    <div class="bar"><div class="fill" style=format!("width: {pct:.1}%")></div></div>
                    <span class="progress-text">{text}</span>
                </div>
            })
        })
    }
}

/// Chart controls, the chart, how to read it, and the CSV download.
#[component]
fn SweepResults() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    // The picked coefficient (x = layer) or layer (x = coefficient), for one sweep and axis;
    // `None`: every one of them, a line per (set, value).
    let pick = RwSignal::new(None::<(u64, XAxis, Option<f64>)>);
    let x = move || ctx.sweep_form.with(|f| f.x);
    let metric = move || ctx.sweep_form.with(|f| f.metric);
    let current_pick = move || {
        let axis = x();
        ctx.sweep.with(|s| {
            let s = s.as_ref()?;
            match pick.get() {
                Some((id, a, v)) if id == s.id && a == axis => Some(v),
                _ => Some(chart::default_pick(&s.spec, &s.rows, axis)),
            }
        })
    };
    let data = Memo::new(move |_| {
        let (axis, metric, p) = (x(), metric(), current_pick()?);
        if p.is_none() && ctx.sweep.with(|s| s.as_ref().is_some_and(|s| s.spec.coeffs.is_empty() || s.spec.layers.is_empty())) {
            return None;
        }
        ctx.sweep.with(|s| {
            let s = s.as_ref().filter(|s| !s.rows.is_empty())?;
            Some(chart::sweep_chart(&s.spec, &s.rows, axis, metric, p))
        })
    });
    let pick_options = move || {
        let axis = x();
        ctx.sweep.with(|s| {
            let s = s.as_ref()?;
            let mut options = match axis {
                XAxis::Layer => s.spec.coeffs.iter().map(|&c| (Some(c as f64), format!("× {c}"))).collect::<Vec<_>>(),
                XAxis::Coeff => s.spec.layers.iter().map(|&l| (Some(l as f64), format!("layer {l}"))).collect(),
            };
            if options.len() > 1 {
                let all = match axis {
                    XAxis::Layer => "every coefficient (a line each)",
                    XAxis::Coeff => "every layer (a line each)",
                };
                options.push((None, all.to_string()));
            }
            Some(options)
        })
    };
    let has_rows = move || ctx.sweep.with(|s| s.as_ref().is_some_and(|s| !s.rows.is_empty()));
    let csv = move |_| {
        let Some((csv, source)) =
            ctx.sweep.with_untracked(|s| s.as_ref().map(|s| (to_csv_with_terms(&s.rows, &s.spec.terms), s.source.label())))
        else {
            return;
        };
        let name = source.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-");
        if let Err(e) = super::files::download(csv.as_bytes(), "text/csv", &format!("tiller-sweep-{name}.csv")) {
            ctx.show_error(crate::protocol::ErrorKind::Internal, format!("the CSV could not be saved: {e}"));
        }
    };
    view! {
        <div class="sweep-view">
            <label>"x axis "
                <select data-testid="sweep-x" on:change=move |ev| {
                    let v = XAxis::parse(&event_target_value(&ev)).unwrap_or_default();
                    ctx.sweep_form.update(|f| f.x = v);
                }>
                    <option value="layer" prop:selected=move || x() == XAxis::Layer>"injection layer"</option>
                    <option value="coeff" prop:selected=move || x() == XAxis::Coeff>"coefficient"</option>
                </select>
            </label>
            <label>{move || if x() == XAxis::Layer { "at coefficient " } else { "at layer " }}
                <select data-testid="sweep-pick" disabled=move || pick_options().is_none() on:change=move |ev| {
                    let value = event_target_value(&ev);
                    let v = if value == "all" {
                        None
                    } else {
                        let Ok(v) = value.parse::<f64>() else { return };
                        Some(v)
                    };
                    if let Some(id) = ctx.sweep.with_untracked(|s| s.as_ref().map(|s| s.id)) {
                        pick.set(Some((id, x(), v)));
                    }
                }>
                    {move || {
                        let chosen = current_pick();
                        pick_options().unwrap_or_default().into_iter().map(|(v, label)| {
                            let value = v.map_or_else(|| "all".to_string(), |v| v.to_string());
                            view! { <option value=value prop:selected=chosen == Some(v)>{label}</option> }
                        }).collect_view()
                    }}
                </select>
            </label>
            <label>"y axis "
                <select data-testid="sweep-metric" on:change=move |ev| {
                    let v = Metric::parse(&event_target_value(&ev)).unwrap_or_default();
                    ctx.sweep_form.update(|f| f.metric = v);
                }>
                    <option value="ppl_ratio" prop:selected=move || metric() == Metric::PplRatio>"perplexity ratio"</option>
                    <option value="kl" prop:selected=move || metric() == Metric::Kl>"KL divergence"</option>
                </select>
            </label>
            <button class="small" data-testid="sweep-csv" disabled=move || !has_rows() on:click=csv
                title="Every row of the sweep (all sets, layers and coefficients) as CSV">"Download CSV"</button>
        </div>
        {move || match data.get() {
            Some(c) => view! { <ChartView chart=c testid="sweep"/> }.into_any(),
            None => view! { <p class="placeholder">"The chart appears here as the sweep's layers finish: one line per set of texts."</p> }.into_any(),
        }}
        <p class="note">
            "Reading it: the dashed line is no change. In the post (GPT-2-XL, +1 × \" weddings\" − 1 × \"\"), the wedding texts' perplexity dropped (ratio below 1) at most layers while the unrelated texts barely moved: the vector adds \"weddings\" without making the model worse at everything else. "
            "A tiny random model shows noise, not this."
        </p>
    }
}
