//! The Vectors area's plain logic (no DOM, so it is unit-tested natively): the pair dataset
//! form and its presets, turned into a [`BuildSpec`] for the worker; and the vector library
//! the page keeps (named entries, unique names, combinations by formula, cosine matrices).
//! `app::vectors` draws it and keeps the library in IndexedDB.

use serde::{Deserialize, Serialize};
use tiller_core::contrast::{Method, TokenChoice};
use tiller_core::library::{self, VectorEntry};
use tiller_core::pairs::{self, Pair};
use tiller_core::Site;

use crate::numbers::{check, NumKind};

/// A shipped pair set (`datasets/`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatasetPreset {
    pub id: &'static str,
    pub label: &'static str,
    pub text: &'static str,
}

pub const DATASETS: &[DatasetPreset] = &[
    DatasetPreset {
        id: "sentiment",
        label: "Sentiment (positive − negative), 16 pairs",
        text: include_str!("../../../datasets/sentiment.jsonl"),
    },
    DatasetPreset {
        id: "formality",
        label: "Formality (formal − casual), 16 pairs",
        text: include_str!("../../../datasets/formality.jsonl"),
    },
    DatasetPreset {
        id: "english-french",
        label: "English − French, 16 pairs",
        text: include_str!("../../../datasets/english-french.jsonl"),
    },
    DatasetPreset {
        id: "weddings",
        label: "Weddings (about − not about), 16 pairs",
        text: include_str!("../../../datasets/weddings.jsonl"),
    },
    DatasetPreset {
        id: "optimism-ab",
        label: "Optimism, CAA's A/B form, 12 items",
        text: include_str!("../../../datasets/optimism-ab.jsonl"),
    },
];

pub fn dataset_preset(id: &str) -> Option<&'static DatasetPreset> {
    DATASETS.iter().find(|d| d.id == id)
}

/// The pairs as the user gave them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DatasetText {
    /// JSON lines (or a JSON list) of pairs or CAA items.
    Jsonl { text: String },
    /// Two lists, one text per line: the i-th positive against the i-th negative.
    Lists { positive: String, negative: String },
}

impl DatasetText {
    pub fn parse(&self) -> Result<Vec<Pair>, String> {
        match self {
            DatasetText::Jsonl { text } => pairs::parse_dataset(text.as_bytes()),
            DatasetText::Lists { positive, negative } => pairs::from_lists(positive, negative),
        }
        .map_err(|e| e.to_string())
    }
}

/// What the worker needs to build a vector from pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildSpec {
    /// The entry's name in the library.
    pub name: String,
    /// The dataset's name, for provenance (a preset's id, a file's name, or "pasted pairs").
    pub dataset_name: String,
    pub dataset: DatasetText,
    /// One vector per layer, in order (one entry holds them all).
    pub layers: Vec<usize>,
    pub site: Site,
    pub method: Method,
    pub token: TokenChoice,
    pub bos: bool,
    /// Pair texts through the chat template (the editor's chat and chat-terms boxes).
    pub chat: bool,
    pub system: String,
    /// The last fraction of the pairs kept out of the vector.
    pub held_out: f64,
}

impl BuildSpec {
    /// The pairs the vector is made from (the held-out ones left out).
    pub fn training_pairs(&self) -> Result<Vec<Pair>, String> {
        let all = self.dataset.parse()?;
        Ok(pairs::split_held_out(&all, self.held_out).0.to_vec())
    }
}

/// The build form as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorForm {
    /// A preset's id, or "" for the user's own pairs.
    pub preset: String,
    pub lists: bool,
    pub jsonl: String,
    pub positive: String,
    pub negative: String,
    /// The name of the file the pairs came from, when they did.
    pub file_name: Option<String>,
    pub layer: String,
    /// The last layer of a range ("" for the one layer).
    pub layer_to: String,
    pub site: Site,
    pub method: Method,
    pub token: TokenChoice,
    pub held_out: String,
    /// The entry's name ("" for one made from the dataset and method).
    pub name: String,
}

