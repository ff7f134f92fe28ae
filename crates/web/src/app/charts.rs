//! The charts' view: a laid-out [`SweepChart`] (see `crate::chart`) drawn as inline SVG, for
//! the sweep panel and the A/B evaluation.

use leptos::prelude::*;

use crate::chart::{ChartPoint, SweepChart, HEIGHT, MARGINS, WIDTH};

/// The chart as inline SVG: axes with ticks and labels, the "no change" line, one line per
/// set with a legend, and a tooltip with the values of the hovered point.
#[component]
pub fn ChartView(
    /// The laid-out chart.
    chart: SweepChart,
    /// The test ids' stem: `{testid}-chart`, `{testid}-point`, `{testid}-tooltip`.
    testid: &'static str,
) -> impl IntoView {
    let hover = RwSignal::new(None::<usize>);
    let pinned = RwSignal::new(None::<usize>);
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
            let tip = format!("{}: {}", p.set, p.tip.join(", "));
            // A finger-sized target around the dot; a tap (or click) pins the tooltip until the
            // next tap, as a phone has no hover.
            view! {
                <g class="pt-hit" on:mouseenter=move |_| hover.set(Some(i)) on:mouseleave=move |_| hover.set(None)
                    on:click=move |ev| { ev.stop_propagation(); pinned.update(|k| *k = if *k == Some(i) { None } else { Some(i) }); }>
                    <circle class="pt-area" cx=p.x cy=p.y r="14" fill="transparent"/>
                    <circle data-testid=format!("{testid}-point") class="pt" cx=p.x cy=p.y r="4.5" fill=p.color
                        data-set=p.set.clone() data-layer=p.layer.to_string() data-coeff=format!("{}", p.coeff) data-value=format!("{}", p.value)>
                        <title>{tip}</title>
                    </circle>
                </g>
            }
        })
        .collect_view();
    let tooltip = move || {
        let i = hover.get().or(pinned.get())?;
        let p = tip_points.with_value(|ps| ps.get(i).cloned())?;
        let lines = p.tip.clone();
        let head = p.set.clone();
        let chars = lines.iter().map(|l| l.chars().count()).chain([head.chars().count()]).max().unwrap_or(10);
        let (w, h) = (chars as f64 * 6.8 + 18.0, 18.0 + 15.0 * lines.len() as f64 + 6.0);
        let x = if p.x + 12.0 + w > WIDTH - 2.0 { p.x - 12.0 - w } else { p.x + 12.0 };
        let y = if p.y - h - 8.0 < 2.0 { p.y + 10.0 } else { p.y - h - 8.0 };
        Some(view! {
            <g data-testid=format!("{testid}-tooltip") class="tooltip" transform=format!("translate({x:.1} {y:.1})") pointer-events="none">
                <rect width=w height=h rx="5" ry="5"/>
                <circle cx="11" cy="13" r="4" fill=p.color/>
                <text class="tip-head" x="20" y="17">{head}</text>
                {lines.into_iter().enumerate().map(|(k, l)| view! { <text class="tip-text" x="9" y=32.0 + 15.0 * k as f64>{l}</text> }).collect_view()}
            </g>
        })
    };
    // On a phone the chart keeps a readable size and scrolls sideways inside its own box.
    view! {
        <div class="chart-scroll" tabindex="0" role="region" aria-label=format!("{} (scrolls sideways on a narrow screen)", chart.title)>
        <svg data-testid=format!("{testid}-chart") class="sweep-chart" viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img"
            aria-label=chart.title.clone() data-points=n.to_string() xmlns="http://www.w3.org/2000/svg"
            on:click=move |_| pinned.set(None)>
            <rect class="bg" x="0" y="0" width=WIDTH height=HEIGHT/>
            <text class="chart-title" x=left y="16">{chart.title.clone()}</text>
            {legend}
            {y_ticks}
            {x_ticks}
            <line class="axis" x1=left x2=left y1=top y2=bottom/>
            <line class="axis" x1=left x2=right y1=bottom y2=bottom/>
            <line class="reference" x1=left x2=right y1=chart.reference.0 y2=chart.reference.0/>
            <text class="ref-label" x=ref_label_x y=chart.reference.0 - 5.0 text-anchor="middle">{chart.reference.1.clone()}</text>
            <text class="axis-label" x=(left + right) / 2.0 y=HEIGHT - 8.0 text-anchor="middle">{chart.x_label}</text>
            <text class="axis-label" transform=format!("translate(16 {}) rotate(-90)", (top + bottom) / 2.0) text-anchor="middle">{chart.y_label}</text>
            {lines}
            {dots}
            {tooltip}
        </svg>
        </div>
        {style_key}
    }
}
