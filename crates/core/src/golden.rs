//! Test support shared by the crates' tests: the golden fixtures dumped from Hugging Face
//! (`tests/fixtures/make_golden.py` for GPT-2, `make_family_golden.py` for the other
//! families) and a tolerance check that reports the worst element.

use std::path::PathBuf;

use serde::Deserialize;

/// `tests/fixtures` of the repository.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The golden GPT-2s.
pub const GPT2_MODELS: [&str; 2] = ["tiny-gpt2", "tiny-gpt2-f32"];

/// Every golden model: the GPT-2s, then one of each other family (GQA with llama3 rope
/// scaling and a chat template; q/k/v biases, an untied head and a sharded bf16 checkpoint;
/// partial rotary, a parallel residual, erf-GELU and a padded vocabulary).
pub const MODELS: [&str; 5] = ["tiny-gpt2", "tiny-gpt2-f32", "tiny-llama", "tiny-qwen2", "tiny-neox"];

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

fn resid_pre() -> String {
    "resid_pre".to_string()
}

#[derive(Debug, Clone, Deserialize)]
pub struct SteeredGolden {
    /// Where the vectors are captured and added (`resid_pre`, `attn_out`, `mlp_out`).
    #[serde(default = "resid_pre")]
    pub site: String,
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

/// A prompt rendered through the model's chat template by `apply_chat_template(...,
/// add_generation_prompt=True)`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatGolden {
    pub system: Option<String>,
    pub prompt: String,
    pub text: String,
    pub tokens: Vec<u32>,
    pub greedy: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Golden {
    /// The token prepended when BOS is on, and ActAdd's padding token.
    pub bos_id: Option<u32>,
    pub pad_id: Option<u32>,
    #[serde(default)]
    pub chat: Vec<ChatGolden>,
    pub probe_ids: Vec<u32>,
    pub prompts: Vec<PromptGolden>,
    pub steered: Vec<SteeredGolden>,
}

/// A golden model's files.
pub struct Fixture {
    pub dir: PathBuf,
    /// `model.safetensors` (empty for a sharded fixture).
    pub safetensors: Vec<u8>,
    /// The shards of `model.safetensors.index.json`, in order.
    pub shards: Vec<Vec<u8>>,
    pub index_json: Option<Vec<u8>>,
    pub config_json: Option<Vec<u8>>,
    pub tokenizer_json: Vec<u8>,
    pub tokenizer_config_json: Option<Vec<u8>>,
    pub golden: Golden,
}

pub fn load_fixture(name: &str) -> Fixture {
    let dir = fixtures_dir().join(name);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("reading {}/{f}: {e}", dir.display()));
    let golden: Golden = serde_json::from_slice(&read("golden.json")).expect("golden.json parses");
    let index_json = std::fs::read(dir.join("model.safetensors.index.json")).ok();
    let (safetensors, shards) = match &index_json {
        None => (read("model.safetensors"), Vec::new()),
        Some(index) => {
            let names = crate::weights::shard_files(index).expect("the fixture's index parses");
            (Vec::new(), names.iter().map(|n| read(n)).collect())
        }
    };
    Fixture {
        safetensors,
        shards,
        index_json,
        config_json: std::fs::read(dir.join("config.json")).ok(),
        tokenizer_json: read("tokenizer.json"),
        tokenizer_config_json: std::fs::read(dir.join("tokenizer_config.json")).ok(),
        golden,
        dir,
    }
}

impl Fixture {
    /// Streams the fixture's weights (one file or its shards) into a sink.
    pub fn load_into(&self, sink: &mut dyn crate::weights::TensorSink) -> crate::Result<crate::ModelSpec> {
        match &self.index_json {
            None => crate::weights::load_from_bytes(&self.safetensors, self.config_json.as_deref(), sink),
            Some(index) => {
                let config = self.config_json.as_deref().expect("a sharded fixture has config.json");
                let (mut loader, _) = crate::weights::StreamLoader::sharded(config, index)?;
                for shard in &self.shards {
                    loader.start_file(Some(shard.len() as u64))?;
                    loader.feed(shard, sink)?;
                    loader.end_file()?;
                }
                loader.finish()
            }
        }
    }

    /// The fixture's weights in f32.
    pub fn cpu_weights(&self) -> crate::CpuWeights {
        let mut sink = crate::weights::F32Sink::default();
        self.load_into(&mut sink).expect("the fixture loads");
        sink.into_weights().expect("the fixture has every tensor")
    }

    /// The fixture on the CPU reference, with its tokenizer.
    pub fn cpu_model(&self) -> (crate::CpuModel, crate::Tokenizer) {
        let w = self.cpu_weights();
        let tok = self.tokenizer(w.spec());
        (crate::CpuModel::new(w), tok)
    }

    pub fn tokenizer(&self, spec: &crate::ModelSpec) -> crate::Tokenizer {
        crate::Tokenizer::from_files(&self.tokenizer_json, self.tokenizer_config_json.as_deref(), Some(spec)).expect("tokenizer loads")
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
