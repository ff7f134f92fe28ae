//! A steering recipe: everything that determines a run, shared by the CLI, the page and share
//! links (serde). Validation turns every bad setting into a sentence that says what to change.

use serde::{Deserialize, Serialize};

use crate::arch::ModelSpec;
use crate::backend::Site;
use crate::error::{Result, TillerError};

/// One ActAdd term: add `coeff` × (activations of `text`) before block `layer`; or, with
/// `head`, to that attention head's output (its slice of site `z`, the output projection's
/// input), the text's activation read there too: per-head steering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub layer: usize,
    pub coeff: f32,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<usize>,
}

impl Term {
    /// Parses `L:C:TEXT`, splitting on the first two colons (TEXT may hold colons and spaces;
    /// C may be signed: `6:-5:Hate`); `L.H:C:TEXT` steers head H of layer L.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut parts = spec.splitn(3, ':');
        let (Some(l), Some(c), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TillerError::recipe(format!(
                "`{spec}` is not LAYER:COEFF:TEXT (for example `6:5:Love` or `6:-5:Hate`; `6.3:5:Love` steers head 3 of layer 6)"
            )));
        };
        let not_layer = || TillerError::recipe(format!("`{l}` in `{spec}` is not a layer number (or LAYER.HEAD)"));
        let (layer, head) = match l.trim().split_once('.') {
            Some((l, h)) => (l.parse().map_err(|_| not_layer())?, Some(h.parse().map_err(|_| not_layer())?)),
            None => (l.trim().parse().map_err(|_| not_layer())?, None),
        };
        let coeff: f32 = c.trim().parse().map_err(|_| TillerError::recipe(format!("`{c}` in `{spec}` is not a coefficient")))?;
        Ok(Self { layer, coeff, text: text.to_string(), head })
    }
}

/// A saved vector × coefficient at a layer (a library vector in the page, CAA's way of
/// steering): `coeff · values` added at `site` of `layer`, at `positions` (CAA: `all`).
/// Values are f16-exact, and travel in JSON as base64 of their little-endian f16 bits, so a
/// share link carries them compactly and reproduces them to the bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorTerm {
    pub name: String,
    pub layer: usize,
    pub coeff: f32,
    #[serde(default)]
    pub site: Site,
    #[serde(default = "all_positions")]
    pub positions: Positions,
    #[serde(with = "f16_base64")]
    pub values: Vec<f32>,
    /// One attention head's output (site `z`, head size values): per-head steering, ITI's shifts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<usize>,
}

fn all_positions() -> Positions {
    Positions::All
}

impl VectorTerm {
    /// A term whose values are rounded to f16 (what a link can carry exactly).
    pub fn new(name: &str, layer: usize, coeff: f32, site: Site, positions: Positions, values: &[f32]) -> Self {
        let values = values.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        Self { name: name.to_string(), layer, coeff, site, positions, values, head: None }
    }

    /// A term on head `head` of `layer` (site `z`), its values rounded to f16.
    pub fn on_head(name: &str, layer: usize, head: usize, coeff: f32, positions: Positions, values: &[f32]) -> Self {
        Self { head: Some(head), ..Self::new(name, layer, coeff, Site::Z, positions, values) }
    }
}

/// `Vec<f32>` as base64 (standard alphabet) of little-endian f16 bits.
mod f16_base64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = values.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text.as_bytes()).map_err(|_| serde::de::Error::custom("a vector's values are not base64"))?;
        if bytes.len() % 2 != 0 {
            return Err(serde::de::Error::custom("a vector's values are not whole f16 numbers"));
        }
        Ok(bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect())
    }
}

/// At most this many saved-vector terms in a recipe.
pub const MAX_VECTOR_TERMS: usize = 16;

/// Which positions receive the steering vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// ActAdd: the [n, C] tensor at the prompt's positions 0..n, once, on the prompt pass.
    #[default]
    Front,
    /// CAA-style: one vector (each term's last token) added at every position, generated ones too.
    All,
    /// Function-vector style: that vector at the last position of every step.
    Last,
}

impl Positions {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "front" => Some(Self::Front),
            "all" => Some(Self::All),
            "last" => Some(Self::Last),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Front => "front",
            Self::All => "all",
            Self::Last => "last",
        }
    }
}

/// How the next token is chosen. Defaults are the ActAdd post's: temperature 1, top-p 0.3,
/// frequency penalty 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub temperature: f32,
    /// 0 turns top-k off.
    pub top_k: usize,
    /// 1 turns top-p off.
    pub top_p: f32,
    /// Subtracted from a logit once per occurrence of the token in the generated text.
    pub freq_penalty: f32,
    /// Hugging Face's repetition penalty (1 = off) over prompt and generated tokens.
    pub rep_penalty: f32,
    pub greedy: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: 0, top_p: 0.3, freq_penalty: 1.0, rep_penalty: 1.0, greedy: false }
    }
}

