//! The sweep panel: the ActAdd post's wedding study for any recipe. The editor's terms are
//! moved to each layer of a range and scaled by each coefficient of a list; for every
//! evaluation set the worker reports the perplexity ratio and the KL divergence, drawn here
//! as an inline SVG line chart (hover a point for its values) and offered as CSV.

use leptos::prelude::*;
use tiller_core::sweep::SweepRow;
use tiller_core::Positions;

use super::client::{self, send};
use super::fields::NumInput;
use super::{Ctx, ModelState, RunState, SweepRun};
use crate::chart::{self, ChartPoint, SweepChart, HEIGHT, MARGINS, WIDTH};
use crate::numbers::NumKind;
use crate::protocol::ToWorker;
use crate::sweep::{Metric, XAxis};

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
    let clicked_errors = RwSignal::new(Vec::<String>::new());
    Effect::new(move |_| {
        ctx.sweep_form.track();
        ctx.form.track();
        ctx.model_state.track();
        clicked_errors.set(Vec::new());
    });
    let live_errors = Memo::new(move |_| {
        let depth = ctx.depth();
        ctx.form.with(|editor| ctx.sweep_form.with(|f| f.to_spec(editor, depth).err())).unwrap_or_default()
    });
    let errors = move || {
        let mut e = clicked_errors.get();
        e.retain(|m| !live_errors.with(|l| l.contains(m)));
        e.extend(live_errors.get());
        if let Some(failed) = ctx.sweep.with(|s| s.as_ref().and_then(|s| s.error.clone())) {
            e.push(format!("The sweep failed: {failed}"));
        }
        e
    };
    let running = move || ctx.sweeping();
    let can_run = move || ctx.model_state.get() == ModelState::Ready && !ctx.busy();
    let on_run = move |_| {
        clicked_errors.set(Vec::new());
        if let Err(e) = client::run_sweep(ctx) {
            clicked_errors.set(e);
        }
    };
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
        <details class="card sweep" data-testid="sweep-panel" prop:open=move || ctx.sweep_open.get()
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
            <div class="validation">
                {move || errors().into_iter().map(|e| view! { <p class="invalid" data-testid="sweep-error">{e}</p> }).collect_view()}
            </div>
            <div class="buttons">
                <button class="primary" data-testid="sweep-run" disabled=move || !can_run() on:click=on_run>"Run sweep"</button>
                <button data-testid="sweep-stop" disabled=move || !running() on:click=move |_| send(ctx, &ToWorker::Stop, &[])>"Stop"</button>
                <button class="small" title="Put the post's wedding vector in the editor: +1 × \" weddings\" − 1 × \"\" (an empty text is padded with spaces)"
                    disabled=running
                    on:click=move |_| {
                        ctx.preset.set(String::new());
                        ctx.form.update(|f| {
                            f.set_terms(&[
                                tiller_core::Term { layer: 0, coeff: 1.0, text: " weddings".into() },
                                tiller_core::Term { layer: 0, coeff: -1.0, text: String::new() },
                            ]);
                        });
                    }>"Use the post's wedding vector"</button>
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
        let Some((rows, source)) = ctx.sweep.with_untracked(|s| s.as_ref().map(|s| (s.rows.clone(), s.source.label()))) else {
            return;
        };
        let name = source.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("-");
        if let Err(e) = download_csv(&rows, &format!("tiller-sweep-{name}.csv")) {
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
            Some(c) => view! { <ChartView chart=c/> }.into_any(),
            None => view! { <p class="placeholder">"The chart appears here as the sweep's layers finish: one line per set of texts."</p> }.into_any(),
        }}
        <p class="note">
            "Reading it: the dashed line is no change. In the post (GPT-2-XL, +1 × \" weddings\" − 1 × \"\"), the wedding texts' perplexity dropped (ratio below 1) at most layers while the unrelated texts barely moved: the vector adds \"weddings\" without making the model worse at everything else. "
            "A tiny random model shows noise, not this."
        </p>
    }
}

