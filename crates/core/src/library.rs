//! Saved steering vectors: one named entry with its provenance and a vector per layer, stored
//! as safetensors (the CLI's files; the page keeps the same bytes in IndexedDB), combined by
//! formulas such as `a - b + 0.5*c`, and converted to and from llama.cpp's GGUF control
//! vectors ([`crate::gguf`]).
//!
//! File layout: tensors `layer.{L}` of shape [W] (F32; F16 and BF16 read), and for an ActAdd
//! entry also `layer.{L}.front` [n, W], the tensor ActAdd adds at the prompt's positions
//! 0..n (`layer.{L}` is then its single-vector form, the one `all` and `last` add). The
//! `__metadata__` strings: `tiller.kind` = `vector`, `name`, `model`, `site`, `method`,
//! `source`, `created`, `formula` (for combinations), and any others, kept as they are.

use std::collections::BTreeMap;

use crate::backend::Site;
use crate::error::{Result, TillerError};
use crate::weights::{Dtype, SafetensorsHeader, TensorView};

/// The largest vector file read (a 4096-wide vector at 128 layers is 2 MB; front tensors are
/// as long as their texts).
pub const MAX_FILE_BYTES: usize = 256 << 20;

/// One layer's vector.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerEntry {
    pub layer: usize,
    /// [W]
    pub vector: Vec<f32>,
    /// ActAdd's [n, W] tensor for positions `front`, when the entry has one.
    pub front: Option<(usize, Vec<f32>)>,
}

/// A library entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VectorEntry {
    pub name: String,
    /// The model it was made on (a Hub id or a folder name).
    pub model: String,
    pub site: Site,
    /// `actadd`, `mean_diff`, `pca_diff`, `pca_center`, `combination`, `gguf` (imported), …
    pub method: String,
    /// Its source texts or dataset name.
    pub source: String,
    /// RFC 3339 date of making.
    pub created: String,
    /// For a combination, its formula in terms of the other entries' names.
    pub formula: Option<String>,
    /// Any other metadata, kept through a round trip.
    pub extra: BTreeMap<String, String>,
    /// Sorted by layer, one entry per layer.
    pub layers: Vec<LayerEntry>,
}

fn bad(msg: String) -> TillerError {
    TillerError::input(msg)
}

/// The Euclidean norm, summed in f64.
pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt()
}