impl VectorForm {
    pub fn new(depth: usize) -> Self {
        let preset = &DATASETS[0];
        Self {
            preset: preset.id.into(),
            lists: false,
            jsonl: preset.text.into(),
            positive: String::new(),
            negative: String::new(),
            file_name: None,
            layer: (depth / 2).to_string(),
            layer_to: String::new(),
            site: Site::ResidPre,
            method: Method::MeanDiff,
            token: TokenChoice::Last,
            held_out: "0".into(),
            name: String::new(),
        }
    }

    /// The model's depth changed from `old` to `new`: a layer left at the old default, or past
    /// the new model's last layer, moves to the new default (the middle layer).
    pub fn follow_depth(&mut self, old: usize, new: usize) {
        match self.layer.trim().parse::<usize>() {
            Ok(l) if l != old / 2 && l < new => {}
            Err(_) if !self.layer.trim().is_empty() => {}
            _ => self.layer = (new / 2).to_string(),
        }
        if self.layer_to.trim().parse::<usize>().is_ok_and(|l| l >= new) {
            self.layer_to.clear();
        }
    }

    /// Picks a preset: its pairs replace the text (JSON lines mode).
    pub fn pick_preset(&mut self, id: &str) {
        self.preset = id.into();
        if let Some(p) = dataset_preset(id) {
            self.jsonl = p.text.into();
            self.lists = false;
            self.file_name = None;
        }
    }

    /// The text was edited by hand (or a file was read): it is no longer the preset.
    pub fn set_text(&mut self, text: String, file_name: Option<String>) {
        if dataset_preset(&self.preset).is_none_or(|p| p.text != text) {
            self.preset.clear();
        }
        self.jsonl = text;
        self.lists = false;
        self.file_name = file_name;
    }

    pub fn dataset(&self) -> DatasetText {
        if self.lists {
            DatasetText::Lists { positive: self.positive.clone(), negative: self.negative.clone() }
        } else {
            DatasetText::Jsonl { text: self.jsonl.clone() }
        }
    }

    pub fn dataset_name(&self) -> String {
        if !self.lists && !self.preset.is_empty() {
            return self.preset.clone();
        }
        match &self.file_name {
            Some(f) if !self.lists => f.clone(),
            _ => if self.lists { "pasted lists" } else { "pasted pairs" }.into(),
        }
    }

    /// The name the entry gets: the one typed, else `dataset method L<layer>` (`L<a>-<b>` for
    /// a range).
    pub fn entry_name(&self, layers: &[usize]) -> String {
        let typed = self.name.trim();
        if !typed.is_empty() {
            return typed.to_string();
        }
        let stem = self.dataset_name();
        let stem = stem.rsplit_once('.').map_or(stem.as_str(), |(s, _)| s).to_string();
        let at = match layers {
            [] => String::new(),
            [l] => format!(" L{l}"),
            [a, .., b] => format!(" L{a}-{b}"),
        };
        format!("{stem} {}{at}", self.method.as_str())
    }

    /// What the dataset holds, for the line under it: "16 pairs" or its problem.
    pub fn summary(&self) -> Result<String, String> {
        let pairs = self.dataset().parse()?;
        let held = self.held_out_fraction().ok().map_or(0, |f| pairs.len() - pairs::split_held_out(&pairs, f).0.len());
        let choices = pairs.iter().filter(|p| matches!(p, Pair::Choice { .. })).count();
        let mut s = format!("{} pair{}", pairs.len(), if pairs.len() == 1 { "" } else { "s" });
        if choices > 0 {
            s.push_str(&format!(" ({choices} multiple-choice: question + answer letter)"));
        }
        if held > 0 {
            s.push_str(&format!(", the last {held} held out"));
        }
        Ok(s)
    }

    pub fn held_out_fraction(&self) -> Result<f64, String> {
        check(&self.held_out, NumKind::real(0.0, 0.9), "held out")
    }

