//! The geometry of a small line chart (scales, "nice" ticks, labels) and the two charts laid
//! out in it: the sweep's and the A/B evaluation's, kept apart from the view so they can be
//! tested without a browser. `app::charts` draws them as inline SVG.

use tiller_core::contrast::AbRow;
use tiller_core::sweep::{SweepRow, SweepSpec};

use crate::sweep::{Metric, XAxis};

/// The chart's size in SVG user units (it scales to the panel's width).
pub const WIDTH: f64 = 680.0;
pub const HEIGHT: f64 = 340.0;

/// Space around the plot area: ticks and labels on the left and bottom, the legend on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Margins {
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

pub const MARGINS: Margins = Margins { left: 64.0, right: 20.0, top: 44.0, bottom: 48.0 };

/// Line colours, one per series (distinguishable, and readable on white).
pub const PALETTE: [&str; 8] = ["#2f5fd0", "#d9622b", "#2e9e5b", "#b03fa8", "#b8901a", "#1a9ab0", "#7a5a3a", "#e0457b"];

/// A linear map from data values to SVG coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub domain: (f64, f64),
    pub range: (f64, f64),
}

impl Scale {
    pub fn map(&self, v: f64) -> f64 {
        let (d0, d1) = self.domain;
        let (r0, r1) = self.range;
        if d1 == d0 {
            return (r0 + r1) / 2.0;
        }
        r0 + (v - d0) / (d1 - d0) * (r1 - r0)
    }
}

/// A step of 1, 2 or 5 × 10^k giving about `target` intervals over `span`.
pub fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let nice = match raw / mag {
        r if r < 1.5 => 1.0,
        r if r < 3.0 => 2.0,
        r if r < 7.0 => 5.0,
        _ => 10.0,
    };
    nice * mag
}

/// Decimals that tell ticks `step` apart (0.05 → 2, 0.5 → 1, 2 → 0).
pub fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 0;
    }
    (-step.log10().floor()).max(0.0) as usize
}

/// The vertical axis: a domain that starts and ends on ticks and contains every value and
/// `include` (the reference line), and the ticks.
pub fn value_axis(values: &[f64], include: Option<f64>, target: usize) -> (Scale, Vec<f64>, usize) {
    let finite = values.iter().copied().chain(include).filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        // One value (e.g. only coefficient 0, ratio 1 everywhere): a small band around it.
        let pad = (hi.abs() * 0.05).max(0.01);
        lo -= pad;
        hi += pad;
    }
    let step = nice_step(hi - lo, target);
    // The tolerance keeps a value that is on a tick (up to rounding) from adding a tick.
    let (d0, d1) = ((lo / step + 1e-9).floor() * step, (hi / step - 1e-9).ceil() * step);
    let n = ((d1 - d0) / step).round() as usize;
    let ticks = (0..=n).map(|i| d0 + i as f64 * step).collect();
    let scale = Scale { domain: (d0, d1), range: (HEIGHT - MARGINS.bottom, MARGINS.top) };
    (scale, ticks, decimals(step))
}

/// The horizontal axis over the given x values (layers or coefficients), with a little room
/// on both sides so the end points do not sit on the axes.
pub fn position_axis(xs: &[f64]) -> Scale {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let pad = (hi - lo) * 0.04;
    Scale { domain: (lo - pad, hi + pad), range: (MARGINS.left, WIDTH - MARGINS.right) }
}

/// Which of the sorted x values get a tick label: every one that is at least `gap` SVG units
/// from the previous labelled one (so labels never overlap).
pub fn spaced_ticks(xs: &[f64], scale: &Scale, gap: f64) -> Vec<f64> {
    let mut sorted: Vec<f64> = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let mut out: Vec<f64> = Vec::new();
    for x in sorted {
        if out.last().is_none_or(|&p| scale.map(x) - scale.map(p) >= gap) {
            out.push(x);
        }
    }
    out
}

/// A value as the tooltip and labels show it: 4 significant digits, no exponent for the
/// ranges a sweep gives.
pub fn value_text(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 8) as usize;
    format!("{v:.digits$}")
}

/// An SVG path through the points, in order.
pub fn polyline(points: &[(f64, f64)]) -> String {
    points.iter().enumerate().map(|(i, (x, y))| format!("{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" })).collect()
}