impl Sampling {
    /// Plain argmax, as Hugging Face's greedy decoding (no penalties).
    pub fn greedy() -> Self {
        Self { greedy: true, freq_penalty: 0.0, ..Self::default() }
    }

    /// Numbers a sampler can use: temperature in (0, 100], top-p in (0, 1], penalties finite.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TillerError::recipe(m));
        let s = self;
        if !(s.temperature.is_finite() && s.temperature > 0.0 && s.temperature <= 100.0) {
            return bad(format!("temperature {} must be between 0 (exclusive) and 100; use greedy for argmax", s.temperature));
        }
        if !(s.top_p.is_finite() && s.top_p > 0.0 && s.top_p <= 1.0) {
            return bad(format!("top-p {} must be in (0, 1]", s.top_p));
        }
        if !s.freq_penalty.is_finite() || s.freq_penalty.abs() > 100.0 {
            return bad(format!("frequency penalty {} must be a finite number between -100 and 100", s.freq_penalty));
        }
        if !(s.rep_penalty.is_finite() && s.rep_penalty > 0.0 && s.rep_penalty <= 100.0) {
            return bad(format!("repetition penalty {} must be in (0, 100] (1 turns it off)", s.rep_penalty));
        }
        Ok(())
    }

    /// How a completion drawn this way was decoded, in words ("greedy", or the settings and seed).
    pub fn describe(&self, seed: u64) -> String {
        if self.greedy {
            let pens = [
                (self.freq_penalty != 0.0, format!("frequency penalty {}", self.freq_penalty)),
                (self.rep_penalty != 1.0, format!("repetition penalty {}", self.rep_penalty)),
            ];
            let pens: Vec<String> = pens.into_iter().filter(|(on, _)| *on).map(|(_, t)| t).collect();
            return if pens.is_empty() { "greedy".into() } else { format!("greedy, {}", pens.join(", ")) };
        }
        let top_k = if self.top_k == 0 { "top-k off".to_string() } else { format!("top-k {}", self.top_k) };
        let mut t =
            format!("sampled: temperature {}, top-p {}, {top_k}, frequency penalty {}", self.temperature, self.top_p, self.freq_penalty);
        if self.rep_penalty != 1.0 {
            t.push_str(&format!(", repetition penalty {}", self.rep_penalty));
        }
        t.push_str(&format!(", seed {seed}"));
        t
    }
}

/// The largest coefficient magnitude accepted; the post's examples stay under 20.
pub const MAX_COEFF: f32 = 10_000.0;
/// At most this many comparisons (each is an unsteered and a steered completion).
pub const MAX_COMPARISONS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    pub prompt: String,
    pub terms: Vec<Term>,
    /// Saved vectors to steer with, beside the text terms (absent from links without any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vectors: Vec<VectorTerm>,
    /// Prepend the tokenizer's BOS to the prompt and the steering texts (the CLI's default is
    /// what the tokenizer's own post-processor does: on for Llama 3, off for GPT-2).
    pub bos: bool,
    /// Render the prompt as the user message of the model's chat template (with the generation
    /// prompt), after `system` when it is not empty. The template writes its own BOS.
    pub chat: bool,
    pub system: String,
    /// With chat on, render each steering text through the chat template too, as the prompt is
    /// (steer::TextEncoding); off, they are raw text (BOS first when `bos` is on).
    pub chat_terms: bool,
    pub positions: Positions,
    pub site: Site,
    pub sampling: Sampling,
    pub seed: u64,
    /// Number of comparisons: n unsteered and n steered completions.
    pub n: usize,
    pub max_new_tokens: usize,
    pub stop_at_eot: bool,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            terms: Vec::new(),
            vectors: Vec::new(),
            bos: false,
            chat: false,
            system: String::new(),
            chat_terms: false,
            positions: Positions::Front,
            site: Site::ResidPre,
            sampling: Sampling::default(),
            seed: 0,
            n: 3,
            max_new_tokens: 50,
            stop_at_eot: false,
        }
    }
}

/// Steering vectors have the residual's width, so they go at `resid_pre`, `attn_out` or
/// `mlp_out`; `z` (the heads before the output projection) is for per-head hooks.
pub fn check_site(site: Site) -> Result<()> {
    if Site::RESIDUAL.contains(&site) {
        return Ok(());
    }
    Err(TillerError::recipe(format!(
        "steering vectors go at resid_pre, attn_out or mlp_out, not {} (the attention heads before their output projection)",
        site.as_str()
    )))
}

