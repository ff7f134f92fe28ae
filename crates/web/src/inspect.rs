//! The Inspect area's arithmetic, apart from the view so it is tested natively: the built-in
//! corpus, texts split into passages, a projection's exports (the CSV and JSON of `tiller
//! inspect project`), its histogram, the max-activating tokens, and the window that centres a
//! passage on its peak.

use serde_json::json;
use tiller_core::inspect::Measure;
use tiller_core::sweep::csv_field;

use crate::protocol::{ProjectedText, ProjectionView};

/// The built-in corpus: a few hundred varied passages of our own writing, one per line.
pub const CORPUS: &str = include_str!("../assets/corpus.txt");

/// Texts one projection takes at most (as `tiller inspect project`).
pub const MAX_TEXTS: usize = 10_000;

/// The built-in corpus's passages.
pub fn corpus() -> Vec<String> {
    lines(CORPUS)
}

/// One text per non-blank line.
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()).map(String::from).collect()
}

/// A plain-text file's passages: paragraphs (split at blank lines, their lines joined by
/// spaces), each longer than `max_chars` cut at the last sentence end (or space) before it.
pub fn passages(text: &str, max_chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut para = String::new();
    let flush = |para: &mut String, out: &mut Vec<String>| {
        let mut rest = para.trim();
        while rest.chars().count() > max_chars {
            let limit = rest.char_indices().nth(max_chars).map_or(rest.len(), |(i, _)| i);
            let head = &rest[..limit];
            let cut = head.rfind(". ").map(|i| i + 1).or_else(|| head.rfind(' ')).filter(|&i| i > 0).unwrap_or(limit);
            out.push(rest[..cut].trim().to_string());
            rest = rest[cut..].trim_start();
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
        para.clear();
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            flush(&mut para, &mut out);
        } else {
            if !para.is_empty() {
                para.push(' ');
            }
            para.push_str(line);
        }
    }
    flush(&mut para, &mut out);
    out
}

/// The measure's values of one text.
pub fn values(t: &ProjectedText, by: Measure) -> &[f32] {
    match by {
        Measure::Dot => &t.dot,
        Measure::Cosine => &t.cosine,
    }
}

/// (max, its position, mean) of one text by `by`.
pub fn summary(t: &ProjectedText, by: Measure) -> (f32, usize, f64) {
    let v = values(t, by);
    let (max, at) = v.iter().enumerate().fold((f32::NEG_INFINITY, 0), |(m, at), (i, &x)| if x > m { (x, i) } else { (m, at) });
    (max, at, v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64)
}

/// The `k` texts with the largest max, largest first (ties: the earlier text), as
/// `tiller inspect project` ranks them.
pub fn top_texts(view: &ProjectionView, by: Measure, k: usize) -> Vec<usize> {
    let maxes: Vec<f32> = view.texts.iter().map(|t| summary(t, by).0).collect();
    tiller_core::sample::top_k_indices(&maxes, k)
}

