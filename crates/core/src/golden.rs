//! Test support shared by the crates' tests: the golden fixtures dumped from Hugging Face
//! (`tests/fixtures/make_golden.py`) and a tolerance check that reports the worst element.

use std::path::PathBuf;

use serde::Deserialize;

/// `tests/fixtures` of the repository.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The golden models.
pub const MODELS: [&str; 2] = ["tiny-gpt2", "tiny-gpt2-f32"];

#[derive(Debug, Clone, Deserialize)]
pub struct TopEntry {
    pub id: u32,
    pub logit: f32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PositionGolden {
    pub top: Vec<TopEntry>,
    pub probe: Vec<f32>,
    pub logsumexp: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PromptGolden {
    pub prompt: String,
    pub bos: bool,
    pub tokens: Vec<u32>,
    pub positions: Vec<PositionGolden>,
    /// [L][T][C]
    pub resid_pre: Vec<Vec<Vec<f32>>>,
    pub greedy: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TermGolden {
    pub layer: usize,
    pub coeff: f32,
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VectorGolden {
    pub layer: usize,
    /// [n][C]
    pub rows: Vec<Vec<f32>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SteeredGolden {
    pub prompt: String,
    pub bos: bool,
    pub tokens: Vec<u32>,
    pub terms: Vec<TermGolden>,
    pub term_tokens: Vec<Vec<u32>>,
    pub vectors: Vec<VectorGolden>,
    pub positions: Vec<PositionGolden>,
    pub greedy: Vec<u32>,
    pub greedy_unsteered: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Golden {
    pub probe_ids: Vec<u32>,
    pub prompts: Vec<PromptGolden>,
    pub steered: Vec<SteeredGolden>,
}

/// A golden model's files.
pub struct Fixture {
    pub dir: PathBuf,
    pub safetensors: Vec<u8>,
    pub config_json: Option<Vec<u8>>,
    pub tokenizer_json: Vec<u8>,
    pub golden: Golden,
}

pub fn load_fixture(name: &str) -> Fixture {
    let dir = fixtures_dir().join(name);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("reading {}/{f}: {e}", dir.display()));
    let golden: Golden = serde_json::from_slice(&read("golden.json")).expect("golden.json parses");
    Fixture {
        safetensors: read("model.safetensors"),
        config_json: std::fs::read(dir.join("config.json")).ok(),
        tokenizer_json: read("tokenizer.json"),
        golden,
        dir,
    }
}

/// `|got - want| <= atol + rtol * |want|` for every element; the error names the worst one.
pub fn check_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!("{what}: length {} != expected {}", got.len(), want.len()));
    }
    let mut worst = (0usize, 0.0f32, f32::NEG_INFINITY);
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let excess = if err.is_nan() { f32::INFINITY } else { err - (atol + rtol * w.abs()) };
        if excess > worst.2 {
            worst = (i, err, excess);
        }
        if excess > 0.0 {
            bad += 1;
        }
    }
    let (i, err, excess) = worst;
    if excess > 0.0 {
        return Err(format!(
            "{what}: {bad} of {} elements out of tolerance (atol {atol}, rtol {rtol}); worst at [{i}]: got {}, want {}, |err| {err}",
            got.len(),
            got[i],
            want[i]
        ));
    }
    Ok(got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max))
}

/// Compares a top-k list with the golden one: ids must match in order, except that two ids
/// may trade places where their golden logits are within `tol` (a near-tie).
pub fn check_top(what: &str, got: &[(u32, f32)], want: &[TopEntry], tol: f32) -> Result<(), String> {
    let k = want.len().min(got.len());
    for i in 0..k {
        let (gid, glogit) = got[i];
        let w = &want[i];
        if (glogit - w.logit).abs() > tol {
            return Err(format!("{what}: rank {i} logit {glogit} vs golden {} (id {gid} vs {})", w.logit, w.id));
        }
        if gid != w.id {
            let tied = want.iter().any(|o| o.id == gid && (o.logit - w.logit).abs() <= tol);
            if !tied {
                return Err(format!("{what}: rank {i} is id {gid}, golden has {} (not a near-tie within {tol})", w.id));
            }
        }
    }
    Ok(())
}
