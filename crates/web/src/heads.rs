//! The Heads area's plain logic (no DOM, so it is unit-tested natively): the shipped ICL tasks,
//! the function-vector form turned into an [`FvSpec`] for the worker, and the heatmap's
//! colours. `app::heads` draws it.

use tiller_core::fv::{self, FvSettings, Head, IclPair, Order};

use crate::numbers::{check, NumKind};
use crate::protocol::FvSpec;

/// A shipped ICL task (`datasets/icl/`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskPreset {
    pub id: &'static str,
    pub label: &'static str,
    pub text: &'static str,
}

pub const TASKS: &[TaskPreset] = &[
    TaskPreset { id: "antonyms", label: "Antonyms (hot → cold)", text: include_str!("../../../datasets/icl/antonyms.jsonl") },
    TaskPreset {
        id: "country-capital",
        label: "Country → capital (France → Paris)",
        text: include_str!("../../../datasets/icl/country-capital.jsonl"),
    },
    TaskPreset {
        id: "english-french",
        label: "English → French (dog → chien)",
        text: include_str!("../../../datasets/icl/english-french.jsonl"),
    },
    TaskPreset {
        id: "present-past",
        label: "Present → past (walk → walked)",
        text: include_str!("../../../datasets/icl/present-past.jsonl"),
    },
    TaskPreset {
        id: "singular-plural",
        label: "Singular → plural (cat → cats)",
        text: include_str!("../../../datasets/icl/singular-plural.jsonl"),
    },
    TaskPreset {
        id: "lowercase-uppercase",
        label: "Word → its first letter, upper case (apple → A)",
        text: include_str!("../../../datasets/icl/lowercase-uppercase.jsonl"),
    },
];

/// The most demonstrations a prompt takes, and prompts and evaluated pairs a run takes.
pub const MAX_SHOTS: u64 = 32;
pub const MAX_PROMPTS: u64 = 200;
pub const MAX_EVAL: u64 = 200;

/// The form, as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct FvForm {
    /// A [`TASKS`] id, or empty for the user's own pairs.
    pub task: String,
    /// The user's pairs: `input -> output` per line, or JSON lines of {"input", "output"}.
    pub own: String,
    pub both_directions: bool,
    pub shots: String,
    pub prompts: String,
    pub seed: String,
    pub top_heads: String,
    pub eval_pairs: String,
}

impl Default for FvForm {
    fn default() -> Self {
        Self {
            task: TASKS[0].id.into(),
            own: "hot -> cold\nup -> down\nbig -> small\n".into(),
            both_directions: false,
            shots: "10".into(),
            prompts: "25".into(),
            seed: "0".into(),
            top_heads: "10".into(),
            eval_pairs: "50".into(),
        }
    }
}

/// The pairs of a text: JSON lines or a JSON list when it starts with `{` or `[`, else one
/// `input -> output` per line.
pub fn parse_pairs(text: &str) -> Result<Vec<IclPair>, String> {
    let t = text.trim_start();
    let parsed = if t.starts_with('{') || t.starts_with('[') { fv::parse_task(text.as_bytes()) } else { fv::parse_pasted(text) };
    parsed.map_err(|e| e.to_string())
}

impl FvForm {
    /// The task's name and its pairs, both directions mixed in when asked.
    pub fn pairs(&self) -> Result<(String, Vec<IclPair>), String> {
        let (name, pairs) = match TASKS.iter().find(|t| t.id == self.task) {
            Some(t) => (t.id.to_string(), parse_pairs(t.text)?),
            None => ("my pairs".to_string(), parse_pairs(&self.own).map_err(|e| format!("the pairs: {e}"))?),
        };
        Ok(if self.both_directions { (format!("{name} (both directions)"), fv::both_directions(&pairs)) } else { (name, pairs) })
    }

    /// "89 pairs: hot → cold, …" or what is wrong with them.
    pub fn summary(&self) -> Result<String, String> {
        let (_, pairs) = self.pairs()?;
        let shown: Vec<String> = pairs.iter().take(3).map(|p| format!("{} → {}", p.input, p.output)).collect();
        Ok(format!("{} pairs: {}{}", pairs.len(), shown.join(", "), if pairs.len() > 3 { ", …" } else { "" }))
    }