impl VectorEntry {
    /// The channels of every layer's vector.
    pub fn width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.vector.len())
    }

    pub fn layer(&self, layer: usize) -> Option<&LayerEntry> {
        self.layers.iter().find(|l| l.layer == layer)
    }

    pub fn layer_numbers(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.layer).collect()
    }

    /// The vector to steer with at `layer`, or the only one when `layer` is None.
    pub fn pick(&self, layer: Option<usize>) -> Result<&LayerEntry> {
        match layer {
            Some(l) => self
                .layer(l)
                .ok_or_else(|| bad(format!("the vector `{}` has no layer {l}; it has layers {:?}", self.name, self.layer_numbers()))),
            None if self.layers.len() == 1 => Ok(&self.layers[0]),
            None => Err(bad(format!("the vector `{}` has layers {:?}: say which one", self.name, self.layer_numbers()))),
        }
    }

    /// Checks the entry's own consistency (what every reader and writer relies on).
    pub fn check(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(bad(format!("the vector `{}` has no layers", self.name)));
        }
        let w = self.width();
        for (i, l) in self.layers.iter().enumerate() {
            if i > 0 && self.layers[i - 1].layer >= l.layer {
                return Err(bad(format!("the vector `{}` has layer {} twice or out of order", self.name, l.layer)));
            }
            if l.vector.len() != w || w == 0 {
                return Err(bad(format!(
                    "the vector `{}` is {} wide at layer {} but {} at layer {}: every layer must have the same width",
                    self.name,
                    l.vector.len(),
                    l.layer,
                    w,
                    self.layers[0].layer
                )));
            }
            if let Some(i) = l.vector.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!("the vector `{}` at layer {} holds {} at channel {i}", self.name, l.layer, l.vector[i])));
            }
            if let Some((n, rows)) = &l.front {
                if *n == 0 || rows.len() != n * w || rows.iter().any(|x| !x.is_finite()) {
                    return Err(bad(format!("the front tensor of `{}` at layer {} is not [n, {w}] finite numbers", self.name, l.layer)));
                }
            }
        }
        Ok(())
    }

    /// The entry as a safetensors file.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.check()?;
        let mut meta = self.extra.clone();
        meta.insert("tiller.kind".into(), "vector".into());
        for (k, v) in
            [("name", &self.name), ("model", &self.model), ("method", &self.method), ("source", &self.source), ("created", &self.created)]
        {
            meta.insert(k.into(), v.clone());
        }
        meta.insert("site".into(), self.site.as_str().into());
        if let Some(f) = &self.formula {
            meta.insert("formula".into(), f.clone());
        }
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let w = self.width();
        let mut tensors = Vec::new();
        for l in &self.layers {
            tensors.push((format!("layer.{}", l.layer), Dtype::F32, vec![w], bytes(&l.vector)));
            if let Some((n, rows)) = &l.front {
                tensors.push((format!("layer.{}.front", l.layer), Dtype::F32, vec![*n, w], bytes(rows)));
            }
        }
        Ok(crate::weights::write_safetensors_with_metadata(&tensors, &meta))
    }

    /// Reads a vector file of either format, told apart by its first bytes: a llama.cpp GGUF
    /// control vector or a `tiller vector` safetensors file.
    pub fn from_bytes(bytes: &[u8], fallback_name: &str) -> Result<Self> {
        if bytes.starts_with(b"GGUF") {
            Self::from_gguf(bytes, fallback_name)
        } else {
            Self::from_safetensors(bytes, fallback_name)
        }
    }

    /// Reads a vector file; `fallback_name` names an entry whose metadata has no name.
    pub fn from_safetensors(bytes: &[u8], fallback_name: &str) -> Result<Self> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(bad(format!("the file is {} MB, larger than any vector file ({} MB)", bytes.len() >> 20, MAX_FILE_BYTES >> 20)));
        }
        if bytes.starts_with(b"GGUF") {
            return Err(bad("this is a GGUF file: import it as a GGUF control vector (`tiller vector import`)".into()));
        }
        let unreadable = |e: TillerError| match e {
            TillerError::Safetensors(m) => bad(format!("this is not a readable vector file (safetensors): {m}")),
            e => e,
        };
        let n = SafetensorsHeader::header_len(bytes).map_err(unreadable)? as usize;
        let json = bytes.get(8..8 + n).ok_or_else(|| bad("the file ends inside its header: it is truncated".into()))?;
        let data = &bytes[8 + n..];
        let header = SafetensorsHeader::parse(json, Some(data.len() as u64)).map_err(unreadable)?;
        let mut meta = header.metadata.clone();
        if let Some(kind) = meta.get("tiller.kind") {
            if kind != "vector" {
                return Err(bad(format!("this safetensors file holds a Tiller `{kind}`, not a vector")));
            }
        }
        let mut vectors: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut fronts: BTreeMap<usize, (usize, Vec<f32>)> = BTreeMap::new();
        for t in &header.tensors {
            let parsed = t.name.strip_prefix("layer.").and_then(|rest| match rest.strip_suffix(".front") {
                Some(l) => l.parse::<usize>().ok().map(|l| (l, true)),
                None => rest.parse::<usize>().ok().map(|l| (l, false)),
            });
            let Some((layer, is_front)) = parsed else {
                return Err(bad(format!(
                    "the tensor `{}` is not a steering vector: a vector file holds tensors `layer.L` (one per layer); \
                     is this a model checkpoint?",
                    t.name
                )));
            };
            let dtype = t.dtype.ok_or_else(|| bad(format!("the tensor `{}` is {}; vectors are F32, F16 or BF16", t.name, t.dtype_name)))?;
            let view = TensorView { name: &t.name, shape: &t.shape, dtype, bytes: &data[t.start as usize..t.end as usize] };
            let values = view.to_f32();
            match (is_front, t.shape.as_slice()) {
                (false, [_]) => {
                    vectors.insert(layer, values);
                }
                (true, [n, _]) => {
                    fronts.insert(layer, (*n, values));
                }
                _ => {
                    return Err(bad(format!(
                        "the tensor `{}` has shape {:?}; `layer.L` is [W] and `layer.L.front` is [n, W]",
                        t.name, t.shape
                    )))
                }
            }
        }
        if vectors.is_empty() {
            return Err(bad("the file holds no `layer.L` vectors".into()));
        }
        if let Some(l) = fronts.keys().find(|l| !vectors.contains_key(l)) {
            return Err(bad(format!("the file has `layer.{l}.front` but no `layer.{l}`")));
        }
        let mut take = |k: &str| meta.remove(k).unwrap_or_default();
        let site_name = take("site");
        let site = if site_name.is_empty() {
            Site::ResidPre
        } else {
            Site::parse(&site_name)
                .filter(|s| Site::RESIDUAL.contains(s))
                .ok_or_else(|| bad(format!("the file's site `{site_name}` is not resid_pre, attn_out or mlp_out")))?
        };
        let name = take("name");
        let entry = VectorEntry {
            name: if name.is_empty() { fallback_name.to_string() } else { name },
            model: take("model"),
            site,
            method: take("method"),
            source: take("source"),
            created: take("created"),
            formula: meta.remove("formula"),
            extra: {
                meta.remove("tiller.kind");
                meta
            },
            layers: vectors.into_iter().map(|(layer, vector)| LayerEntry { layer, vector, front: fronts.remove(&layer) }).collect(),
        };
        entry.check()?;
        Ok(entry)
    }

    /// The entry as a GGUF control vector for llama.cpp (`--control-vector`), and the notes
    /// the user should read: Tiller's layer L (the residual before block L) is llama.cpp's
    /// `direction.(L−1)` (added to block L−1's output, at every position).
    pub fn to_gguf(&self, model_hint: &str) -> Result<(Vec<u8>, Vec<String>)> {
        self.check()?;
        if self.site != Site::ResidPre {
            return Err(bad(format!(
                "llama.cpp adds control vectors to the residual stream; this vector is at {}, which it cannot steer",
                self.site.as_str()
            )));
        }
        let mut notes = Vec::new();
        let mut directions = Vec::new();
        let low: Vec<usize> = self.layers.iter().map(|l| l.layer).filter(|&l| l < 2).collect();
        if low.len() == self.layers.len() {
            return Err(bad(format!(
                "layer {} cannot be exported to a GGUF control vector: llama.cpp adds direction.N to block N's output and \
                 never steers before block 1's output, so Tiller's layers 0 and 1 have no counterpart; pick a layer of 2 or more",
                low.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" and ")
            )));
        }
        if !low.is_empty() {
            notes.push(format!(
                "layer {} left out: llama.cpp never steers before block 1's output, so Tiller's layers 0 and 1 have no \
                 direction.N",
                low.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" and ")
            ));
        }
        for l in self.layers.iter().filter(|l| l.layer >= 2) {
            if l.front.is_some() {
                notes.push(format!(
                    "layer {}: llama.cpp adds one direction at every position, so this exports the single-vector form \
                     (each text's last token, the `all` positions mode), not ActAdd's front tensor",
                    l.layer
                ));
            }
            directions.push((l.layer - 1, l.vector.clone()));
        }
        let mut extra: Vec<(String, String)> = vec![
            ("tiller.name".into(), self.name.clone()),
            ("tiller.model".into(), self.model.clone()),
            ("tiller.site".into(), self.site.as_str().into()),
            ("tiller.method".into(), self.method.clone()),
            ("tiller.source".into(), self.source.clone()),
            ("tiller.created".into(), self.created.clone()),
        ];
        if let Some(f) = &self.formula {
            extra.push(("tiller.formula".into(), f.clone()));
        }
        extra.retain(|(_, v)| !v.is_empty());
        Ok((crate::gguf::write_control_vector(model_hint, &directions, &extra)?, notes))
    }

    /// The `controlvector.model_hint` to export with: llama.cpp's architecture name for the
    /// model the entry was made on (`llama`, `qwen2`, `gptneox`, `gpt2`), the hint of an
    /// imported GGUF file, else the model's own name.
    pub fn gguf_model_hint(&self) -> String {
        if let Some(h) = self.extra.get("gguf.model_hint") {
            return h.clone();
        }
        let m = self.model.to_ascii_lowercase();
        for (key, hint) in
            [("llama", "llama"), ("qwen", "qwen2"), ("pythia", "gptneox"), ("neox", "gptneox"), ("gpt2", "gpt2"), ("gpt-2", "gpt2")]
        {
            if m.contains(key) {
                return hint.into();
            }
        }
        if self.model.is_empty() {
            "unknown".into()
        } else {
            self.model.clone()
        }
    }

    /// An entry from a GGUF control vector: `direction.N` becomes Tiller's layer N+1.
    pub fn from_gguf(bytes: &[u8], fallback_name: &str) -> Result<Self> {
        let cv = crate::gguf::read_control_vector(bytes)?;
        let mut meta: BTreeMap<String, String> = cv.metadata.into_iter().collect();
        let mut take = |k: &str| meta.remove(&format!("tiller.{k}")).unwrap_or_default();
        let name = take("name");
        let model = take("model");
        let method = take("method");
        let entry = VectorEntry {
            name: if name.is_empty() { fallback_name.to_string() } else { name },
            model: if model.is_empty() { cv.model_hint.clone() } else { model },
            site: Site::ResidPre,
            method: if method.is_empty() { "gguf".into() } else { method },
            source: take("source"),
            created: take("created"),
            formula: Some(take("formula")).filter(|f| !f.is_empty()),
            extra: {
                meta.remove("tiller.site");
                meta.insert("gguf.model_hint".into(), cv.model_hint);
                meta
            },
            layers: cv.directions.into_iter().map(|(n, vector)| LayerEntry { layer: n + 1, vector, front: None }).collect(),
        };
        entry.check()?;
        Ok(entry)
    }

    /// Per layer: the vector's norm.
    pub fn norms(&self) -> Vec<(usize, f64)> {
        self.layers.iter().map(|l| (l.layer, norm(&l.vector))).collect()
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() / (na * nb)
}

