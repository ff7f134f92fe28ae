//! Human-readable output of the CLI.

use serde::Serialize;
use tiller_core::generate::Generation;
use tiller_core::sweep::SweepRow;
use tiller_core::vocab::{LayerVocab, VocabEntry};
use tiller_core::Recipe;

#[derive(Serialize)]
pub struct TopLogit {
    pub id: u32,
    pub token: String,
    pub logit: f32,
}

/// A token as a quoted, escaped string (spaces and newlines visible).
fn show(token: &str) -> String {
    format!("{token:?}")
}

pub fn print_logits(device: &str, prompt: &[u32], top: &[TopLogit]) {
    outln!("prompt tokens ({}): {:?}", prompt.len(), prompt);
    outln!("engine: {device}");
    outln!("{:>4}  {:>6}  {:>10}  token", "rank", "id", "logit");
    for (i, t) in top.iter().enumerate() {
        outln!("{:>4}  {:>6}  {:>10.4}  {}", i + 1, t.id, t.logit, show(&t.token));
    }
}

/// Wraps text to lines of at most `width` characters, breaking at spaces where possible.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_inclusive(' ') {
            let mut word = word.to_string();
            while line.chars().count() + word.chars().count() > width {
                if line.is_empty() {
                    let head: String = word.chars().take(width).collect();
                    word = word.chars().skip(width).collect();
                    lines.push(head);
                } else {
                    lines.push(std::mem::take(&mut line));
                }
            }
            line.push_str(&word);
        }
        lines.push(line);
    }
    lines
}

/// `vectors`: the saved-vector terms (`--vector` specs), shown after the text terms.
pub fn print_generation(device: &str, recipe: &Recipe, gen: &Generation, vectors: &[String]) {
    let width = 48;
    let mut terms: Vec<String> = recipe.terms.iter().map(|t| format!("{:+} × {:?} @ layer {}", t.coeff, t.text, t.layer)).collect();
    terms.extend(vectors.iter().map(|v| format!("vector {v}")));
    outln!("prompt: {:?}{}", recipe.prompt, if recipe.bos { " (with BOS)" } else { "" });
    outln!("steering: {}", if terms.is_empty() { "none".to_string() } else { terms.join(", ") });
    let s = &recipe.sampling;
    outln!(
        "positions: {}, site: {}, seed: {}, {}",
        recipe.positions.as_str(),
        recipe.site.as_str(),
        recipe.seed,
        if s.greedy {
            "greedy".to_string()
        } else {
            format!(
                "temperature {}, top-p {}, top-k {}, freq penalty {}, rep penalty {}",
                s.temperature, s.top_p, s.top_k, s.freq_penalty, s.rep_penalty
            )
        }
    );
    outln!("engine: {device}\n");
    let rule = "─".repeat(width);
    outln!("{:<width$} │ {}", "UNSTEERED", "STEERED");
    for (i, (u, st)) in gen.unsteered.iter().zip(&gen.steered).enumerate() {
        outln!("{rule}─┼─{rule}  ({})", i + 1);
        let (a, b) = (wrap(&u.text, width), wrap(&st.text, width));
        for k in 0..a.len().max(b.len()) {
            let l = a.get(k).map(String::as_str).unwrap_or("");
            let r = b.get(k).map(String::as_str).unwrap_or("");
            outln!("{l:<width$} │ {r}");
        }
    }
}

fn entries_line(e: &[VocabEntry]) -> String {
    e.iter().map(|v| format!("{} {:.2}", show(&v.token), v.score)).collect::<Vec<_>>().join(", ")
}

pub fn print_vocab(vocab: &[LayerVocab], ln_f: bool) {
    outln!(
        "Decoded vocabulary (v · wteᵀ{}): a heuristic view of each steering vector, not a decoding.",
        if ln_f { " after ln_f" } else { "" }
    );
    for lv in vocab {
        outln!("\nlayer {} ({} positions)", lv.layer, lv.positions.len());
        for (p, top) in lv.positions.iter().enumerate() {
            let labels: Vec<String> = lv.term_tokens.iter().map(|t| show(t.get(p).map(String::as_str).unwrap_or(""))).collect();
            outln!("  pos {p} [{}]", labels.join(" / "));
            outln!("    top:    {}", entries_line(top));
            outln!("    bottom: {}", entries_line(&lv.positions_bottom[p]));
        }
        outln!("  sum over positions");
        outln!("    top:    {}", entries_line(&lv.sum));
        outln!("    bottom: {}", entries_line(&lv.bottom));
    }
}

pub fn print_sweep(rows: &[SweepRow]) {
    outln!("{:<16} {:>5} {:>8} {:>10} {:>10} {:>7}", "set", "layer", "coeff", "ppl ratio", "KL", "tokens");
    for r in rows {
        outln!("{:<16} {:>5} {:>8} {:>10.4} {:>10.5} {:>7}", r.set, r.layer, r.coeff, r.ppl_ratio, r.kl, r.tokens);
    }
}
