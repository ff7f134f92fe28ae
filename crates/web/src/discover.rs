//! The Discover area's plain logic (no DOM, so it is unit-tested natively): the MELBO form
//! turned into a [`MelboSpec`] for the worker, the defaults the replication advises, and the
//! time estimate. `app::discover` draws it.

use tiller_core::melbo::{self, TargetTokens};

use crate::numbers::{check, NumKind};
use crate::protocol::MelboSpec;

/// The most prompts, vectors, steps and completion tokens a page run takes.
pub const MAX_PROMPTS: usize = 16;
pub const MAX_VECTORS: u64 = 256;
pub const MAX_STEPS: u64 = 5000;
pub const MAX_NEW_TOKENS: u64 = 64;

/// The form, as typed. Empty layer fields take the defaults for the loaded model's depth.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoverForm {
    /// One prompt per line.
    pub prompts: String,
    pub source: String,
    pub target: String,
    pub radius: String,
    pub vectors: String,
    pub steps: String,
    pub p: String,
    /// Empty: q = p.
    pub q: String,
    /// `all` or `last:K`.
    pub target_tokens: String,
    pub orthogonal: bool,
    pub seed: String,
    /// Tokens of each completion shown for a vector.
    pub new_tokens: String,
    /// The radii of a sweep over R, `1,2,4,8`.
    pub radii: String,
}

impl Default for DiscoverForm {
    fn default() -> Self {
        Self {
            prompts: "Write a short poem about the sea.".into(),
            source: String::new(),
            target: String::new(),
            radius: "4".into(),
            vectors: "32".into(),
            steps: "300".into(),
            p: "2".into(),
            q: String::new(),
            target_tokens: "all".into(),
            orthogonal: true,
            seed: "0".into(),
            new_tokens: "16".into(),
            radii: "1,2,4,8".into(),
        }
    }
}

