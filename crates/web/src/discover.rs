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
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(duration(12.3), "about 12 s");
        assert_eq!(duration(600.0), "about 10 min");
        assert_eq!(duration(7200.0), "about 2.0 h");
        assert_eq!(time_left(10.0, 5, 20), Some(30.0));
        assert_eq!(time_left(10.0, 0, 20), None);
    }
}