/// The cosine-similarity matrix of vectors (row-major, n×n).
pub fn cosine_matrix(vectors: &[&[f32]]) -> Vec<f64> {
    let n = vectors.len();
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = if i == j && norm(vectors[i]) > 0.0 { 1.0 } else { cosine(vectors[i], vectors[j]) };
        }
    }
    m
}

/// The largest |cosine| between two different vectors of `vectors` (0 for fewer than two).
pub fn max_abs_cosine(vectors: &[&[f32]]) -> f64 {
    let n = vectors.len();
    let m = cosine_matrix(vectors);
    (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| i * n + j)).fold(0.0f64, |acc, k| acc.max(m[k].abs()))
}

/// A parsed formula: (coefficient, name) terms, such as `a - b + 0.5*c` → (1, a), (−1, b),
/// (0.5, c). Names are letters, digits, `_` and `.` (starting with a letter or `_`), or any
/// text in double quotes; a coefficient is a number before the name, with `*`, `·` or `×`
/// between them or not.
pub fn parse_formula(formula: &str) -> Result<Vec<(f64, String)>> {
    let err = |msg: String| bad(format!("the formula `{formula}`: {msg} (write it like `a - b + 0.5*c`)"));
    let chars: Vec<char> = formula.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let mut terms: Vec<(f64, String)> = Vec::new();
    loop {
        skip_ws(&mut i);
        let mut sign = 1.0;
        if terms.is_empty() {
            if i < chars.len() && (chars[i] == '-' || chars[i] == '−') {
                sign = -1.0;
                i += 1;
            } else if i < chars.len() && chars[i] == '+' {
                i += 1;
            }
        } else {
            match chars.get(i) {
                Some('+') => i += 1,
                Some('-') | Some('−') => {
                    sign = -1.0;
                    i += 1
                }
                Some(_) => return Err(err(format!("expected + or - before `{}`", chars[i..].iter().collect::<String>().trim_end()))),
                None => break,
            }
        }
        skip_ws(&mut i);
        // A coefficient.
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
            i += 1;
        }
        if i > start && i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
            let save = i;
            i += 1;
            if i < chars.len() && (chars[i] == '-' || chars[i] == '+') {
                i += 1;
            }
            let digits = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i == digits {
                i = save; // an `e` that starts a name
            }
        }
        let mut coeff = 1.0;
        if i > start {
            let text: String = chars[start..i].iter().collect();
            coeff = text.parse::<f64>().map_err(|_| err(format!("`{text}` is not a number")))?;
            skip_ws(&mut i);
            if i < chars.len() && matches!(chars[i], '*' | '·' | '×') {
                i += 1;
                skip_ws(&mut i);
            }
        }
        // A name.
        let name = if i < chars.len() && chars[i] == '"' {
            let close = chars[i + 1..].iter().position(|&c| c == '"').ok_or_else(|| err("a quoted name is not closed".into()))?;
            let name: String = chars[i + 1..i + 1 + close].iter().collect();
            i += close + 2;
            name
        } else {
            let s = i;
            if i < chars.len() && (chars[i].is_alphabetic() || chars[i] == '_') {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                    i += 1;
                }
            }
            chars[s..i].iter().collect()
        };
        if name.is_empty() {
            return Err(err(if i >= chars.len() {
                "it ends where a vector's name should be".into()
            } else {
                format!("expected a vector's name at `{}`", chars[i..].iter().collect::<String>())
            }));
        }
        if !coeff.is_finite() || coeff.abs() > crate::recipe::MAX_COEFF as f64 {
            return Err(err(format!("the coefficient of `{name}` must be a finite number of size at most {}", crate::recipe::MAX_COEFF)));
        }
        terms.push((sign * coeff, name));
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
    }
    if terms.is_empty() {
        return Err(err("it has no terms".into()));
    }
    Ok(terms)
}