/// The `k` distinct tokens (by id) with the largest value anywhere in the texts: (id, text,
/// value, the text it is in), largest first.
pub fn max_tokens(view: &ProjectionView, by: Measure, k: usize) -> Vec<(u32, String, f32, usize)> {
    let mut best: std::collections::HashMap<u32, (f32, String, usize)> = std::collections::HashMap::new();
    for (i, t) in view.texts.iter().enumerate() {
        for ((&id, text), &x) in t.ids.iter().zip(&t.tokens).zip(values(t, by)) {
            let e = best.entry(id).or_insert((f32::NEG_INFINITY, text.clone(), i));
            if x > e.0 {
                *e = (x, text.clone(), i);
            }
        }
    }
    let mut all: Vec<(u32, String, f32, usize)> = best.into_iter().map(|(id, (x, t, i))| (id, t, x, i)).collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// The largest |value| over every token, for the heatmap's colour scale (1 when all are 0).
pub fn scale(view: &ProjectionView, by: Measure) -> f32 {
    let m = view.texts.iter().flat_map(|t| values(t, by).iter()).fold(0.0f32, |m, &x| m.max(x.abs()));
    if m > 0.0 && m.is_finite() {
        m
    } else {
        1.0
    }
}

/// A histogram of every token's value: `bins` equal bins from the smallest value to the
/// largest, (lower edge, upper edge, count) each.
pub fn histogram(view: &ProjectionView, by: Measure, bins: usize) -> Vec<(f32, f32, usize)> {
    let all = || view.texts.iter().flat_map(|t| values(t, by).iter().copied()).filter(|x| x.is_finite());
    let (lo, hi) = all().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let bins = bins.max(1);
    if lo > hi {
        return Vec::new();
    }
    let width = if hi > lo { (hi - lo) / bins as f32 } else { 1.0 };
    let mut counts = vec![0usize; bins];
    for x in all() {
        let b = (((x - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    counts.into_iter().enumerate().map(|(i, c)| (lo + i as f32 * width, lo + (i + 1) as f32 * width, c)).collect()
}

/// The tokens `from..to` shown around position `at` of a text of `len` tokens: `radius` on
/// each side where the text has them.
pub fn window(at: usize, len: usize, radius: usize) -> (usize, usize) {
    (at.saturating_sub(radius), (at + radius + 1).min(len))
}

/// `tiller inspect project --csv`'s table: `text_index,position,token_id,token,dot,cosine`.
pub fn to_csv(view: &ProjectionView) -> String {
    let mut out = String::from("text_index,position,token_id,token,dot,cosine\n");
    for (i, t) in view.texts.iter().enumerate() {
        for (k, (id, piece)) in t.ids.iter().zip(&t.tokens).enumerate() {
            out.push_str(&format!("{i},{k},{id},{},{},{}\n", csv_field(piece), t.dot[k], t.cosine[k]));
        }
    }
    out
}

/// What a JSON export says about the reading besides its texts.
#[derive(Debug, Clone, Copy)]
pub struct ExportMeta<'a> {
    /// The vector's name.
    pub name: &'a str,
    pub layer: usize,
    pub site: &'a str,
    pub by: Measure,
    pub bos: bool,
    /// How many texts `top` ranks.
    pub top: usize,
}

/// `tiller inspect project --json`'s document (`texts` the source texts, in order).
pub fn to_json(view: &ProjectionView, texts: &[String], meta: &ExportMeta) -> String {
    let ExportMeta { name, layer, site, by, bos, top } = *meta;
    let all: Vec<serde_json::Value> = view
        .texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let tokens: Vec<serde_json::Value> = t
                .ids
                .iter()
                .zip(&t.tokens)
                .enumerate()
                .map(|(k, (id, piece))| json!({"id": id, "text": piece, "dot": t.dot[k], "cosine": t.cosine[k]}))
                .collect();
            let (max, max_at, mean) = summary(t, by);
            json!({"index": i, "text": texts.get(i).cloned().unwrap_or_default(), "tokens": tokens, "max": max, "max_at": max_at, "mean": mean})
        })
        .collect();
    json!({
        "vector": name,
        "layer": layer,
        "site": site,
        "vector_norm": view.vector_norm,
        "by": by,
        "bos": bos,
        "texts": all,
        "top": top_texts(view, by, top),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ids: &[u32], dot: &[f32]) -> ProjectedText {
        ProjectedText {
            ids: ids.to_vec(),
            tokens: ids.iter().map(|i| format!("t{i}")).collect(),
            dot: dot.to_vec(),
            cosine: dot.iter().map(|x| x / 10.0).collect(),
        }
    }

    fn view() -> ProjectionView {
        ProjectionView {
            vector_norm: 2.0,
            texts: vec![text(&[1, 2, 3], &[1.0, 3.0, -2.0]), text(&[2, 4], &[5.0, 0.0]), text(&[5], &[-4.0])],
            cut: 0,
            top: vec![],
            bottom: vec![],
        }
    }

    #[test]
    fn the_corpus_is_a_few_hundred_passages() {
        let c = corpus();
        assert!((250..=1000).contains(&c.len()), "{} passages", c.len());
        assert!(CORPUS.len() < 400_000);
        assert!(c.iter().all(|p| !p.trim().is_empty() && p.len() < 1000));
    }

    #[test]
    fn passages_split_at_blank_lines_and_long_paragraphs_at_sentences() {
        let t = "One line\nwrapped here.\n\nSecond. Paragraph is long enough to cut.\n\n\n";
        assert_eq!(passages(t, 1000), vec!["One line wrapped here.", "Second. Paragraph is long enough to cut."]);
        assert_eq!(passages(t, 20), vec!["One line wrapped", "here.", "Second.", "Paragraph is long", "enough to cut."]);
        assert!(passages("", 10).is_empty());
        // No space to cut at: cut at the limit, on a character boundary.
        assert_eq!(passages("ééééé", 2), vec!["éé", "éé", "é"]);
    }

    #[test]
    fn rankings_histogram_and_exports() {
        let v = view();
        assert_eq!(top_texts(&v, Measure::Dot, 2), vec![1, 0]);
        assert_eq!(summary(&v.texts[0], Measure::Dot), (3.0, 1, 2.0 / 3.0));
        let toks = max_tokens(&v, Measure::Dot, 3);
        assert_eq!(toks.iter().map(|t| (t.0, t.2)).collect::<Vec<_>>(), vec![(2, 5.0), (1, 1.0), (4, 0.0)]);
        assert_eq!(toks[0].3, 1, "token 2's largest value is in text 1");
        assert_eq!(scale(&v, Measure::Dot), 5.0);
        let h = histogram(&v, Measure::Dot, 3);
        assert_eq!(h.iter().map(|b| b.2).collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!((h[0].0, h[2].1), (-4.0, 5.0));
        assert_eq!(window(1, 3, 8), (0, 3));
        assert_eq!(window(20, 100, 8), (12, 29));
        let csv = to_csv(&v);
        assert!(csv.starts_with("text_index,position,token_id,token,dot,cosine\n0,0,1,t1,1,0.1\n"), "{csv}");
        assert_eq!(csv.lines().count(), 1 + 6);
        let j: serde_json::Value = serde_json::from_str(&to_json(
            &v,
            &["a".into(), "b".into(), "c".into()],
            &ExportMeta { name: "v", layer: 2, site: "resid_pre", by: Measure::Dot, bos: false, top: 2 },
        ))
        .unwrap();
        assert_eq!(j["top"], json!([1, 0]));
        assert_eq!(j["texts"][0]["max_at"], 1);
        assert_eq!(j["texts"][1]["tokens"][0]["id"], 2);
        assert_eq!(j["by"], "dot");
    }
}
