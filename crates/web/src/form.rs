//! The steering editor's state as the user types it (numbers kept as text so a half-typed
//! value is not lost), its conversion to a [`Recipe`] with every problem as a sentence, and
//! the inline warnings that need token counts.

use serde::{Deserialize, Serialize};
use tiller_core::recipe::VectorTerm;
use tiller_core::{ModelSpec, Positions, Recipe, Sampling, Site, Term};

/// One row of the terms list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TermRow {
    /// Stable key for the list (not part of the recipe).
    pub id: u32,
    pub text: String,
    pub layer: String,
    pub coeff: String,
    /// The attention head the term steers (from a link or the CLI's `L.H:C:TEXT`), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<usize>,
}

/// Everything the editor holds (kept in local storage as typed, so a reload loses nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Form {
    pub prompt: String,
    pub terms: Vec<TermRow>,
    /// Saved vectors steering beside the text terms (from a share link, or the vector workbench).
    #[serde(default)]
    pub vectors: Vec<VectorTerm>,
    pub next_id: u32,
    pub bos: bool,
    /// Render the prompt through the model's chat template.
    pub chat: bool,
    pub system: String,
    /// With chat on, render the steering texts through the template too.
    pub chat_terms: bool,
    pub positions: Positions,
    pub site: Site,
    pub temperature: String,
    pub top_p: String,
    pub top_k: String,
    pub freq_penalty: String,
    pub rep_penalty: String,
    pub greedy: bool,
    pub n: String,
    pub max_tokens: String,
    pub seed: String,
    pub stop_at_eot: bool,
}

impl Default for Form {
    fn default() -> Self {
        let mut recipe = Recipe { prompt: "I hate you because".into(), n: 3, max_new_tokens: 40, ..Recipe::default() };
        recipe.terms = vec![
            Term { layer: 6, coeff: 5.0, text: "Love".into(), head: None },
            Term { layer: 6, coeff: -5.0, text: "Hate".into(), head: None },
        ];
        Self::from_recipe(&recipe)
    }
}

fn num(x: f32) -> String {
    // Shortest text that reads back as the same f32.
    format!("{x}")
}

impl Form {
    /// Adds a vector file's layers as vector terms (coefficient 1, every position, at the
    /// file's site): a `tiller vector` safetensors file or a llama.cpp GGUF control vector.
    /// Returns what was added, as a sentence; on an error the form is unchanged.
    pub fn import_vector_file(&mut self, bytes: &[u8], file_name: &str) -> Result<String, String> {
        let stem = file_name.rsplit_once('.').map_or(file_name, |(s, _)| s);
        let entry = tiller_core::library::VectorEntry::from_bytes(bytes, stem).map_err(|e| format!("{file_name}: {e}"))?;
        self.add_vector_entry(&entry).map_err(|e| format!("{file_name} {e}"))
    }

    /// Adds a library entry's layers as vector terms (coefficient 1, every position, at the
    /// entry's site). Returns what was added, as a sentence; on an error (which reads after the
    /// entry's name or file name) the form is unchanged.
    pub fn add_vector_entry(&mut self, entry: &tiller_core::library::VectorEntry) -> Result<String, String> {
        use tiller_core::recipe::MAX_VECTOR_TERMS;
        let room = MAX_VECTOR_TERMS - self.vectors.len().min(MAX_VECTOR_TERMS);
        if entry.layers.len() > room {
            return Err(format!(
                "holds vectors for {} layers, but the recipe has room for {room} more vector terms (at most {MAX_VECTOR_TERMS}): remove some, or keep one layer with `tiller vector combine --layer`",
                entry.layers.len()
            ));
        }
        if entry.layers.is_empty() {
            return Err("holds no vectors".into());
        }
        // A function vector steers at the last position of every step (its entry says so).
        let positions = if entry.extra.get("positions").is_some_and(|p| p == "last") { Positions::Last } else { Positions::All };
        for l in &entry.layers {
            self.vectors.push(VectorTerm::new(&entry.name, l.layer, 1.0, entry.site, positions, &l.vector));
        }
        let layers: Vec<String> = entry.layers.iter().map(|l| l.layer.to_string()).collect();
        Ok(format!(
            "added “{}” ({} channels) at layer{} {} with coefficient 1: set each coefficient below",
            entry.name,
            entry.width(),
            if layers.len() == 1 { "" } else { "s" },
            layers.join(", ")
        ))
    }