impl Recipe {
    /// Checks the settings that do not need the tokenizer against a model's shapes.
    pub fn validate(&self, cfg: &ModelSpec) -> Result<()> {
        let bad = |m: String| Err(TillerError::recipe(m));
        check_site(self.site)?;
        for t in &self.terms {
            if t.layer >= cfg.n_layer {
                return bad(format!("layer {} is out of range: this model has layers 0..{} (term `{}`)", t.layer, cfg.n_layer - 1, t.text));
            }
            if !t.coeff.is_finite() || t.coeff.abs() > MAX_COEFF {
                return bad(format!(
                    "coefficient {} for `{}` is not usable: use a finite number between -{MAX_COEFF} and {MAX_COEFF}",
                    t.coeff, t.text
                ));
            }
            if let Some(h) = t.head.filter(|&h| h >= cfg.n_head) {
                return bad(format!(
                    "head {h} of the term `{}` is out of range: this model has heads 0..{} per layer",
                    t.text,
                    cfg.n_head - 1
                ));
            }
        }
        if self.vectors.len() > MAX_VECTOR_TERMS {
            return bad(format!("a recipe takes at most {MAX_VECTOR_TERMS} vector terms, not {}", self.vectors.len()));
        }
        for v in &self.vectors {
            let width = match v.head {
                None => {
                    check_site(v.site)?;
                    cfg.n_embd
                }
                Some(h) if v.site != Site::Z => {
                    return bad(format!("the vector `{}` names head {h}, so its site is z, not {}", v.name, v.site.as_str()))
                }
                Some(h) if h >= cfg.n_head => {
                    return bad(format!(
                        "head {h} of the vector `{}` is out of range: this model has heads 0..{} per layer",
                        v.name,
                        cfg.n_head - 1
                    ))
                }
                Some(_) => cfg.head_dim,
            };
            if v.layer >= cfg.n_layer {
                return bad(format!(
                    "layer {} of the vector `{}` is out of range: this model has layers 0..{}",
                    v.layer,
                    v.name,
                    cfg.n_layer - 1
                ));
            }
            if !v.coeff.is_finite() || v.coeff.abs() > MAX_COEFF {
                return bad(format!(
                    "coefficient {} for the vector `{}` is not usable: use a finite number between -{MAX_COEFF} and {MAX_COEFF}",
                    v.coeff, v.name
                ));
            }
            if v.values.len() != width {
                let what = if v.head.is_some() { "a head's output" } else { "this model's residual stream" };
                return bad(format!(
                    "the vector `{}` is {} wide but {what} is {width}: it was made on another model",
                    v.name,
                    v.values.len(),
                ));
            }
            if v.values.iter().any(|x| !x.is_finite()) {
                return bad(format!("the vector `{}` holds values that are not finite numbers", v.name));
            }
        }
        self.sampling.validate()?;
        if self.n == 0 || self.n > MAX_COMPARISONS {
            return bad(format!("the number of comparisons must be 1..={MAX_COMPARISONS}, got {}", self.n));
        }
        if self.max_new_tokens >= cfg.n_positions {
            return bad(format!("{} new tokens cannot fit a context of {}", self.max_new_tokens, cfg.n_positions));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_terms_round_trip_as_f16_base64_and_are_checked() {
        let v = VectorTerm::new("love", 2, 4.0, Site::ResidPre, Positions::All, &[0.1, -2.0, 65504.0, 1e-8]);
        assert_eq!(v.values[1], -2.0);
        assert_eq!(v.values[0], half::f16::from_f32(0.1).to_f32());
        let r = Recipe { prompt: "a".into(), vectors: vec![v.clone()], ..Recipe::default() };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"values\":\""), "{json}");
        let back: Recipe = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // Links without vectors neither write nor need the field; positions default to all.
        assert!(!serde_json::to_string(&Recipe::default()).unwrap().contains("vectors"));
        let minimal: VectorTerm = serde_json::from_str(r#"{"name":"x","layer":1,"coeff":2,"values":"ADw="}"#).unwrap();
        assert_eq!((minimal.positions, minimal.site, minimal.values.clone()), (Positions::All, Site::ResidPre, vec![1.0]));
        assert!(serde_json::from_str::<VectorTerm>(r#"{"name":"x","layer":1,"coeff":2,"values":"AD"}"#).is_err());
        assert!(serde_json::from_str::<VectorTerm>(r#"{"name":"x","layer":1,"coeff":2,"values":"!!"}"#).is_err());
        let cfg = ModelSpec::gpt2(4, 8, 2, 128, 10);
        let err = |v: VectorTerm| Recipe { vectors: vec![v], ..Recipe::default() }.validate(&cfg).unwrap_err().to_string();
        assert!(err(v.clone()).contains("4 wide but this model's residual stream is 8"), "{}", err(v.clone()));
        let ok = VectorTerm::new("ok", 3, 1.0, Site::MlpOut, Positions::Last, &[1.0; 8]);
        assert!(Recipe { vectors: vec![ok.clone()], ..Recipe::default() }.validate(&cfg).is_ok());
        assert!(err(VectorTerm { layer: 4, ..ok.clone() }).contains("out of range"));
        assert!(err(VectorTerm { coeff: f32::INFINITY, ..ok.clone() }).contains("not usable"));
        assert!(err(VectorTerm { site: Site::Z, ..ok }).contains("steering vectors go at"));
    }
}