impl DiscoverForm {
    /// The prompts, one per non-blank line.
    pub fn prompt_list(&self) -> Vec<String> {
        self.prompts.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).map(String::from).collect()
    }

    /// The worker's spec for a model of `n_layer` layers and `c` channels, or every problem.
    pub fn to_spec(&self, n_layer: usize, c: usize, bos: bool) -> Result<MelboSpec, Vec<String>> {
        let mut errors = Vec::new();
        let prompts = self.prompt_list();
        if prompts.is_empty() {
            errors.push("the prompts: type at least one (one per line)".to_string());
        } else if prompts.len() > MAX_PROMPTS {
            errors.push(format!("the prompts: {} lines, more than the {MAX_PROMPTS} a run takes", prompts.len()));
        }
        let (ds, dt) = melbo::default_layers(n_layer);
        let top = n_layer.saturating_sub(1) as u64;
        let mut num = |text: &str, kind: NumKind, what: &str, default: Option<f64>| {
            if text.trim().is_empty() {
                if let Some(d) = default {
                    return d;
                }
            }
            check(text, kind, what).unwrap_or_else(|e| {
                errors.push(e);
                0.0
            })
        };
        let source = num(&self.source, NumKind::whole(0, top), "the source layer", Some(ds as f64)) as usize;
        let target = num(&self.target, NumKind::whole(1, top), "the target layer", Some(dt as f64)) as usize;
        let radius = num(&self.radius, NumKind::above(0.0, 1e6), "R (the vectors' norm)", None);
        let max_vectors = if self.orthogonal { MAX_VECTORS.min(c as u64) } else { MAX_VECTORS };
        let vectors = num(&self.vectors, NumKind::whole(1, max_vectors), "the number of vectors", None) as usize;
        let steps = num(&self.steps, NumKind::whole(1, MAX_STEPS), "the steps per vector", None) as usize;
        let p = num(&self.p, NumKind::real(1.0, 16.0), "p", None);
        let q = num(&self.q, NumKind::real(0.25, 16.0), "q", Some(p));
        let seed = num(&self.seed, NumKind::whole(0, u32::MAX as u64), "the seed", None) as u64;
        let new_tokens = num(&self.new_tokens, NumKind::whole(1, MAX_NEW_TOKENS), "the completion length", None) as usize;
        let tokens = TargetTokens::parse(&self.target_tokens).map_err(|e| e.to_string());
        if let Err(e) = &tokens {
            errors.push(format!("the target tokens: {e}"));
        }
        if errors.is_empty() && source >= target {
            errors.push(format!("the source layer ({source}) must come before the target layer ({target})"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(MelboSpec {
            prompts,
            bos,
            source,
            target,
            radius,
            vectors,
            steps,
            p,
            q,
            target_tokens: tokens.unwrap_or_default(),
            orthogonal: self.orthogonal,
            seed,
            new_tokens,
        })
    }

    /// A sweep over R: the run's spec (its R the first radius) and the radii, or every
    /// problem. The R field does not count; the sweep needs two vectors or more at each R.
    pub fn to_sweep(&self, n_layer: usize, c: usize, bos: bool) -> Result<(MelboSpec, Vec<f64>), Vec<String>> {
        let radii = melbo::sweep::parse_radii(&self.radii).map_err(|e| format!("the radii: {e}"));
        let first = radii.as_ref().ok().map_or_else(|| "1".to_string(), |r| r[0].to_string());
        let mut errors = Vec::new();
        let spec = Self { radius: first, ..self.clone() }.to_spec(n_layer, c, bos).map_err(|e| errors.extend(e)).ok();
        if let Err(e) = &radii {
            errors.push(e.clone());
        }
        if spec.as_ref().is_some_and(|s| s.vectors < 2) {
            errors.push("the number of vectors: a sweep compares the completions of 2 or more vectors at each R".into());
        }
        match (spec, radii) {
            (Some(s), Ok(r)) if errors.is_empty() => Ok((s, r)),
            _ => Err(errors),
        }
    }
}

/// The sweep chart's geometry: R on a log scale across, diversity on the left axis and the
/// perplexity (log scale) on the right, each point in SVG units.
#[derive(Debug, Clone, PartialEq)]
pub struct RadiusChart {
    /// (R, x) of each point, in the order given.
    pub xs: Vec<(f64, f64)>,
    /// (x, y) of each point that has the number.
    pub diversity: Vec<(f64, f64)>,
    pub perplexity: Vec<(f64, f64)>,
    /// The unsteered completions' perplexity (the mean over points), as a y.
    pub unsteered: Option<f64>,
    /// (label, y) of the left and right axes' ticks.
    pub left: Vec<(String, f64)>,
    pub right: Vec<(String, f64)>,
}

/// The perplexity axis's ticks over `domain` (log10 of perplexity): the powers of ten in it
/// when there are two or more, else `nice` (the linear ticks of the logs) as values.
fn right_ticks(domain: (f64, f64), nice: &[f64]) -> Vec<(String, f64)> {
    let (lo, hi) = (domain.0.min(domain.1), domain.0.max(domain.1));
    let powers: Vec<f64> = ((lo - 1e-9).ceil() as i64..=(hi + 1e-9).floor() as i64).map(|k| k as f64).collect();
    if powers.len() >= 2 {
        let label = |k: f64| if (0.0..=6.0).contains(&k) { format!("{}", 10f64.powi(k as i32) as u64) } else { format!("1e{k}") };
        powers.into_iter().map(|k| (label(k), k)).collect()
    } else {
        nice.iter().map(|&v| (crate::chart::value_text(10f64.powf(v)), v)).collect()
    }
}

/// Room on the sweep chart's right for the perplexity axis's labels.
pub const RADIUS_CHART_RIGHT: f64 = 64.0;

/// Lays out the sweep chart for `points` (see [`RadiusChart`]).
pub fn radius_chart(points: &[melbo::sweep::RadiusPoint]) -> RadiusChart {
    use crate::chart::{position_axis, value_axis};
    let logs: Vec<f64> = points.iter().map(|p| p.radius.log10()).collect();
    let mut xs = position_axis(&logs);
    xs.range.1 = crate::chart::WIDTH - RADIUS_CHART_RIGHT;
    let div: Vec<f64> = points.iter().filter_map(|p| p.diversity).collect();
    let (ls, lt, ld) = value_axis(&div, Some(0.0), 5);
    let log_ppl = |x: Option<f64>| x.filter(|x| *x > 0.0).map(f64::log10);
    let base: Vec<f64> = points.iter().filter_map(|p| log_ppl(p.unsteered_perplexity)).collect();
    let unsteered = (!base.is_empty()).then(|| base.iter().sum::<f64>() / base.len() as f64);
    let lp: Vec<f64> = points.iter().filter_map(|p| log_ppl(p.perplexity)).chain(unsteered).collect();
    let (rs, rt, _) = value_axis(&lp, None, 4);
    RadiusChart {
        xs: points.iter().zip(&logs).map(|(p, &l)| (p.radius, xs.map(l))).collect(),
        diversity: points.iter().zip(&logs).filter_map(|(p, &l)| p.diversity.map(|d| (xs.map(l), ls.map(d)))).collect(),
        perplexity: points.iter().zip(&logs).filter_map(|(p, &l)| log_ppl(p.perplexity).map(|v| (xs.map(l), rs.map(v)))).collect(),
        unsteered: unsteered.map(|v| rs.map(v)),
        left: lt.iter().map(|&v| (format!("{v:.ld$}"), ls.map(v))).collect(),
        right: right_ticks(rs.domain, &rt).into_iter().map(|(l, v)| (l, rs.map(v))).collect(),
    }
}

/// "about 3 min" from seconds.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "a while".into();
    }
    if secs < 90.0 {
        format!("about {:.0} s", secs.max(1.0))
    } else if secs < 5400.0 {
        format!("about {:.0} min", secs / 60.0)
    } else {
        format!("about {:.1} h", secs / 3600.0)
    }
}