    pub fn from_recipe(r: &Recipe) -> Self {
        let s = &r.sampling;
        let terms: Vec<TermRow> = r
            .terms
            .iter()
            .enumerate()
            .map(|(i, t)| TermRow { id: i as u32, text: t.text.clone(), layer: t.layer.to_string(), coeff: num(t.coeff), head: t.head })
            .collect();
        Self {
            prompt: r.prompt.clone(),
            next_id: terms.len() as u32,
            terms,
            vectors: r.vectors.clone(),
            bos: r.bos,
            chat: r.chat,
            system: r.system.clone(),
            chat_terms: r.chat_terms,
            positions: r.positions,
            site: r.site,
            temperature: num(s.temperature),
            top_p: num(s.top_p),
            top_k: s.top_k.to_string(),
            freq_penalty: num(s.freq_penalty),
            rep_penalty: num(s.rep_penalty),
            greedy: s.greedy,
            n: r.n.to_string(),
            max_tokens: r.max_new_tokens.to_string(),
            seed: r.seed.to_string(),
            stop_at_eot: r.stop_at_eot,
        }
    }

    pub fn add_term(&mut self, text: &str, layer: usize, coeff: f32) {
        self.terms.push(TermRow { id: self.next_id, text: text.to_string(), layer: layer.to_string(), coeff: num(coeff), head: None });
        self.next_id += 1;
    }

    /// Replaces the terms (presets, share links) keeping ids unique.
    pub fn set_terms(&mut self, terms: &[Term]) {
        self.terms.clear();
        for t in terms {
            self.add_term(&t.text, t.layer, t.coeff);
        }
    }

    pub fn term_mut(&mut self, id: u32) -> Option<&mut TermRow> {
        self.terms.iter_mut().find(|t| t.id == id)
    }

    /// The sampling settings and the seed as typed (the Sampling box), or every problem found.
    /// Discover's sampled completions use them as well as the recipe.
    pub fn sampling(&self) -> Result<(Sampling, u64), Vec<String>> {
        let mut errors = Vec::new();
        let temperature = parse(&mut errors, &self.temperature, "temperature", "a number");
        let top_p = parse(&mut errors, &self.top_p, "top-p", "a number in (0, 1]");
        let top_k = parse(&mut errors, &self.top_k, "top-k", "a whole number (0 = off)");
        let freq_penalty = parse(&mut errors, &self.freq_penalty, "frequency penalty", "a number");
        let rep_penalty = parse(&mut errors, &self.rep_penalty, "repetition penalty", "a number (1 = off)");
        let seed = parse(&mut errors, &self.seed, "the seed", "a whole number ≥ 0");
        let (Some(temperature), Some(top_p), Some(top_k), Some(freq_penalty), Some(rep_penalty), Some(seed)) =
            (temperature, top_p, top_k, freq_penalty, rep_penalty, seed)
        else {
            return Err(errors);
        };
        let sampling = Sampling { temperature, top_k, top_p, freq_penalty, rep_penalty, greedy: self.greedy };
        sampling.validate().map_err(|e| vec![e.to_string()])?;
        Ok((sampling, seed))
    }

    /// The recipe, or every problem found, each as a sentence. `n_layer` bounds layers when a
    /// model is loaded.
    pub fn to_recipe(&self, cfg: Option<&ModelSpec>) -> Result<Recipe, Vec<String>> {
        let mut errors = Vec::new();
        let mut terms = Vec::new();
        for (i, row) in self.terms.iter().enumerate() {
            let label = if row.text.is_empty() { format!("term {} (empty text)", i + 1) } else { format!("term `{}`", row.text) };
            let layer: Option<usize> = parse(&mut errors, &row.layer, &format!("the layer of {label}"), "a whole number ≥ 0");
            let coeff: Option<f32> = parse(&mut errors, &row.coeff, &format!("the coefficient of {label}"), "a number");
            if let (Some(layer), Some(coeff)) = (layer, coeff) {
                terms.push(Term { layer, coeff, text: row.text.clone(), head: row.head });
            }
        }
        let sampling = self.sampling();
        let n = parse(&mut errors, &self.n, "the number of comparisons", "a whole number");
        let max_new_tokens = parse(&mut errors, &self.max_tokens, "max tokens", "a whole number");
        if self.prompt.is_empty() && !self.bos {
            errors.push("the prompt is empty: type a prompt (or turn BOS on)".into());
        }
        if self.terms.is_empty() && self.vectors.is_empty() {
            errors.push("there are no steering terms: add one (or a pair) to compare steered with unsteered text".into());
        }
        let sampling = match sampling {
            Ok(s) => Some(s),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some((sampling, seed)), Some(n), Some(max_new_tokens)) = (sampling, n, max_new_tokens) else {
            return Err(vec!["a setting is not a number".into()]);
        };
        let recipe = Recipe {
            prompt: self.prompt.clone(),
            terms,
            vectors: self.vectors.clone(),
            bos: self.bos,
            positions: self.positions,
            site: self.site,
            sampling,
            seed,
            n,
            max_new_tokens,
            stop_at_eot: self.stop_at_eot,
            chat: self.chat,
            system: self.system.clone(),
            chat_terms: self.chat_terms,
        };
        if max_new_tokens == 0 {
            return Err(vec!["max tokens is 0: ask for at least one new token".into()]);
        }
        // Before a model is loaded, check against GPT-2's context and the deepest GPT-2 (a
        // vector's width is checked once the model says what it is).
        let loaded = cfg.is_some();
        let cfg =
            cfg.copied().or_else(|| ModelSpec::gpt2_preset("gpt2-xl")).ok_or_else(|| vec!["internal: no gpt2-xl preset".to_string()])?;
        if loaded {
            recipe.validate(&cfg).map_err(|e| vec![e.to_string()])?;
        } else {
            let unsized_vectors = Recipe {
                vectors: recipe.vectors.iter().map(|v| VectorTerm { values: vec![0.0; cfg.n_embd], ..v.clone() }).collect(),
                ..recipe.clone()
            };
            unsized_vectors.validate(&cfg).map_err(|e| vec![e.to_string()])?;
        }
        Ok(recipe)
    }
}

