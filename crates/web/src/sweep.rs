//! The sweep panel's settings: as the user types them ([`SweepForm`], numbers kept as text so
//! a half-typed value is not lost), checked into a [`SweepSpec`] with every problem as a
//! sentence, and in the compact, typed form share links carry ([`SweepSettings`]).
//!
//! A sweep moves the editor's steering terms to each layer of a range and multiplies their
//! coefficients by each number of a list (`tiller_core::sweep`); what it reports, per
//! evaluation set, is the perplexity ratio steered/unsteered and the KL divergence.

use serde::{Deserialize, Serialize};
use tiller_core::recipe::MAX_COEFF;
use tiller_core::sweep::{EvalSet, SweepSpec};
use tiller_core::Term;

use crate::form::Form;

/// At most this many evaluation sets (one colour each in the chart).
pub const MAX_SETS: usize = 8;
/// At most this many coefficients in one sweep.
pub const MAX_COEFFS: usize = 32;

/// The chart's horizontal axis; the other dimension is fixed to one picked value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum XAxis {
    /// Injection layer; one coefficient is picked.
    #[default]
    Layer,
    /// Coefficient multiplier; one layer is picked.
    Coeff,
}

impl XAxis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Layer => "layer",
            Self::Coeff => "coeff",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "layer" => Some(Self::Layer),
            "coeff" => Some(Self::Coeff),
            _ => None,
        }
    }
}

/// What the chart's vertical axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// exp(mean loss steered − mean loss unsteered); 1 means no change.
    #[default]
    PplRatio,
    /// Mean KL(steered ‖ unsteered) of the next-token distributions, in nats.
    Kl,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PplRatio => "ppl_ratio",
            Self::Kl => "kl",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ppl_ratio" => Some(Self::PplRatio),
            "kl" => Some(Self::Kl),
            _ => None,
        }
    }
    /// The axis label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PplRatio => "perplexity ratio (steered / unsteered)",
            Self::Kl => "KL(steered ‖ unsteered), nats",
        }
    }
    /// The value a row reports for this metric.
    pub fn of(self, row: &tiller_core::sweep::SweepRow) -> f64 {
        match self {
            Self::PplRatio => row.ppl_ratio,
            Self::Kl => row.kl,
        }
    }
}

/// The default evaluation sets, after the ActAdd post's wedding study: texts about weddings,
/// and texts about anything else.
pub fn default_sets() -> Vec<EvalSet> {
    let set = |name: &str, texts: &[&str]| EvalSet { name: name.into(), texts: texts.iter().map(|t| t.to_string()).collect() };
    vec![
        set(
            "related",
            &[
                "I went to a wedding last weekend and the ceremony was beautiful.",
                "The bride and groom exchanged vows in front of their families.",
                "We are planning our wedding reception for next June.",
                "She caught the bouquet at her sister's wedding.",
            ],
        ),
        set(
            "unrelated",
            &[
                "The train to the city leaves every morning at seven.",
                "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
                "He fixed the leaking kitchen tap with a new washer.",
                "The committee will publish its report on Friday.",
            ],
        ),
    ]
}

/// The default coefficient multipliers: 0 (the unsteered model: ratio exactly 1), the recipe
/// as written, and twice and four times as strong.
pub const DEFAULT_COEFFS: [f32; 4] = [0.0, 1.0, 2.0, 4.0];

/// What a share link records of the sweep panel. Every field has a default, so links from
/// before a field existed still open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepSettings {
    pub sets: Vec<EvalSet>,
    /// First and last layer (inclusive); `None`: every layer of whatever model is loaded.
    pub layers: Option<(usize, usize)>,
    pub coeffs: Vec<f32>,
    pub x: XAxis,
    pub metric: Metric,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self { sets: default_sets(), layers: None, coeffs: DEFAULT_COEFFS.to_vec(), x: XAxis::Layer, metric: Metric::PplRatio }
    }
}