/// One point of a chart, in SVG units, with what the tooltip says.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartPoint {
    /// The line's name (a sweep's evaluation set, an evaluated vector).
    pub set: String,
    pub color: &'static str,
    pub layer: usize,
    pub coeff: f32,
    /// The plotted value.
    pub value: f64,
    /// The tooltip's lines under the name.
    pub tip: Vec<String>,
    pub x: f64,
    pub y: f64,
}

/// Line styles (SVG `stroke-dasharray`), one per coefficient (x = layer) or layer (x =
/// coefficient) when the chart shows every one of them: the colour stays the set's.
/// The first two (solid, dotted) do not look like the dashed "no change" line.
pub const DASHES: [&str; 6] = ["", "1 5", "10 4 1 4", "14 5", "1 5 6 5", "4 3"];

/// One line: an evaluation set's, or (every value shown) one set at one coefficient or layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartSeries {
    pub name: String,
    pub color: &'static str,
    /// `stroke-dasharray` ("" = solid).
    pub dash: &'static str,
    pub path: String,
    pub points: Vec<ChartPoint>,
}

/// The sweep's chart, laid out: what the view draws.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepChart {
    pub title: String,
    pub x_label: &'static str,
    pub y_label: &'static str,
    pub series: Vec<ChartSeries>,
    /// (x in SVG units, label).
    pub x_ticks: Vec<(f64, String)>,
    /// (y in SVG units, label).
    pub y_ticks: Vec<(f64, String)>,
    /// The "no change" line: y in SVG units and its label.
    pub reference: (f64, String),
    /// When every coefficient (x = layer) or layer (x = coefficient) is drawn: what each line
    /// style means, e.g. ("", "× 0"), ("8 4", "× 2"). Empty when one value is picked.
    pub styles: Vec<(&'static str, String)>,
}