/// The linear combination `Σ coeff · entry` at the layers every entry has (or only `layer`),
/// as a new entry named `name` whose provenance is the formula. Entries must share the
/// model, the site and the width.
pub fn combine(terms: &[(f64, &VectorEntry)], layer: Option<usize>, name: &str, formula: &str) -> Result<VectorEntry> {
    let (_, first) = terms.first().ok_or_else(|| bad("a combination needs at least one vector".into()))?;
    for (_, e) in terms {
        if e.width() != first.width() {
            return Err(bad(format!(
                "`{}` is {} wide but `{}` is {}: vectors of different models do not combine",
                e.name,
                e.width(),
                first.name,
                first.width()
            )));
        }
        if !e.model.is_empty() && !first.model.is_empty() && e.model != first.model {
            return Err(bad(format!(
                "`{}` was made on {} but `{}` on {}: combine vectors of one model",
                e.name, e.model, first.name, first.model
            )));
        }
        if e.site != first.site {
            return Err(bad(format!(
                "`{}` is at {} but `{}` at {}: combine vectors of one site",
                e.name,
                e.site.as_str(),
                first.name,
                first.site.as_str()
            )));
        }
    }
    let layers: Vec<usize> = match layer {
        Some(l) => {
            for (_, e) in terms {
                e.pick(Some(l))?;
            }
            vec![l]
        }
        None => {
            let common: Vec<usize> =
                first.layer_numbers().into_iter().filter(|&l| terms.iter().all(|(_, e)| e.layer(l).is_some())).collect();
            if common.is_empty() {
                return Err(bad(format!(
                    "the vectors share no layer ({}): pick one with a layer each has",
                    terms.iter().map(|(_, e)| format!("`{}` has {:?}", e.name, e.layer_numbers())).collect::<Vec<_>>().join(", ")
                )));
            }
            common
        }
    };
    let w = first.width();
    let out_layers = layers
        .iter()
        .map(|&l| {
            let mut v = vec![0.0f64; w];
            for (c, e) in terms {
                let lv = &e.layer(l).expect("checked above").vector;
                v.iter_mut().zip(lv).for_each(|(a, &x)| *a += c * x as f64);
            }
            LayerEntry { layer: l, vector: v.into_iter().map(|x| x as f32).collect(), front: None }
        })
        .collect();
    let mut names: Vec<&str> = terms.iter().map(|(_, e)| e.name.as_str()).collect();
    names.dedup();
    let entry = VectorEntry {
        name: name.to_string(),
        model: first.model.clone(),
        site: first.site,
        method: "combination".into(),
        source: names.join(", "),
        created: String::new(),
        formula: Some(formula.to_string()),
        extra: BTreeMap::new(),
        layers: out_layers,
    };
    entry.check()?;
    Ok(entry)
}