/// One evaluation set as typed: a name and a textarea, one text per line.
#[derive(Debug, Clone, PartialEq)]
pub struct SetRow {
    /// Stable key for the list (not part of the settings).
    pub id: u32,
    pub name: String,
    pub texts: String,
}

impl SetRow {
    /// The non-empty lines of the textarea, trimmed.
    pub fn lines(&self) -> Vec<String> {
        self.texts.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    }
}

/// The panel's state as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepForm {
    pub sets: Vec<SetRow>,
    pub next_id: u32,
    pub layer_from: String,
    pub layer_to: String,
    pub coeffs: String,
    pub x: XAxis,
    pub metric: Metric,
}

/// The panel's settings once they parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub sets: Vec<EvalSet>,
    pub layers: (usize, usize),
    pub coeffs: Vec<f32>,
}

fn num(x: f32) -> String {
    format!("{x}")
}

impl SweepForm {
    /// The form a share link's settings describe, for a model with `depth` layers.
    pub fn from_settings(s: &SweepSettings, depth: usize) -> Self {
        let (from, to) = s.layers.unwrap_or((0, depth.saturating_sub(1)));
        let mut form = Self {
            sets: Vec::new(),
            next_id: 0,
            layer_from: from.to_string(),
            layer_to: to.to_string(),
            coeffs: s.coeffs.iter().map(|&c| num(c)).collect::<Vec<_>>().join(","),
            x: s.x,
            metric: s.metric,
        };
        for set in &s.sets {
            form.add_set(&set.name, &set.texts.join("\n"));
        }
        form
    }

    /// The defaults for a model with `depth` layers: every layer.
    pub fn new(depth: usize) -> Self {
        Self::from_settings(&SweepSettings::default(), depth)
    }

    pub fn add_set(&mut self, name: &str, texts: &str) {
        self.sets.push(SetRow { id: self.next_id, name: name.into(), texts: texts.into() });
        self.next_id += 1;
    }

    pub fn set_mut(&mut self, id: u32) -> Option<&mut SetRow> {
        self.sets.iter_mut().find(|s| s.id == id)
    }

    /// Whether the range is every layer of a `depth`-layer model.
    fn is_all_layers(&self, depth: usize) -> bool {
        self.layer_from.trim() == "0" && self.layer_to.trim() == depth.saturating_sub(1).to_string()
    }

    /// A range that covered every layer of the old model covers every layer of the new one.
    pub fn follow_depth(&mut self, old: usize, new: usize) {
        if old != new && self.is_all_layers(old) {
            self.layer_to = new.saturating_sub(1).to_string();
        }
    }

    /// The settings, or every problem found, each as a sentence; `depth` bounds the layers.
    pub fn parse(&self, depth: usize) -> Result<Parsed, Vec<String>> {
        let mut errors = Vec::new();
        let mut sets: Vec<EvalSet> = Vec::new();
        if self.sets.is_empty() {
            errors.push("there is no evaluation set: add one (a name and a few texts, one per line)".into());
        }
        if self.sets.len() > MAX_SETS {
            errors.push(format!("there are {} evaluation sets: the chart shows at most {MAX_SETS}", self.sets.len()));
        }
        for (i, row) in self.sets.iter().enumerate() {
            let name = row.name.trim();
            let texts = row.lines();
            if name.is_empty() {
                errors.push(format!("evaluation set {} has no name: name it (it labels the chart and the CSV)", i + 1));
            } else if sets.iter().any(|s| s.name == name) {
                errors.push(format!("two evaluation sets are named `{name}`: give each its own name"));
            }
            if texts.is_empty() {
                let which = if name.is_empty() { format!("evaluation set {}", i + 1) } else { format!("evaluation set `{name}`") };
                errors.push(format!("{which} has no texts: write one text per line"));
            }
            sets.push(EvalSet { name: name.to_string(), texts });
        }

        let layer = |text: &str, what: &str, errors: &mut Vec<String>| -> Option<usize> {
            let parsed = text.trim().parse::<usize>().ok();
            if parsed.is_none() {
                errors.push(format!("the {what} layer `{}` is not a whole number ≥ 0", text.trim()));
            }
            parsed
        };
        let from = layer(&self.layer_from, "first", &mut errors);
        let to = layer(&self.layer_to, "last", &mut errors);
        let last = depth.saturating_sub(1);
        if let (Some(a), Some(b)) = (from, to) {
            if let Some(out) = [a, b].into_iter().find(|&l| l >= depth) {
                errors.push(format!("layer {out} is out of range: this model has layers 0..{last}"));
            } else if a > b {
                errors.push(format!("the layer range {a}..{b} is backwards: the first layer must not come after the last"));
            }
        }

        let coeffs = parse_coeffs(&self.coeffs).map_err(|e| errors.push(e)).ok();
        match (errors.is_empty(), from, to, coeffs) {
            (true, Some(a), Some(b), Some(coeffs)) => Ok(Parsed { sets, layers: (a, b), coeffs }),
            _ => Err(errors),
        }
    }