impl SweepChart {
    pub fn point_count(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

/// The coefficient (x = layer) or layer (x = coefficient) the chart shows when the user has
/// not picked one: the strongest coefficient, or the first layer with results.
pub fn default_pick(spec: &SweepSpec, rows: &[SweepRow], x: XAxis) -> Option<f64> {
    match x {
        XAxis::Layer => spec.coeffs.iter().copied().reduce(|a, b| if b.abs() >= a.abs() { b } else { a }).map(f64::from),
        XAxis::Coeff => spec.layers.iter().find(|&&l| rows.iter().any(|r| r.layer == l)).or(spec.layers.first()).map(|&l| l as f64),
    }
}

/// Lays out the chart of a sweep's rows: one line per evaluation set, x the layer (at the
/// coefficient `pick`) or the coefficient (at the layer `pick`), y the metric. With `pick`
/// `None`, every coefficient (or layer) is drawn: one line per (set, value), the set's colour
/// and the value's line style.
pub fn sweep_chart(spec: &SweepSpec, rows: &[SweepRow], x: XAxis, metric: Metric, pick: Option<f64>) -> SweepChart {
    let (xs, x_label, gap): (Vec<f64>, _, _) = match x {
        XAxis::Layer => (spec.layers.iter().map(|&l| l as f64).collect(), "injection layer", 22.0),
        XAxis::Coeff => (spec.coeffs.iter().map(|&c| c as f64).collect(), "coefficient multiplier (× the terms' coefficients)", 28.0),
    };
    // The other dimension's value of a row: its coefficient (x = layer) or its layer.
    let other = |r: &SweepRow| match x {
        XAxis::Layer => r.coeff as f64,
        XAxis::Coeff => r.layer as f64,
    };
    let on_line = |r: &SweepRow| pick.is_none_or(|p| other(r) == p);
    let x_of = |r: &SweepRow| match x {
        XAxis::Layer => r.layer as f64,
        XAxis::Coeff => r.coeff as f64,
    };
    let shown: Vec<&SweepRow> = rows.iter().filter(|r| on_line(r) && metric.of(r).is_finite()).collect();
    let values: Vec<f64> = shown.iter().map(|r| metric.of(r)).collect();
    let no_change = match metric {
        Metric::PplRatio => 1.0,
        Metric::Kl => 0.0,
    };
    let (y_scale, y_ticks, dec) = value_axis(&values, Some(no_change), 5);
    let x_scale = position_axis(&xs);
    // The lines: (set index, other-dimension value or None for the picked one).
    let others: Vec<Option<f64>> = match (pick, x) {
        (Some(_), _) => vec![None],
        (None, XAxis::Layer) => spec.coeffs.iter().map(|&c| Some(c as f64)).collect(),
        (None, XAxis::Coeff) => spec.layers.iter().map(|&l| Some(l as f64)).collect(),
    };
    let style_name = |v: f64| match x {
        XAxis::Layer => format!("× {}", v as f32),
        XAxis::Coeff => format!("layer {v}"),
    };
    let series = spec
        .sets
        .iter()
        .enumerate()
        .flat_map(|(i, set)| others.iter().enumerate().map(move |(j, o)| (i, set, j, *o)))
        .map(|(i, set, j, o)| {
            let color = PALETTE[i % PALETTE.len()];
            let dash = if o.is_some() { DASHES[j % DASHES.len()] } else { "" };
            let mut points: Vec<ChartPoint> = shown
                .iter()
                .filter(|r| r.set == set.name && o.is_none_or(|v| other(r) == v))
                .map(|r| ChartPoint {
                    set: r.set.clone(),
                    color,
                    layer: r.layer,
                    coeff: r.coeff,
                    value: metric.of(r),
                    tip: vec![
                        format!("layer {} · coefficient × {}", r.layer, r.coeff),
                        format!("perplexity ratio {}", value_text(r.ppl_ratio)),
                        format!("KL {} nats", value_text(r.kl)),
                    ],
                    x: x_scale.map(x_of(r)),
                    y: y_scale.map(metric.of(r)),
                })
                .collect();
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            let path = polyline(&points.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>());
            let name = match o {
                Some(v) => format!("{} {}", set.name, style_name(v)),
                None => set.name.clone(),
            };
            ChartSeries { name, color, dash, path, points }
        })
        .collect();
    let styles = others.iter().enumerate().filter_map(|(j, o)| o.map(|v| (DASHES[j % DASHES.len()], style_name(v)))).collect();
    let what = match metric {
        Metric::PplRatio => "Perplexity ratio",
        Metric::Kl => "KL divergence",
    };
    let title = match (x, pick) {
        (XAxis::Layer, Some(p)) => format!("{what} by injection layer, coefficient × {}", p as f32),
        (XAxis::Coeff, Some(p)) => format!("{what} by coefficient, layer {p}"),
        (XAxis::Layer, None) => format!("{what} by injection layer: colour = set, line style = coefficient"),
        (XAxis::Coeff, None) => format!("{what} by coefficient: colour = set, line style = layer"),
    };
    SweepChart {
        title,
        x_label,
        y_label: metric.label(),
        series,
        x_ticks: spaced_ticks(&xs, &x_scale, gap).into_iter().map(|v| (x_scale.map(v), format!("{}", v as f32))).collect(),
        y_ticks: y_ticks.into_iter().map(|v| (y_scale.map(v), format!("{v:.dec$}"))).collect(),
        reference: (y_scale.map(no_change), if metric == Metric::PplRatio { "1 = no change" } else { "0 = no change" }.into()),
        styles,
    }
}

/// Lays out CAA's behavioural chart: x the coefficient, y the mean p(matching answer), one
/// line per evaluated vector (`labels`, in the order of `rows`: each vector's rows are one per
/// coefficient, as [`tiller_core::contrast::eval_ab`] returns them), and the unsteered
/// model's value as the reference line.
pub fn ab_chart(rows: &[AbRow], labels: &[String], coeffs: &[f32]) -> SweepChart {
    let xs: Vec<f64> = coeffs.iter().map(|&c| c as f64).collect();
    let x_scale = position_axis(&xs);
    let unsteered = rows.first().map_or(0.5, |r| r.p_matching_unsteered);
    let values: Vec<f64> = rows.iter().map(|r| r.p_matching).filter(|v| v.is_finite()).collect();
    let (y_scale, y_ticks, dec) = value_axis(&values, Some(unsteered), 5);
    let per_line = coeffs.len().max(1);
    let series = rows
        .chunks(per_line)
        .zip(labels)
        .enumerate()
        .map(|(i, (line, label))| {
            let color = PALETTE[i % PALETTE.len()];
            let mut points: Vec<ChartPoint> = line
                .iter()
                .filter(|r| r.p_matching.is_finite())
                .map(|r| ChartPoint {
                    set: label.clone(),
                    color,
                    layer: r.layer,
                    coeff: r.coeff,
                    value: r.p_matching,
                    tip: vec![
                        format!("layer {} · coefficient {}", r.layer, r.coeff),
                        format!("p(matching) {:.3} (unsteered {:.3})", r.p_matching, r.p_matching_unsteered),
                        format!("the two letters hold {:.1}% of p", 100.0 * r.p_letters),
                    ],
                    x: x_scale.map(r.coeff as f64),
                    y: y_scale.map(r.p_matching),
                })
                .collect();
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            let path = polyline(&points.iter().map(|p| (p.x, p.y)).collect::<Vec<_>>());
            ChartSeries { name: label.clone(), color, dash: "", path, points }
        })
        .collect();
    let items = rows.first().map_or(0, |r| r.items);
    SweepChart {
        title: format!("p(matching answer) by coefficient, {items} item{}", if items == 1 { "" } else { "s" }),
        x_label: "coefficient",
        y_label: "p(matching answer letter)",
        series,
        x_ticks: spaced_ticks(&xs, &x_scale, 28.0).into_iter().map(|v| (x_scale.map(v), format!("{}", v as f32))).collect(),
        y_ticks: y_ticks.into_iter().map(|v| (y_scale.map(v), format!("{v:.dec$}"))).collect(),
        reference: (y_scale.map(unsteered), format!("unsteered {unsteered:.3}")),
        styles: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiller_core::contrast::AbRow;
    use tiller_core::sweep::EvalSet;
    use tiller_core::{Site, Term};

    fn row(set: &str, layer: usize, coeff: f32, ppl_ratio: f64) -> SweepRow {
        SweepRow {
            set: set.into(),
            layer,
            coeff,
            ppl_ratio,
            kl: (ppl_ratio - 1.0).abs(),
            loss_steered: 0.0,
            loss_unsteered: 0.0,
            tokens: 5,
            texts: 1,
        }
    }

    #[test]
    fn sweep_chart_has_a_line_per_set_at_the_picked_coefficient() {
        let spec = SweepSpec {
            terms: vec![Term { layer: 0, coeff: 1.0, text: "a".into(), head: None }],
            bos: false,
            site: Site::ResidPre,
            layers: vec![0, 1, 2, 3],
            coeffs: vec![0.0, 4.0],
            sets: vec![EvalSet { name: "related".into(), texts: vec![] }, EvalSet { name: "unrelated".into(), texts: vec![] }],
        };
        // Two layers done so far.
        let rows: Vec<SweepRow> = [0, 1]
            .iter()
            .flat_map(|&l| {
                [row("related", l, 0.0, 1.0), row("unrelated", l, 0.0, 1.0), row("related", l, 4.0, 1.3), row("unrelated", l, 4.0, 1.1)]
            })
            .collect();
        assert_eq!(default_pick(&spec, &rows, XAxis::Layer), Some(4.0));
        assert_eq!(default_pick(&spec, &rows, XAxis::Coeff), Some(0.0));
        let c = sweep_chart(&spec, &rows, XAxis::Layer, Metric::PplRatio, Some(4.0));
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.point_count(), 4);
        assert_eq!(c.x_ticks.len(), 4, "every layer of the range is on the axis before its rows arrive");
        assert!(c.series[0].points.iter().all(|p| p.coeff == 4.0 && p.value == 1.3));
        assert!(c.series[0].points[0].x < c.series[0].points[1].x);
        assert_ne!(c.series[0].color, c.series[1].color);
        // The "no change" line is inside the plot, below the points (larger y is lower).
        assert!(c.reference.0 > c.series[0].points[0].y && c.reference.0 <= HEIGHT - MARGINS.bottom);
        let at_zero = sweep_chart(&spec, &rows, XAxis::Layer, Metric::PplRatio, Some(0.0));
        assert!(at_zero.series.iter().flat_map(|s| &s.points).all(|p| p.value == 1.0));
        let by_coeff = sweep_chart(&spec, &rows, XAxis::Coeff, Metric::Kl, Some(1.0));
        assert_eq!(by_coeff.point_count(), 4);
        assert_eq!(by_coeff.title, "KL divergence by coefficient, layer 1");
        assert!(by_coeff.styles.is_empty());
        // Every coefficient: a line per (set, coefficient), the set's colour, the coefficient's style.
        let all = sweep_chart(&spec, &rows, XAxis::Layer, Metric::PplRatio, None);
        assert_eq!(all.point_count(), 8);
        assert_eq!(all.series.len(), 4);
        assert_eq!(
            all.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["related × 0", "related × 4", "unrelated × 0", "unrelated × 4"]
        );
        assert_eq!(all.series[0].color, all.series[1].color);
        assert_ne!(all.series[0].dash, all.series[1].dash);
        assert_eq!(all.styles, vec![(DASHES[0], "× 0".to_string()), (DASHES[1], "× 4".to_string())]);
        assert!(all.series[1].points.iter().all(|p| p.coeff == 4.0));
        let all_layers = sweep_chart(&spec, &rows, XAxis::Coeff, Metric::Kl, None);
        assert_eq!(all_layers.series.len(), 8, "2 sets × 4 layers, two of them without rows yet");
        assert_eq!(all_layers.point_count(), 8);
    }

    #[test]
    fn nice_steps_and_decimals() {
        assert_eq!(nice_step(1.0, 5), 0.2);
        assert_eq!(nice_step(0.013, 5), 0.002);
        assert_eq!(nice_step(70.0, 5), 10.0);
        assert_eq!(decimals(0.05), 2);
        assert_eq!(decimals(2.0), 0);
    }

    #[test]
    fn value_axis_holds_the_values_and_the_reference() {
        let (scale, ticks, _) = value_axis(&[1.02, 1.13], Some(1.0), 5);
        assert!(scale.domain.0 <= 1.0 && scale.domain.1 >= 1.13, "{scale:?}");
        assert_eq!(ticks.first().copied(), Some(scale.domain.0));
        assert!((ticks.last().unwrap() - scale.domain.1).abs() < 1e-9);
        assert!(ticks.len() >= 3 && ticks.len() <= 12, "{ticks:?}");
        // The top of the domain is at the top of the plot.
        assert_eq!(scale.map(scale.domain.1), MARGINS.top);
        // KL is never negative: the axis starts at 0, the "no change" line.
        let (scale, ticks, _) = value_axis(&[5.7, 0.0], Some(0.0), 5);
        assert_eq!(scale.domain.0, 0.0);
        assert_eq!(ticks.first().copied(), Some(0.0));
        let (scale, _, _) = value_axis(&[0.3, 0.7], None, 4);
        assert!((scale.domain.0 - 0.3).abs() < 1e-9 && (scale.domain.1 - 0.7).abs() < 1e-9, "{scale:?}");
        // Every value equal: still a band with ticks, the value inside it.
        let (scale, ticks, _) = value_axis(&[1.0, 1.0], Some(1.0), 5);
        assert!(scale.domain.0 < 1.0 && scale.domain.1 > 1.0 && ticks.len() >= 2);
    }

    #[test]
    fn labels_do_not_overlap() {
        let xs = [0.0, 0.1, 1.0, 2.0, 4.0, 8.0];
        let scale = position_axis(&xs);
        let t = spaced_ticks(&xs, &scale, 28.0);
        assert_eq!(t, vec![0.0, 1.0, 2.0, 4.0, 8.0]);
        assert_eq!(value_text(1.0), "1.000");
        assert_eq!(value_text(0.012345), "0.01235");
        assert_eq!(value_text(123.456), "123.5");
        assert_eq!(polyline(&[(1.0, 2.0), (3.0, 4.0)]), "M1.0,2.0 L3.0,4.0");
    }

    #[test]
    fn ab_chart_draws_a_line_per_vector_against_the_coefficient() {
        let row = |layer, coeff: f32, p| AbRow { layer, coeff, p_matching: p, p_matching_unsteered: 0.5, p_letters: 0.9, items: 12 };
        let rows = vec![row(1, -2.0, 0.2), row(1, 0.0, 0.5), row(1, 2.0, 0.8), row(3, -2.0, 0.4), row(3, 0.0, 0.5), row(3, 2.0, 0.55)];
        let labels = vec!["a L1".to_string(), "b L3".to_string()];
        let c = ab_chart(&rows, &labels, &[-2.0, 0.0, 2.0]);
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.point_count(), 6);
        assert_eq!(c.series[1].name, "b L3");
        assert!(c.title.contains("12 items"));
        assert_eq!(c.reference.1, "unsteered 0.500");
        // Higher p is drawn higher (smaller SVG y), and the points run left to right.
        let a = &c.series[0].points;
        assert!(a[0].y > a[1].y && a[1].y > a[2].y);
        assert!(a[0].x < a[1].x && a[1].x < a[2].x);
        assert!((a[1].y - c.reference.0).abs() < 1e-9);
        // A line still running (fewer rows) draws what it has.
        assert_eq!(ab_chart(&rows[..3], &labels, &[-2.0, 0.0, 2.0]).series.len(), 1);
    }
}