    /// The spec for the worker, or every problem as a sentence.
    pub fn to_spec(&self, depth: usize, bos: bool, chat: bool, system: &str) -> Result<BuildSpec, Vec<String>> {
        let mut errors = Vec::new();
        let last = depth.saturating_sub(1) as u64;
        let layer = match check(&self.layer, NumKind::whole(0, last), "layer") {
            Ok(l) => l as usize,
            Err(e) => {
                errors.push(e);
                0
            }
        };
        let layer_to = if self.layer_to.trim().is_empty() {
            layer
        } else {
            match check(&self.layer_to, NumKind::whole(0, last), "through layer") {
                Ok(l) if (l as usize) < layer => {
                    errors.push(format!(
                        "through layer: {l} is before the first layer {layer}: give a later one, or leave it empty for one layer"
                    ));
                    layer
                }
                Ok(l) => l as usize,
                Err(e) => {
                    errors.push(e);
                    layer
                }
            }
        };
        let held_out = self.held_out_fraction().unwrap_or_else(|e| {
            errors.push(e);
            0.0
        });
        if let Err(e) = self.dataset().parse() {
            errors.push(format!("the pairs: {e}"));
        }
        if self.site == Site::Z {
            errors.push("site z (per-head outputs) is not a steering site: pick resid_pre, attn_out or mlp_out".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(BuildSpec {
            name: self.entry_name(&(layer..=layer_to).collect::<Vec<_>>()),
            dataset_name: self.dataset_name(),
            dataset: self.dataset(),
            layers: (layer..=layer_to).collect(),
            site: self.site,
            method: self.method,
            token: self.token,
            bos,
            chat,
            system: system.into(),
            held_out,
        })
    }
}

/// The largest number of entries the page keeps.
pub const MAX_ENTRIES: usize = 200;

/// The most bytes (as stored, safetensors) the library keeps in all: it lives in this tab's
/// memory as well as in IndexedDB.
pub const MAX_LIBRARY_BYTES: usize = 256 << 20;

/// One library entry and its key in storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: String,
    pub entry: VectorEntry,
    /// Its size as stored (the safetensors file).
    pub bytes: usize,
}

/// The vectors the page keeps, in the order they were made.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Library {
    pub entries: Vec<Stored>,
}

impl Library {
    pub fn get(&self, id: &str) -> Option<&Stored> {
        self.entries.iter().find(|s| s.id == id)
    }

    /// `name`, or `name (2)`, `name (3)`… so no two entries share a name (formulas name them).
    /// `except`: an entry being renamed keeps its own name.
    pub fn unique_name(&self, name: &str, except: Option<&str>) -> String {
        let name = name.trim();
        let name = if name.is_empty() { "vector" } else { name };
        let taken = |n: &str| self.entries.iter().any(|s| Some(s.id.as_str()) != except && s.entry.name == n);
        if !taken(name) {
            return name.to_string();
        }
        (2..).map(|i| format!("{name} ({i})")).find(|n| !taken(n)).expect("a free name")
    }

    /// Checks a new entry in: a unique name, a room check. Returns the stored form and the
    /// safetensors bytes to keep.
    pub fn admit(&self, mut entry: VectorEntry, id: String) -> Result<(Stored, Vec<u8>), String> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(format!("the library holds {MAX_ENTRIES} vectors, as many as it keeps: delete some first"));
        }
        entry.name = self.unique_name(&entry.name, None);
        let bytes = entry.to_safetensors().map_err(|e| e.to_string())?;
        let held: usize = self.entries.iter().map(|s| s.bytes).sum();
        if held + bytes.len() > MAX_LIBRARY_BYTES {
            let mb = |b: usize| tiller_core::error::mib(b as u64);
            return Err(format!(
                "the library holds {} MB, and “{}” ({} MB) would take it past the {} MB it keeps: delete (or download, then delete) some vectors first",
                mb(held),
                entry.name,
                mb(bytes.len()),
                mb(MAX_LIBRARY_BYTES)
            ));
        }
        Ok((Stored { id, entry, bytes: bytes.len() }, bytes))
    }

    /// A linear combination of entries named in `formula` (`a - b + 0.5*c`; quote names
    /// with spaces: `"sentiment mean_diff L6" - 0.5*"formality mean_diff L6"`).
    pub fn combine(&self, formula: &str, name: &str) -> Result<VectorEntry, String> {
        let terms = library::parse_formula(formula).map_err(|e| e.to_string())?;
        let mut resolved = Vec::new();
        for (c, n) in &terms {
            let e = self.entries.iter().find(|s| &s.entry.name == n).ok_or_else(|| {
                let names: Vec<String> = self.entries.iter().map(|s| format!("\"{}\"", s.entry.name)).collect();
                format!(
                    "the formula names `{n}`, which is not in the library{}",
                    if names.is_empty() { String::new() } else { format!(" (it has {})", names.join(", ")) }
                )
            })?;
            resolved.push((*c, &e.entry));
        }
        let name = if name.trim().is_empty() { formula.trim() } else { name.trim() };
        library::combine(&resolved, None, name, formula.trim()).map_err(|e| e.to_string())
    }

    /// Layers at which at least two entries of one width have a vector (for the matrix).
    pub fn shared_layers(&self) -> Vec<usize> {
        let mut layers: Vec<usize> = self.entries.iter().flat_map(|s| s.entry.layer_numbers()).collect();
        layers.sort_unstable();
        let mut out = Vec::new();
        for w in layers.chunk_by(|a, b| a == b) {
            if w.len() >= 2 {
                out.push(w[0]);
            }
        }
        out
    }

    /// The names and the cosine matrix (row-major) of the entries with a vector at `layer` as
    /// wide as the first such entry's.
    pub fn cosines_at(&self, layer: usize) -> (Vec<String>, Vec<f64>) {
        let mut names = Vec::new();
        let mut vectors: Vec<&[f32]> = Vec::new();
        for s in &self.entries {
            if let Some(l) = s.entry.layer(layer) {
                if vectors.first().is_none_or(|v| v.len() == l.vector.len()) {
                    names.push(s.entry.name.clone());
                    vectors.push(&l.vector);
                }
            }
        }
        let m = library::cosine_matrix(&vectors);
        (names, m)
    }
}