    /// What a share link records: `None` when the panel holds its defaults (links stay short),
    /// an error when the settings do not parse.
    pub fn to_settings(&self, depth: usize) -> Result<Option<SweepSettings>, Vec<String>> {
        let p = self.parse(depth)?;
        let layers = if self.is_all_layers(depth) { None } else { Some(p.layers) };
        let s = SweepSettings { sets: p.sets, layers, coeffs: p.coeffs, x: self.x, metric: self.metric };
        Ok((s != SweepSettings::default()).then_some(s))
    }

    /// The sweep of the editor's terms (their layers are replaced by each swept layer), or
    /// every problem found in the panel and the terms.
    pub fn to_spec(&self, editor: &Form, depth: usize) -> Result<SweepSpec, Vec<String>> {
        let mut errors = Vec::new();
        let mut terms = Vec::new();
        if editor.terms.is_empty() {
            errors.push("the steering recipe has no terms: add one (or a pair) in the editor; the sweep moves them to each layer".into());
        }
        for (i, row) in editor.terms.iter().enumerate() {
            match row.coeff.trim().parse::<f32>() {
                Ok(c) if c.is_finite() && c.abs() <= MAX_COEFF => {
                    terms.push(Term { layer: 0, coeff: c, text: row.text.clone(), head: None })
                }
                _ => {
                    let label = if row.text.is_empty() { format!("term {} (empty text)", i + 1) } else { format!("term `{}`", row.text) };
                    errors.push(format!("the coefficient of {label} `{}` is not a number: fix it in the editor", row.coeff.trim()));
                }
            }
        }
        let parsed = self.parse(depth).map_err(|e| errors.extend(e)).ok();
        match (errors.is_empty(), parsed) {
            (true, Some(p)) => Ok(SweepSpec {
                terms,
                bos: editor.bos,
                site: editor.site,
                layers: (p.layers.0..=p.layers.1).collect(),
                coeffs: p.coeffs,
                sets: p.sets,
            }),
            _ => Err(errors),
        }
    }
}