/// The time left: the run's mean seconds per step so far times the steps left.
pub fn time_left(elapsed_s: f64, done_steps: usize, total_steps: usize) -> Option<f64> {
    (done_steps > 0).then(|| elapsed_s / done_steps as f64 * total_steps.saturating_sub(done_steps) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_layers_take_the_depth_defaults_and_q_follows_p() {
        let f = DiscoverForm { p: "3".into(), ..Default::default() };
        let s = f.to_spec(12, 768, true).unwrap();
        assert_eq!((s.source, s.target), (3, 9));
        assert_eq!((s.p, s.q), (3.0, 3.0));
        assert_eq!(s.prompts, vec!["Write a short poem about the sea.".to_string()]);
        assert!(s.bos && s.orthogonal);
    }

    #[test]
    fn bad_fields_are_all_named() {
        let f = DiscoverForm {
            prompts: " \n".into(),
            radius: "0".into(),
            vectors: "99999".into(),
            target_tokens: "last:0".into(),
            ..Default::default()
        };
        let e = f.to_spec(4, 64, false).unwrap_err();
        assert!(e.iter().any(|m| m.starts_with("the prompts")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("R (the vectors' norm)")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("number of vectors")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("target tokens")), "{e:?}");
        let f = DiscoverForm { source: "3".into(), target: "2".into(), ..Default::default() };
        assert!(f.to_spec(4, 64, false).unwrap_err()[0].contains("must come before"));
        let f = DiscoverForm { vectors: "65".into(), ..Default::default() };
        assert!(f.to_spec(4, 64, false).is_err(), "65 orthogonal vectors do not fit in 64 channels");
        let f = DiscoverForm { vectors: "65".into(), orthogonal: false, ..Default::default() };
        assert!(f.to_spec(4, 64, false).is_ok());
    }

    #[test]
    fn a_sweep_takes_its_radii_and_wants_two_vectors() {
        let f = DiscoverForm { radius: String::new(), radii: "2, 0.5 8".into(), vectors: "3".into(), ..Default::default() };
        let (s, r) = f.to_sweep(4, 64, true).unwrap();
        assert_eq!(r, vec![2.0, 0.5, 8.0]);
        assert_eq!((s.radius, s.vectors), (2.0, 3));
        let f = DiscoverForm { radii: "1,1".into(), vectors: "1".into(), ..Default::default() };
        let e = f.to_sweep(4, 64, true).unwrap_err();
        assert!(e.iter().any(|m| m.starts_with("the radii") && m.contains("twice")), "{e:?}");
        assert!(e.iter().any(|m| m.contains("2 or more vectors")), "{e:?}");
    }

    #[test]
    fn the_radius_chart_puts_r_on_a_log_scale_and_perplexity_on_the_right() {
        use tiller_core::melbo::sweep::RadiusPoint;
        let p = |radius: f64, d: Option<f64>, ppl: f64| RadiusPoint {
            radius,
            objectives: vec![1.0],
            completions: vec![],
            unsteered: vec![],
            diversity: d,
            perplexity: Some(ppl),
            unsteered_perplexity: Some(10.0),
        };
        let c = radius_chart(&[p(1.0, Some(0.1), 10.0), p(10.0, None, 100.0), p(100.0, Some(0.5), 1000.0)]);
        // equal steps in log R are equal steps across
        let dx = |i: usize| c.xs[i + 1].1 - c.xs[i].1;
        assert!((dx(0) - dx(1)).abs() < 1e-9 && dx(0) > 0.0);
        assert_eq!(c.diversity.len(), 2, "the point without a diversity is left out");
        assert_eq!(c.perplexity.len(), 3);
        // a larger perplexity is higher up (smaller y), as is a larger diversity
        assert!(c.perplexity[2].1 < c.perplexity[1].1 && c.perplexity[1].1 < c.perplexity[0].1);
        assert!(c.diversity[1].1 < c.diversity[0].1);
        assert_eq!(c.unsteered, Some(c.perplexity[0].1), "the unsteered line sits at its perplexity");
        assert!(c.right.iter().any(|(l, _)| l == "100"), "{:?}", c.right);
        assert_eq!(c.left.first().map(|(l, _)| l.as_str()), Some("0.0"));
    }

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(duration(12.3), "about 12 s");
        assert_eq!(duration(600.0), "about 10 min");
        assert_eq!(duration(7200.0), "about 2.0 h");
        assert_eq!(time_left(10.0, 5, 20), Some(30.0));
        assert_eq!(time_left(10.0, 0, 20), None);
    }
}