/// A one-line description of an entry: method, site, layers, model, source, date.
pub fn describe(e: &VectorEntry) -> String {
    let layers: Vec<String> = e.layer_numbers().iter().map(|l| l.to_string()).collect();
    let mut s = format!(
        "{} at {} layer{} {}, {} channels",
        e.method,
        e.site.as_str(),
        if layers.len() == 1 { "" } else { "s" },
        layers.join(", "),
        e.width()
    );
    if !e.model.is_empty() {
        s.push_str(&format!("; made on {}", e.model));
    }
    if let Some(f) = &e.formula {
        s.push_str(&format!(" as {f}"));
    } else if !e.source.is_empty() {
        s.push_str(&format!(" from {}", e.source));
    }
    if let Some(day) = e.created.get(..10) {
        s.push_str(&format!(", {day}"));
    }
    s
}

/// Each layer's norm, beside the mean activation norm the pairs had there when the entry
/// keeps it ("how big is coefficient 8?").
pub fn norms_line(e: &VectorEntry) -> String {
    e.norms()
        .iter()
        .map(|(layer, n)| match e.extra.get(&format!("activation_norm.{layer}")).and_then(|a| a.parse::<f64>().ok()) {
            Some(a) if a > 0.0 => {
                format!("L{layer}: norm {n:.2} (the texts' activations: {a:.1}, so coefficient 1 adds {:.0}%)", 100.0 * n / a)
            }
            _ => format!("L{layer}: norm {n:.2}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The most lines one evaluation draws.
pub const MAX_EVAL_LINES: usize = 16;

/// What the worker needs for CAA's behavioural measure (`tiller vector eval-ab`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSpec {
    pub dataset: DatasetText,
    /// The last fraction of the items is evaluated (all of them when 0), as the build form
    /// holds it out of the vector.
    pub held_out: f64,
    pub bos: bool,
    pub chat: bool,
    pub system: String,
    pub site: Site,
    /// (layer, vector): one line of the chart each.
    pub vectors: Vec<(usize, Vec<f32>)>,
    pub coeffs: Vec<f32>,
}

impl EvalSpec {
    /// The items evaluated: the held-out part of the set, or all of it when none is held out.
    pub fn eval_pairs(&self) -> Result<Vec<Pair>, String> {
        let all = self.dataset.parse()?;
        Ok(if self.held_out > 0.0 { pairs::split_held_out(&all, self.held_out).1.to_vec() } else { all })
    }
}

/// The evaluation's settings as typed: the library entries ticked and the coefficients.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalForm {
    /// Entry ids, in the order they were ticked.
    pub picked: Vec<String>,
    pub coeffs: String,
}

impl Default for EvalForm {
    fn default() -> Self {
        Self { picked: Vec::new(), coeffs: "-2, -1, 0, 1, 2".into() }
    }
}

impl EvalForm {
    pub fn toggle(&mut self, id: &str, on: bool) {
        self.picked.retain(|p| p != id);
        if on {
            self.picked.push(id.into());
        }
    }

    /// The spec for the worker and each line's label, or every problem as a sentence. The
    /// items are the build form's pairs (multiple-choice ones), its held-out part when it
    /// holds some out; `width` is the loaded model's residual width.
    #[allow(clippy::too_many_arguments)]
    pub fn to_spec(
        &self,
        form: &VectorForm,
        library: &Library,
        depth: usize,
        width: usize,
        bos: bool,
        chat: bool,
        system: &str,
    ) -> Result<(EvalSpec, Vec<String>), Vec<String>> {
        let mut errors = Vec::new();
        let held_out = form.held_out_fraction().unwrap_or_else(|e| {
            errors.push(e);
            0.0
        });
        match form.dataset().parse() {
            Err(e) => errors.push(format!("the pairs: {e}")),
            Ok(all) => {
                let plain = all.iter().filter(|p| !matches!(p, Pair::Choice { .. })).count();
                if plain > 0 {
                    errors.push(format!(
                        "the A/B evaluation needs multiple-choice items (\"question\", \"answer_matching_behavior\", \"answer_not_matching_behavior\"), \
                         and {plain} of these {} pairs are plain texts: pick the Optimism A/B set, or load a file in CAA's form",
                        all.len()
                    ));
                } else if held_out > 0.0 && pairs::split_held_out(&all, held_out).1.is_empty() {
                    errors.push("the held-out part of the set is empty: hold out a larger fraction, or 0 to evaluate every item".into());
                }
            }
        }
        let coeffs = crate::sweep::parse_coeffs(&self.coeffs).map_err(|e| errors.push(e)).unwrap_or_default();
        let mut vectors = Vec::new();
        let mut labels = Vec::new();
        let mut site = None;
        let picked: Vec<&Stored> = self.picked.iter().filter_map(|id| library.get(id)).collect();
        if picked.is_empty() {
            errors.push("tick at least one library vector to evaluate".into());
        }
        for s in picked {
            let e = &s.entry;
            if site.is_some_and(|x| x != e.site) {
                errors.push(format!(
                    "“{}” is at {}, another ticked vector at {}: evaluate one site at a time",
                    e.name,
                    e.site.as_str(),
                    site.map_or("", Site::as_str)
                ));
                continue;
            }
            site = Some(e.site);
            if e.width() != width {
                errors.push(format!(
                    "“{}” is {} wide but the loaded model's residual stream is {width}: it was made on another model",
                    e.name,
                    e.width()
                ));
                continue;
            }
            for l in &e.layers {
                if l.layer >= depth {
                    errors.push(format!(
                        "“{}” has a vector at layer {}, past this model's last layer {}",
                        e.name,
                        l.layer,
                        depth.saturating_sub(1)
                    ));
                    continue;
                }
                labels.push(if e.layers.len() == 1 { e.name.clone() } else { format!("{} @ L{}", e.name, l.layer) });
                vectors.push((l.layer, l.vector.clone()));
            }
        }
        if vectors.len() > MAX_EVAL_LINES {
            errors.push(format!("{} lines (vectors × layers) are ticked; the chart draws at most {MAX_EVAL_LINES}", vectors.len()));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let spec = EvalSpec {
            dataset: form.dataset(),
            held_out,
            bos,
            chat,
            system: system.into(),
            site: site.unwrap_or_default(),
            vectors,
            coeffs,
        };
        Ok((spec, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiller_core::library::LayerEntry;

    fn entry(name: &str, layer: usize, v: Vec<f32>) -> VectorEntry {
        VectorEntry {
            name: name.into(),
            model: "m".into(),
            method: "mean_diff".into(),
            layers: vec![LayerEntry { layer, vector: v, front: None }],
            ..Default::default()
        }
    }

    fn lib(entries: Vec<VectorEntry>) -> Library {
        let mut l = Library::default();
        for (i, e) in entries.into_iter().enumerate() {
            let (s, _) = l.admit(e, format!("id{i}")).unwrap();
            l.entries.push(s);
        }
        l
    }

    #[test]
    fn presets_parse_and_the_form_builds_a_spec() {
        for d in DATASETS {
            assert!(DatasetText::Jsonl { text: d.text.into() }.parse().unwrap().len() >= 12, "{}", d.id);
        }
        let mut f = VectorForm::new(12);
        let spec = f.to_spec(12, true, false, "").unwrap();
        assert_eq!(
            (spec.layers.as_slice(), spec.name.as_str(), spec.dataset_name.as_str()),
            (&[6][..], "sentiment mean_diff L6", "sentiment")
        );
        // A range of layers: one entry, a vector per layer.
        f.layer_to = "8".into();
        let range = f.to_spec(12, true, false, "").unwrap();
        assert_eq!((range.layers, range.name.as_str()), (vec![6, 7, 8], "sentiment mean_diff L6-8"));
        f.layer_to = "5".into();
        assert!(f.to_spec(12, true, false, "").unwrap_err()[0].contains("before the first layer 6"));
        f.layer_to = "12".into();
        assert!(f.to_spec(12, true, false, "").unwrap_err()[0].starts_with("through layer: "));
        f.follow_depth(12, 4);
        assert_eq!(f.layer_to, "", "a range end past the new model's last layer goes");
        let mut f = VectorForm::new(12);
        assert_eq!(spec.training_pairs().unwrap().len(), 16);
        f.held_out = "0.25".into();
        assert_eq!(f.to_spec(12, true, false, "").unwrap().training_pairs().unwrap().len(), 12);
        assert_eq!(f.summary().unwrap(), "16 pairs, the last 4 held out");
        // Edited text is no longer the preset; a file keeps its name.
        f.set_text("{\"positive\": \"a\", \"negative\": \"b\"}".into(), Some("mine.jsonl".into()));
        assert_eq!(f.entry_name(&[3]), "mine mean_diff L3");
        f.lists = true;
        f.positive = "a\nb".into();
        f.negative = "c".into();
        let errs = f.to_spec(12, true, false, "").unwrap_err();
        assert!(errs[0].contains("the positive list has 2 texts and the negative list 1"), "{errs:?}");
    }

    #[test]
    fn the_layer_follows_the_model() {
        let mut f = VectorForm::new(12);
        f.follow_depth(12, 4);
        assert_eq!(f.layer, "2", "the default moves to the new middle");
        f.layer = "3".into();
        f.follow_depth(4, 24);
        assert_eq!(f.layer, "3", "a layer chosen by hand stays while it exists");
        f.follow_depth(24, 2);
        assert_eq!(f.layer, "1", "a layer past the new model's last moves");
    }

    #[test]
    fn bad_datasets_and_numbers_are_sentences() {
        let mut f = VectorForm::new(4);
        f.set_text("{\"positive\": \"a\", \"negative\": \"b\"}\n{\"positive\": \"a\"}\n".into(), None);
        f.layer = "9".into();
        f.held_out = "2".into();
        let errs = f.to_spec(4, true, false, "").unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("layer: "), "{errs:?}");
        assert!(errs[1].starts_with("held out: "), "{errs:?}");
        assert!(errs[2].contains("line 2") && errs[2].contains("\"negative\" is missing"), "{errs:?}");
        f.set_text(String::new(), None);
        assert!(f.summary().unwrap_err().contains("no pairs"));
        f.set_text("x".repeat(pairs::MAX_DATASET_BYTES + 1), Some("big.jsonl".into()));
        assert!(f.summary().unwrap_err().contains("MB"));
    }

    #[test]
    fn the_library_keeps_at_most_its_byte_budget() {
        // 40 MB entries: six fit in 256 MB, the seventh is refused naming the sizes.
        let big = |name: &str| entry(name, 0, vec![0.5; 10 << 20]);
        let mut l = Library::default();
        for i in 0..6 {
            let (s, _) = l.admit(big(&format!("v{i}")), format!("id{i}")).unwrap();
            l.entries.push(s);
        }
        let e = l.admit(big("one more"), "id6".into()).unwrap_err();
        assert!(e.contains("the library holds 241 MB, and “one more” (41 MB) would take it past the 256 MB it keeps"), "{e}");
        l.entries.pop();
        assert!(l.admit(big("one more"), "id6".into()).is_ok(), "room again after a delete");
    }

    #[test]
    fn names_stay_unique_and_formulas_resolve_them() {
        let l = lib(vec![entry("a", 2, vec![1.0, 0.0]), entry("a", 2, vec![0.0, 2.0]), entry("c d", 3, vec![1.0, 1.0])]);
        let names: Vec<&str> = l.entries.iter().map(|s| s.entry.name.as_str()).collect();
        assert_eq!(names, ["a", "a (2)", "c d"]);
        assert_eq!(l.unique_name("a (2)", Some("id1")), "a (2)", "a rename keeps its own name");
        let c = l.combine("a - 0.5*\"a (2)\"", "").unwrap();
        assert_eq!(c.layers[0].vector, vec![1.0, -1.0]);
        assert_eq!(c.formula.as_deref(), Some("a - 0.5*\"a (2)\""));
        assert_eq!(c.method, "combination");
        assert!(l.combine("a + b", "x").unwrap_err().contains("`b`, which is not in the library"));
        assert!(l.combine("a + \"c d\"", "x").is_err(), "no shared layer");
        assert_eq!(l.shared_layers(), vec![2]);
        let (names, m) = l.cosines_at(2);
        assert_eq!(names, ["a", "a (2)"]);
        assert!((m[0] - 1.0).abs() < 1e-12 && m[1].abs() < 1e-12);
    }

    #[test]
    fn norms_are_read_beside_the_activations() {
        let mut e = entry("a", 2, vec![3.0, 4.0]);
        assert_eq!(norms_line(&e), "L2: norm 5.00");
        e.extra.insert("activation_norm.2".into(), "50".into());
        assert_eq!(norms_line(&e), "L2: norm 5.00 (the texts' activations: 50.0, so coefficient 1 adds 10%)");
        assert!(describe(&e).starts_with("mean_diff at resid_pre layer 2, 2 channels; made on m"));
    }

    #[test]
    fn the_evaluation_takes_ab_items_and_ticked_vectors() {
        let mut form = VectorForm::new(4);
        let l = lib(vec![entry("a", 1, vec![1.0, 0.0]), entry("b", 3, vec![0.0, 1.0]), entry("wide", 1, vec![0.0; 3])]);
        let ids: Vec<String> = l.entries.iter().map(|s| s.id.clone()).collect();
        let mut eval = EvalForm::default();
        // Plain pairs, nothing ticked.
        let errs = eval.to_spec(&form, &l, 4, 2, true, false, "").unwrap_err();
        assert!(errs.iter().any(|e| e.contains("multiple-choice items") && e.contains("16 of these 16")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("tick at least one")), "{errs:?}");
        form.pick_preset("optimism-ab");
        eval.toggle(&ids[1], true);
        eval.toggle(&ids[0], true);
        let (spec, labels) = eval.to_spec(&form, &l, 4, 2, true, false, "").unwrap();
        assert_eq!(labels, ["b", "a"]);
        assert_eq!(spec.vectors, vec![(3, vec![0.0, 1.0]), (1, vec![1.0, 0.0])]);
        assert_eq!(spec.coeffs, vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
        assert_eq!(spec.eval_pairs().unwrap().len(), 12);
        // Held out: only the last part is evaluated.
        form.held_out = "0.25".into();
        let (spec, _) = eval.to_spec(&form, &l, 4, 2, true, false, "").unwrap();
        assert_eq!(spec.eval_pairs().unwrap().len(), 3);
        // Too shallow a model, another width, bad coefficients.
        assert!(eval.to_spec(&form, &l, 2, 2, true, false, "").unwrap_err()[0].contains("past this model's last layer 1"));
        eval.toggle(&ids[2], true);
        eval.toggle(&ids[1], false);
        eval.coeffs = "1, x".into();
        let errs = eval.to_spec(&form, &l, 4, 2, true, false, "").unwrap_err();
        assert!(errs.iter().any(|e| e.contains("“wide” is 3 wide")), "{errs:?}");
        assert_eq!(errs.len(), 2, "{errs:?}");
    }
}