/// Seconds since 1970 as an RFC 3339 UTC time, `2026-12-02T21:07:05Z`.
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, layers: &[(usize, Vec<f32>)]) -> VectorEntry {
        VectorEntry {
            name: name.into(),
            model: "gpt2".into(),
            method: "mean_diff".into(),
            source: "sentiment.jsonl".into(),
            created: "2026-12-02T00:00:00Z".into(),
            layers: layers.iter().map(|(l, v)| LayerEntry { layer: *l, vector: v.clone(), front: None }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn safetensors_round_trip_keeps_everything() {
        let mut e = entry("love", &[(3, vec![1.0, -2.0, 0.5]), (6, vec![0.0, 1.0, 2.0])]);
        e.layers[0].front = Some((2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        e.extra.insert("note".into(), "kept".into());
        e.formula = Some("a - b".into());
        let bytes = e.to_safetensors().unwrap();
        let back = VectorEntry::from_safetensors(&bytes, "unused").unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn foreign_files_are_refused_with_a_sentence() {
        let err = |b: &[u8]| VectorEntry::from_safetensors(b, "x").unwrap_err().to_string();
        let model = crate::weights::write_safetensors(&[("wte.weight".into(), Dtype::F32, vec![1], vec![0; 4])]);
        assert!(err(&model).contains("is this a model checkpoint?"));
        assert!(err(b"GGUF\x03\0\0\0").contains("GGUF control vector"));
        assert!(err(b"abc").contains("shorter than 8 bytes"));
        let two_d = crate::weights::write_safetensors(&[("layer.2".into(), Dtype::F32, vec![1, 1], vec![0; 4])]);
        assert!(err(&two_d).contains("has shape [1, 1]"));
        let nan = crate::weights::write_safetensors(&[("layer.2".into(), Dtype::F32, vec![1], f32::NAN.to_le_bytes().to_vec())]);
        assert!(err(&nan).contains("holds NaN"));
        let bytes = entry("v", &[(2, vec![1.0; 4])]).to_safetensors().unwrap();
        for cut in 0..bytes.len() {
            assert!(VectorEntry::from_safetensors(&bytes[..cut], "x").is_err(), "a prefix of {cut} bytes read");
        }
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_796_245_625), "2026-12-02T21:07:05Z");
    }

    #[test]
    fn formulas_parse() {
        let f = |s: &str| parse_formula(s).unwrap();
        assert_eq!(f("a - b + 0.5*c"), vec![(1.0, "a".into()), (-1.0, "b".into()), (0.5, "c".into())]);
        assert_eq!(f("-2 love.v2 + 1e-1·x"), vec![(-2.0, "love.v2".into()), (0.1, "x".into())]);
        assert_eq!(f("\"my vector\" − 3e"), vec![(1.0, "my vector".into()), (-3.0, "e".into())]);
        assert_eq!(f("2×a"), vec![(2.0, "a".into())]);
        for bad in ["", "a +", "a b", "2 *", "1e999 a", "\"open", "+ - a"] {
            assert!(parse_formula(bad).is_err(), "`{bad}` parsed");
        }
    }

    #[test]
    fn combinations_are_linear_and_checked() {
        let a = entry("a", &[(2, vec![1.0, 0.0]), (3, vec![1.0, 1.0])]);
        let b = entry("b", &[(3, vec![0.0, 2.0])]);
        let c = combine(&[(1.0, &a), (-0.5, &b)], None, "c", "a - 0.5*b").unwrap();
        assert_eq!(c.layer_numbers(), vec![3]);
        assert_eq!(c.layers[0].vector, vec![1.0, 0.0]);
        assert_eq!(c.formula.as_deref(), Some("a - 0.5*b"));
        assert!(combine(&[(1.0, &a), (1.0, &b)], Some(2), "c", "a + b").unwrap_err().to_string().contains("has no layer 2"));
        let wide = entry("w", &[(3, vec![1.0; 3])]);
        assert!(combine(&[(1.0, &a), (1.0, &wide)], None, "c", "a + w").unwrap_err().to_string().contains("wide"));
        let mut other = b.clone();
        other.model = "llama".into();
        assert!(combine(&[(1.0, &a), (1.0, &other)], None, "c", "a + b").unwrap_err().to_string().contains("combine vectors of one model"));
    }

    #[test]
    fn cosine_matrix_is_symmetric_with_unit_diagonal() {
        let (x, y, z) = (vec![1.0f32, 0.0], vec![1.0f32, 1.0], vec![0.0f32, 0.0]);
        let m = cosine_matrix(&[&x, &y, &z]);
        assert!((m[1] - 1.0 / 2f64.sqrt()).abs() < 1e-12 && m[1] == m[3]);
        assert_eq!((m[0], m[4], m[8]), (1.0, 1.0, 0.0));
    }

    #[test]
    fn gguf_export_maps_layers_and_refuses_what_llama_cpp_cannot_take() {
        let mut e = entry("v", &[(2, vec![1.0, 2.0]), (5, vec![3.0, 4.0])]);
        e.layers[1].front = Some((1, vec![9.0, 9.0]));
        let (bytes, notes) = e.to_gguf("gpt2").unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("single-vector form"));
        let cv = crate::gguf::read_control_vector(&bytes).unwrap();
        assert_eq!(cv.directions, vec![(1, vec![1.0, 2.0]), (4, vec![3.0, 4.0])]);
        let back = VectorEntry::from_gguf(&bytes, "x").unwrap();
        assert_eq!(back.layer_numbers(), vec![2, 5]);
        assert_eq!((back.name.as_str(), back.method.as_str(), back.model.as_str()), ("v", "mean_diff", "gpt2"));
        let low = entry("low", &[(1, vec![1.0])]);
        assert!(low.to_gguf("gpt2").unwrap_err().to_string().contains("layers 0 and 1 have no counterpart"));
        let mixed = entry("mixed", &[(0, vec![1.0]), (3, vec![2.0])]);
        let (bytes, notes) = mixed.to_gguf("gpt2").unwrap();
        assert!(notes[0].contains("layer 0 left out"), "{notes:?}");
        assert_eq!(crate::gguf::read_control_vector(&bytes).unwrap().directions, vec![(2, vec![2.0])]);
        let mut attn = entry("attn", &[(4, vec![1.0])]);
        attn.site = Site::AttnOut;
        assert!(attn.to_gguf("gpt2").unwrap_err().to_string().contains("cannot steer"));
    }
}