/// `0, 1, 2.5,-4` → numbers; a stray trailing comma is fine.
pub fn parse_coeffs(text: &str) -> Result<Vec<f32>, String> {
    const HINT: &str = "write numbers separated by commas, e.g. 0,1,2,4";
    let mut out: Vec<f32> = Vec::new();
    for piece in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let c: f32 = piece.parse().map_err(|_| format!("`{piece}` in the coefficient list is not a number: {HINT}"))?;
        if !c.is_finite() || c.abs() > MAX_COEFF {
            return Err(format!("coefficient {piece} is not usable: use numbers between -{MAX_COEFF} and {MAX_COEFF}"));
        }
        if out.contains(&c) {
            return Err(format!("coefficient {piece} appears twice in the list: keep one"));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(format!("the coefficient list is empty: {HINT}"));
    }
    if out.len() > MAX_COEFFS {
        return Err(format!("the coefficient list has {} numbers: use at most {MAX_COEFFS}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_every_layer_and_parse() {
        let f = SweepForm::new(12);
        assert_eq!((f.layer_from.as_str(), f.layer_to.as_str()), ("0", "11"));
        let p = f.parse(12).unwrap();
        assert_eq!(p.layers, (0, 11));
        assert_eq!(p.coeffs, DEFAULT_COEFFS.to_vec());
        assert_eq!(p.sets.len(), 2);
        assert_eq!(f.to_settings(12), Ok(None), "defaults are left out of share links");
    }

    #[test]
    fn all_layers_follows_the_model() {
        let mut f = SweepForm::new(48);
        f.follow_depth(48, 4);
        assert_eq!(f.layer_to, "3");
        f.layer_from = "1".into();
        f.follow_depth(4, 12);
        assert_eq!(f.layer_to, "3", "a chosen range is kept");
    }

    #[test]
    fn bad_input_is_sentences() {
        let mut f = SweepForm::new(4);
        f.coeffs = "0, 1, x".into();
        f.layer_to = "7".into();
        f.sets[1].texts = "  \n ".into();
        f.sets[0].name = String::new();
        let e = f.parse(4).unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e.iter().any(|m| m.contains("set 1 has no name")));
        assert!(e.iter().any(|m| m.contains("`unrelated` has no texts")));
        assert!(e.iter().any(|m| m.contains("layer 7 is out of range: this model has layers 0..3")));
        assert!(e.iter().any(|m| m.contains("`x` in the coefficient list is not a number")));
        assert!(parse_coeffs("").unwrap_err().contains("empty"));
        assert!(parse_coeffs("1,1").unwrap_err().contains("twice"));
        assert!(parse_coeffs("inf").unwrap_err().contains("not usable"));
        assert_eq!(parse_coeffs("0, -1.5,2,"), Ok(vec![0.0, -1.5, 2.0]));
        let mut f = SweepForm::new(4);
        f.layer_from = "3".into();
        f.layer_to = "1".into();
        assert!(f.parse(4).unwrap_err()[0].contains("backwards"));
    }

    #[test]
    fn spec_takes_the_editors_terms_at_each_layer() {
        let mut f = SweepForm::new(4);
        f.layer_from = "1".into();
        f.coeffs = "0,2".into();
        let editor = Form::default();
        let spec = f.to_spec(&editor, 4).unwrap();
        assert_eq!(spec.layers, vec![1, 2, 3]);
        assert_eq!(spec.coeffs, vec![0.0, 2.0]);
        assert_eq!(spec.terms.iter().map(|t| (t.text.as_str(), t.coeff)).collect::<Vec<_>>(), [("Love", 5.0), ("Hate", -5.0)]);
        let mut editor = Form::default();
        editor.terms.clear();
        assert!(f.to_spec(&editor, 4).unwrap_err()[0].contains("no terms"));
    }

    #[test]
    fn settings_round_trip_through_the_form() {
        let mut f = SweepForm::new(4);
        f.layer_from = "1".into();
        f.coeffs = "0, 3".into();
        f.x = XAxis::Coeff;
        f.metric = Metric::Kl;
        f.add_set("mine", "one text\n\nanother text\n");
        let s = f.to_settings(4).unwrap().unwrap();
        assert_eq!(s.layers, Some((1, 3)));
        assert_eq!(s.sets[2].texts, vec!["one text", "another text"]);
        let back = SweepForm::from_settings(&s, 4);
        assert_eq!(back.to_settings(4).unwrap().unwrap(), s);
        assert_eq!(back.coeffs, "0,3");
        // Old links without the field, or with only some of it.
        let partial: SweepSettings = serde_json::from_str(r#"{"coeffs":[0,1]}"#).unwrap();
        assert_eq!(partial.sets, default_sets());
        assert_eq!(partial.x, XAxis::Layer);
    }
}