    /// The worker's spec for a model of `n_layer` × `n_head` heads, or every problem.
    pub fn to_spec(&self, n_layer: usize, n_head: usize, bos: bool) -> Result<FvSpec, Vec<String>> {
        let mut errors = Vec::new();
        let mut num = |text: &str, kind: NumKind, what: &str| match check(text, kind, what) {
            Ok(v) => v as usize,
            Err(e) => {
                errors.push(e);
                0
            }
        };
        let shots = num(&self.shots, NumKind::whole(2, MAX_SHOTS), "the demonstrations per prompt");
        let prompts = num(&self.prompts, NumKind::whole(1, MAX_PROMPTS), "the prompts");
        let seed = num(&self.seed, NumKind::whole(0, u32::MAX as u64), "the seed") as u64;
        let heads = (n_layer * n_head).max(1) as u64;
        let top_heads = num(&self.top_heads, NumKind::whole(1, heads), "the heads summed");
        let eval_pairs = num(&self.eval_pairs, NumKind::whole(0, MAX_EVAL), "the held-out pairs evaluated");
        let pairs = self.pairs();
        if let Err(e) = &pairs {
            errors.push(e.clone());
        }
        if let Ok((_, p)) = &pairs {
            if errors.is_empty() {
                if let Err(e) = fv::plan(p.len(), shots, prompts, Order::Seeded(seed), 0.3) {
                    errors.push(e.to_string());
                }
            }
        }
        match pairs {
            Ok((task, pairs)) if errors.is_empty() => Ok(FvSpec {
                task,
                pairs,
                settings: FvSettings { shots, prompts, order: Order::Seeded(seed), held_out: 0.3, top_heads, heads: None, bos, eval_pairs },
            }),
            _ => Err(errors),
        }
    }
}

/// The shipped labelled statements (`datasets/icl/statements.jsonl`).
pub const STATEMENTS: &str = include_str!("../../../datasets/icl/statements.jsonl");

/// The ITI form, as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ItiForm {
    /// The shipped statements, or the user's own (JSON lines of {"text", "label"}).
    pub own: bool,
    pub own_text: String,
    pub val: String,
    pub seed: String,
    pub top_heads: String,
    pub direction: tiller_core::iti::Direction,
    /// The shift's strength (α); kept apart from the run so it can change without re-probing.
    pub alpha: String,
}

impl Default for ItiForm {
    fn default() -> Self {
        Self {
            own: false,
            own_text: "{\"text\": \"Paris is in France.\", \"label\": true}\n{\"text\": \"Paris is in Spain.\", \"label\": false}\n".into(),
            val: "0.2".into(),
            seed: "0".into(),
            top_heads: "8".into(),
            direction: tiller_core::iti::Direction::MassMean,
            alpha: "15".into(),
        }
    }
}

impl ItiForm {
    pub fn statements(&self) -> Result<Vec<tiller_core::iti::Statement>, String> {
        let text = if self.own { self.own_text.as_str() } else { STATEMENTS };
        tiller_core::iti::parse_statements(text.as_bytes()).map_err(|e| format!("the statements: {e}"))
    }

    /// "120 statements (60 true)" or what is wrong with them.
    pub fn summary(&self) -> Result<String, String> {
        let s = self.statements()?;
        Ok(format!("{} statements ({} true), e.g. “{}”", s.len(), s.iter().filter(|s| s.label).count(), s[0].text))
    }

    pub fn to_spec(&self, n_layer: usize, n_head: usize, bos: bool) -> Result<crate::protocol::ItiSpec, Vec<String>> {
        let mut errors = Vec::new();
        let val = check(&self.val, NumKind::above(0.0, 0.9), "the validation fraction").map_err(|e| errors.push(e)).unwrap_or(0.2);
        let seed = check(&self.seed, NumKind::whole(0, u32::MAX as u64), "the seed").map_err(|e| errors.push(e)).unwrap_or(0.0) as u64;
        let heads = (n_layer * n_head).max(1) as u64;
        let top = check(&self.top_heads, NumKind::whole(1, heads), "the heads shifted").map_err(|e| errors.push(e)).unwrap_or(1.0) as usize;
        let statements = self.statements().map_err(|e| errors.push(e)).unwrap_or_default();
        if !statements.is_empty() {
            if let Err(e) = tiller_core::iti::split(statements.len(), val, tiller_core::iti::SplitOrder::Seeded(seed)) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(crate::protocol::ItiSpec { statements, val, seed, top_heads: top, direction: self.direction, bos })
        } else {
            Err(errors)
        }
    }

    /// α, or why it is not one.
    pub fn alpha(&self) -> Result<f32, String> {
        check(&self.alpha, NumKind::real(-tiller_core::recipe::MAX_COEFF as f64, tiller_core::recipe::MAX_COEFF as f64), "α")
            .map(|a| a as f32)
    }
}