/// The chart as inline SVG: axes with ticks and labels, the "no change" line, one line per
/// set with a legend, and a tooltip with the values of the hovered point.
#[component]
fn ChartView(
    /// The laid-out chart.
    chart: SweepChart,
) -> impl IntoView {
    let hover = RwSignal::new(None::<usize>);
    // The "no change" label sits between the last two x ticks, where no point is drawn.
    let ref_label_x = match chart.x_ticks.as_slice() {
        [.., (a, _), (b, _)] => (a + b) / 2.0,
        _ => (MARGINS.left + WIDTH - MARGINS.right) / 2.0,
    };
    let (left, right, top, bottom) = (MARGINS.left, WIDTH - MARGINS.right, MARGINS.top, HEIGHT - MARGINS.bottom);
    let points: Vec<ChartPoint> = chart.series.iter().flat_map(|s| s.points.iter().cloned()).collect();
    let n = points.len();
    let tip_points = StoredValue::new(points.clone());
    // The legend: a colour per set, then (every value drawn) a line style per value, in grey;
    // the styles go under the chart instead when they do not fit on the line.
    let mut sets: Vec<(String, &'static str)> = Vec::new();
    for s in &chart.series {
        // A line named "related × 2" belongs to the set "related".
        let name = chart.styles.iter().find_map(|(_, v)| s.name.strip_suffix(&format!(" {v}"))).unwrap_or(&s.name).to_string();
        if !sets.iter().any(|(n, _)| *n == name) {
            sets.push((name, s.color));
        }
    }
    let item_width = |label: &str| 34.0 + 7.2 * label.chars().count() as f64;
    let sets_width: f64 = sets.iter().map(|(n, _)| item_width(n)).sum();
    let styles_width: f64 = 16.0 + chart.styles.iter().map(|(_, l)| item_width(l) + 8.0).sum::<f64>();
    let styles_in_svg = sets_width + styles_width <= right - left;
    let mut legend_x = left;
    let mut legend = sets
        .iter()
        .map(|(name, color)| {
            let x = legend_x;
            legend_x += item_width(name);
            view! {
                <g class="legend-item">
                    <line x1=x y1="34" x2=x + 18.0 y2="34" stroke=*color stroke-width="2.5"/>
                    <circle cx=x + 9.0 cy="34" r="3.5" fill=*color/>
                    <text class="legend-text" x=x + 24.0 y="38">{name.clone()}</text>
                </g>
            }
            .into_any()
        })
        .collect::<Vec<_>>();
    if styles_in_svg {
        legend_x += 16.0;
        for (dash, label) in &chart.styles {
            let x = legend_x;
            legend_x += item_width(label) + 8.0;
            legend.push(
                view! {
                    <g class="legend-item legend-style">
                        <line x1=x y1="34" x2=x + 26.0 y2="34" stroke="#59606d" stroke-width="2.2" stroke-dasharray=*dash/>
                        <text class="legend-text" x=x + 31.0 y="38">{label.clone()}</text>
                    </g>
                }
                .into_any(),
            );
        }
    }
    let style_key = (!styles_in_svg && !chart.styles.is_empty()).then(|| {
        let items = chart
            .styles
            .iter()
            .map(|(dash, label)| {
                view! {
                    <span class="style-key-item">
                        <svg width="30" height="10" viewBox="0 0 30 10"><line x1="2" y1="5" x2="28" y2="5" stroke="#59606d" stroke-width="2.2" stroke-dasharray=*dash/></svg>
                        {label.clone()}
                    </span>
                }
            })
            .collect_view();
        view! { <p class="note style-key">"Line styles: " {items}</p> }
    });
    let y_ticks = chart
        .y_ticks
        .iter()
        .map(|(y, label)| {
            view! {
                <g>
                    <line class="grid" x1=left x2=right y1=*y y2=*y/>
                    <text class="tick" x=left - 6.0 y=y + 4.0 text-anchor="end">{label.clone()}</text>
                </g>
            }
        })
        .collect_view();
    let x_ticks = chart
        .x_ticks
        .iter()
        .map(|(x, label)| {
            view! {
                <g>
                    <line class="axis" x1=*x x2=*x y1=bottom y2=bottom + 5.0/>
                    <text class="tick" x=*x y=bottom + 18.0 text-anchor="middle">{label.clone()}</text>
                </g>
            }
        })
        .collect_view();
    let lines = chart
        .series
        .iter()
        .map(|s| view! { <path class="line" d=s.path.clone() stroke=s.color stroke-dasharray=s.dash fill="none"><title>{s.name.clone()}</title></path> })
        .collect_view();
    let dots = points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let tip = format!("{}: {}", p.set, tip_lines(&p).join(", "));
            view! {
                <circle data-testid="sweep-point" class="pt" cx=p.x cy=p.y r="4.5" fill=p.color
                    data-set=p.set.clone() data-layer=p.layer.to_string() data-coeff=format!("{}", p.coeff) data-value=format!("{}", p.value)
                    on:mouseenter=move |_| hover.set(Some(i)) on:mouseleave=move |_| hover.set(None)>
                    <title>{tip}</title>
                </circle>
            }
        })
        .collect_view();
    let tooltip = move || {
        let i = hover.get()?;
        let p = tip_points.with_value(|ps| ps.get(i).cloned())?;
        let lines = tip_lines(&p);
        let head = p.set.clone();
        let chars = lines.iter().map(|l| l.chars().count()).chain([head.chars().count()]).max().unwrap_or(10);
        let (w, h) = (chars as f64 * 6.8 + 18.0, 18.0 + 15.0 * lines.len() as f64 + 6.0);
        let x = if p.x + 12.0 + w > WIDTH - 2.0 { p.x - 12.0 - w } else { p.x + 12.0 };
        let y = if p.y - h - 8.0 < 2.0 { p.y + 10.0 } else { p.y - h - 8.0 };
        Some(view! {
            <g data-testid="sweep-tooltip" class="tooltip" transform=format!("translate({x:.1} {y:.1})") pointer-events="none">
                <rect width=w height=h rx="5" ry="5"/>
                <circle cx="11" cy="13" r="4" fill=p.color/>
                <text class="tip-head" x="20" y="17">{head}</text>
                {lines.into_iter().enumerate().map(|(k, l)| view! { <text class="tip-text" x="9" y=32.0 + 15.0 * k as f64>{l}</text> }).collect_view()}
            </g>
        })
    };
    view! {
        <svg data-testid="sweep-chart" class="sweep-chart" viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img"
            aria-label=chart.title.clone() data-points=n.to_string() xmlns="http://www.w3.org/2000/svg">
            <rect class="bg" x="0" y="0" width=WIDTH height=HEIGHT/>
            <text class="chart-title" x=left y="16">{chart.title.clone()}</text>
            {legend}
            {y_ticks}
            {x_ticks}
            <line class="axis" x1=left x2=left y1=top y2=bottom/>
            <line class="axis" x1=left x2=right y1=bottom y2=bottom/>
            <line class="reference" x1=left x2=right y1=chart.reference.0 y2=chart.reference.0/>
            <text class="ref-label" x=ref_label_x y=chart.reference.0 - 5.0 text-anchor="middle">{chart.reference.1}</text>
            <text class="axis-label" x=(left + right) / 2.0 y=HEIGHT - 8.0 text-anchor="middle">{chart.x_label}</text>
            <text class="axis-label" transform=format!("translate(16 {}) rotate(-90)", (top + bottom) / 2.0) text-anchor="middle">{chart.y_label}</text>
            {lines}
            {dots}
            {tooltip}
        </svg>
        {style_key}
    }
}

/// What the tooltip says about a point, one line each.
fn tip_lines(p: &ChartPoint) -> Vec<String> {
    vec![
        format!("layer {} · coefficient × {}", p.layer, p.coeff),
        format!("perplexity ratio {}", chart::value_text(p.ppl_ratio)),
        format!("KL {} nats", chart::value_text(p.kl)),
    ]
}

/// Saves the rows as CSV (`tiller_core::sweep::to_csv`).
fn download_csv(rows: &[SweepRow], filename: &str) -> Result<(), String> {
    super::files::download(tiller_core::sweep::to_csv(rows).as_bytes(), "text/csv", filename)
}