fn parse<T: std::str::FromStr>(errors: &mut Vec<String>, text: &str, what: &str, hint: &str) -> Option<T> {
    match text.trim().parse::<T>() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(format!("{what} `{}` is not {hint}", text.trim()));
            None
        }
    }
}

/// Token counts from the worker for the current form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenCounts {
    pub prompt: usize,
    /// Per term row, in order.
    pub terms: Vec<usize>,
    /// The prompt rendered through the chat template (chat on), as the model reads it.
    pub prompt_text: Option<String>,
}

/// The inline warnings for a recipe, given the token counts of its prompt and terms (BOS
/// included when on) and the model's context.
pub fn warnings(recipe: &Recipe, counts: &TokenCounts, n_positions: usize) -> Vec<String> {
    let mut out = Vec::new();
    if counts.terms.len() != recipe.terms.len() {
        return out;
    }
    let mut layers: Vec<usize> = recipe.terms.iter().map(|t| t.layer).collect();
    layers.sort_unstable();
    layers.dedup();
    for layer in layers {
        let group: Vec<(&Term, usize)> =
            recipe.terms.iter().zip(&counts.terms).filter(|(t, _)| t.layer == layer).map(|(t, &n)| (t, n)).collect();
        let n = group.iter().map(|g| g.1).max().unwrap_or(0);
        let padded: Vec<String> = group
            .iter()
            .filter(|(_, len)| *len < n)
            .map(|(t, len)| {
                let pad = n - len;
                format!("`{}` ({len} token{}) gets {pad} space{}", t.text, plural(*len), plural(pad))
            })
            .collect();
        if !padded.is_empty() {
            let sizes: Vec<String> = group.iter().map(|(t, len)| format!("`{}` = {len}", t.text)).collect();
            out.push(format!("Layer {layer}: terms are padded with spaces to {n} tokens ({}): {}.", sizes.join(", "), padded.join("; ")));
        }
        if recipe.positions == Positions::Front && n > counts.prompt {
            out.push(format!(
                "Layer {layer}: the steering text is {n} tokens but the prompt only {}: ActAdd adds it at the prompt's first {n} positions, so lengthen the prompt or shorten the text.",
                counts.prompt
            ));
        }
    }
    let total = counts.prompt + recipe.max_new_tokens;
    if total > n_positions {
        out.push(format!(
            "The prompt ({} tokens) plus {} new tokens exceeds the context of {n_positions}: shorten the prompt or ask for fewer tokens.",
            counts.prompt, recipe.max_new_tokens
        ));
    } else if total * 10 > n_positions * 9 {
        out.push(format!(
            "The prompt ({} tokens) plus {} new tokens is near the context limit of {n_positions}.",
            counts.prompt, recipe.max_new_tokens
        ));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampling_box_alone_reads_as_the_recipe_does() {
        let mut f = Form { terms: Vec::new(), prompt: String::new(), ..Form::default() };
        assert_eq!(f.sampling().unwrap(), (Sampling::default(), 0), "no terms or prompt needed");
        f.seed = "7".into();
        f.greedy = true;
        let (s, seed) = f.sampling().unwrap();
        assert!(s.greedy);
        assert_eq!(seed, 7);
        f.temperature = "0".into();
        f.seed = "-1".into();
        let e = f.sampling().unwrap_err();
        assert_eq!(e, vec!["the seed `-1` is not a whole number ≥ 0".to_string()], "unparsed numbers first");
        f.seed = "1".into();
        let e = f.sampling().unwrap_err();
        assert!(e[0].contains("temperature 0 must be between 0 (exclusive) and 100"), "{e:?}");
    }

    #[test]
    fn default_form_is_love_hate_and_round_trips() {
        let f = Form::default();
        let r = f.to_recipe(None).unwrap();
        assert_eq!(r.terms.len(), 2);
        assert_eq!(r.sampling, Sampling::default());
        let back = Form::from_recipe(&r);
        assert_eq!(back.to_recipe(None).unwrap(), r);
    }

    #[test]
    fn vector_terms_ride_through_the_form() {
        let mut recipe = Form::default().to_recipe(None).unwrap();
        recipe.vectors = vec![VectorTerm::new("love", 3, 4.0, Site::ResidPre, Positions::All, &[0.1, -2.0, 3.3])];
        let form = Form::from_recipe(&recipe);
        // Before a model is loaded the width is not known; the layer and coefficient are checked.
        assert_eq!(form.to_recipe(None).unwrap(), recipe);
        let gpt2 = ModelSpec::gpt2_preset("gpt2").unwrap();
        let err = form.to_recipe(Some(&gpt2)).unwrap_err();
        assert!(err[0].contains("3 wide but this model's residual stream is 768"), "{err:?}");
        let mut only_vectors = form.clone();
        only_vectors.terms.clear();
        assert!(only_vectors.to_recipe(None).is_ok(), "a vector alone is a steering term");
        let json = serde_json::to_string(&form).unwrap();
        assert_eq!(serde_json::from_str::<Form>(&json).unwrap(), form);
    }

    #[test]
    fn vector_files_import_as_terms() {
        use tiller_core::library::{LayerEntry, VectorEntry};
        let entry = VectorEntry {
            name: "love".into(),
            method: "mean_diff".into(),
            site: Site::MlpOut,
            layers: vec![
                LayerEntry { layer: 2, vector: vec![0.5, -1.0, 2.0], front: None },
                LayerEntry { layer: 4, vector: vec![1.0, 0.25, -0.5], front: None },
            ],
            ..Default::default()
        };
        let mut form = Form::default();
        let said = form.import_vector_file(&entry.to_safetensors().unwrap(), "love.safetensors").unwrap();
        assert!(said.contains("“love” (3 channels) at layers 2, 4"), "{said}");
        assert_eq!(form.vectors.len(), 2);
        assert_eq!((form.vectors[1].layer, form.vectors[1].coeff, form.vectors[1].site), (4, 1.0, Site::MlpOut));
        assert_eq!(form.vectors[0].values, vec![0.5, -1.0, 2.0]);
        // GGUF: llama.cpp's direction.(L-1) is Tiller's layer L.
        let resid = VectorEntry { site: Site::ResidPre, ..entry.clone() };
        let (gguf, _) = resid.to_gguf("gpt2").unwrap();
        let mut g = Form::default();
        g.import_vector_file(&gguf, "love.gguf").unwrap();
        assert_eq!(g.vectors.iter().map(|v| v.layer).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(g.vectors[1].values, vec![1.0, 0.25, -0.5]);
        // Garbage and a full recipe are sentences, and leave the form as it was.
        let before = form.clone();
        let err = form.import_vector_file(b"not a vector file at all", "x.safetensors").unwrap_err();
        assert!(err.starts_with("x.safetensors: "), "{err}");
        for _ in 0..7 {
            form.import_vector_file(&entry.to_safetensors().unwrap(), "love.safetensors").unwrap();
        }
        let full = form.clone();
        let err = form.import_vector_file(&entry.to_safetensors().unwrap(), "love.safetensors").unwrap_err();
        assert!(err.contains("room for 0 more"), "{err}");
        assert_eq!(form, full);
        assert_ne!(before, full);
    }

    #[test]
    fn bad_numbers_are_sentences() {
        let mut f = Form { temperature: "hot".into(), ..Default::default() };
        f.terms[0].layer = "-1".into();
        let errs = f.to_recipe(None).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("temperature `hot`")));
        let cfg = ModelSpec::gpt2_preset("gpt2").unwrap();
        let mut f = Form::default();
        f.terms[0].layer = "12".into();
        assert!(f.to_recipe(Some(&cfg)).unwrap_err()[0].contains("out of range"));
    }

    #[test]
    fn warns_about_padding_short_prompts_and_context() {
        let mut r = Form::default().to_recipe(None).unwrap();
        r.terms[1].text = "I hate you".into();
        let w = warnings(&r, &TokenCounts { prompt: 2, terms: vec![1, 3], prompt_text: None }, 1024);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("padded") && w[0].contains("2 spaces"));
        assert!(w[1].contains("prompt only 2"));
        r.max_new_tokens = 1010;
        let w = warnings(&r, &TokenCounts { prompt: 20, terms: vec![1, 1], prompt_text: None }, 1024);
        assert!(w[0].contains("exceeds"), "{w:?}");
    }
}