/// How many passes a run makes: the clean prompts, every head's patched pass per prompt (and
/// the unpatched one), and two prompts per evaluated pair at every layer and without.
pub fn passes(spec: &FvSpec, n_layer: usize, n_head: usize) -> usize {
    let s = &spec.settings;
    let held = fv::plan(spec.pairs.len(), s.shots, s.prompts, s.order, s.held_out).map_or(0, |p| p.held_out.len());
    s.prompts * (1 + n_layer * n_head + 1) + s.eval_pairs.min(held) * 2 * (n_layer + 1)
}

/// The heatmap's fill for an AIE against the largest |AIE|: white at 0, deepening red for
/// positive effects, blue for negative ones.
pub fn heat_color(x: f64, scale: f64) -> String {
    let t = if scale > 0.0 && x.is_finite() { (x / scale).clamp(-1.0, 1.0) } else { 0.0 };
    let fade = |c: f64| (255.0 - (255.0 - c) * t.abs()).round() as u8;
    if t >= 0.0 {
        format!("rgb({}, {}, {})", fade(200.0), fade(40.0), fade(40.0))
    } else {
        format!("rgb({}, {}, {})", fade(40.0), fade(80.0), fade(200.0))
    }
}

/// A head list as `L.H, L.H`.
pub fn heads_text(heads: &[Head]) -> String {
    heads.iter().map(|h| format!("{}.{}", h.layer, h.head)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_task_parses_with_at_least_fifty_pairs() {
        for t in TASKS {
            let pairs = parse_pairs(t.text).unwrap_or_else(|e| panic!("{}: {e}", t.id));
            assert!(pairs.len() >= 50, "{}: {} pairs", t.id, pairs.len());
        }
    }

    #[test]
    fn the_form_makes_a_spec_or_says_every_problem() {
        let f = FvForm::default();
        let spec = f.to_spec(12, 12, false).unwrap();
        assert_eq!(spec.task, "antonyms");
        assert_eq!((spec.settings.shots, spec.settings.prompts, spec.settings.top_heads), (10, 25, 10));
        assert!(passes(&spec, 12, 12) > 25 * 144);
        let both = FvForm { both_directions: true, ..f.clone() }.to_spec(12, 12, false).unwrap();
        assert_eq!(both.pairs.len(), 2 * spec.pairs.len());
        let bad = FvForm { shots: "0".into(), top_heads: "999".into(), ..f.clone() };
        let e = bad.to_spec(2, 2, false).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[1].contains("1 to 4"), "{e:?}");
        let f = FvForm { top_heads: "2".into(), ..f };
        let own = FvForm { task: String::new(), own: "a -> b\nc d\n".into(), ..f.clone() };
        assert!(own.to_spec(2, 2, false).unwrap_err()[0].contains("line 2"));
        let few = FvForm { task: String::new(), own: "a -> b\nc -> d\n".into(), shots: "3".into(), ..f };
        assert!(few.to_spec(2, 2, false).unwrap_err()[0].contains("different pairs"));
        assert!(few.summary().unwrap().starts_with("2 pairs: a → b, c → d"));
    }

    #[test]
    fn the_iti_form_makes_a_spec_or_says_every_problem() {
        let f = ItiForm::default();
        let spec = f.to_spec(4, 4, false).unwrap();
        assert_eq!((spec.statements.len(), spec.top_heads, spec.val), (120, 8, 0.2));
        assert!(f.summary().unwrap().starts_with("120 statements (60 true)"));
        let bad = ItiForm { val: "1".into(), top_heads: "17".into(), ..f.clone() };
        assert_eq!(bad.to_spec(4, 4, false).unwrap_err().len(), 2);
        let own = ItiForm { own: true, own_text: "{\"text\": \"a\", \"label\": true}\n".into(), ..f.clone() };
        assert!(own.to_spec(4, 4, false).unwrap_err()[0].contains("both labels"));
        assert_eq!(ItiForm { alpha: "-3".into(), ..f }.alpha(), Ok(-3.0));
    }

    #[test]
    fn heat_colours_run_from_blue_through_white_to_red() {
        assert_eq!(heat_color(0.0, 1.0), "rgb(255, 255, 255)");
        assert_eq!(heat_color(1.0, 1.0), "rgb(200, 40, 40)");
        assert_eq!(heat_color(-2.0, 1.0), "rgb(40, 80, 200)");
        assert_eq!(heat_color(f64::NAN, 1.0), "rgb(255, 255, 255)");
    }
}
