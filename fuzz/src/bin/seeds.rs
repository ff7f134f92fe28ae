//! Writes the seed corpora (`cargo run -p tiller-fuzz --bin tiller-fuzz-seeds`), committed in
//! `fuzz/corpus/<target>/`: small valid inputs of each parser, from which the fuzzers mutate.

use std::path::{Path, PathBuf};

use tiller_core::arch::{config, weights::file_tensors};
use tiller_core::library::{LayerEntry, VectorEntry};
use tiller_core::weights::{write_safetensors, Dtype};
use tiller_core::{ModelSpec, Recipe, Site, Term};
use tiller_web::protocol::ModelSource;
use tiller_web::share::{self, ShareState};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = repo().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed");
}

/// A seed that is a file of the repository already (a fixture, a shipped dataset): a relative
/// link to it, so the corpus holds no second copy.
fn copy(target: &str, name: &str, rel: &str) {
    let dir = repo().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    assert!(repo().join(rel).is_file(), "{rel} is missing");
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(Path::new("../../..").join(rel), &link).expect("seed link");
}

/// A model of `spec`'s shapes with small deterministic values, as a safetensors file.
fn model(spec: &ModelSpec) -> Vec<u8> {
    let mut x = 1u32;
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file_tensors(spec)
        .into_iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let values: Vec<u8> = (0..n)
                .flat_map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    half::f16::from_f32(((x >> 16) % 200) as f32 / 1000.0 - 0.1).to_le_bytes()
                })
                .collect();
            (t.name, Dtype::F16, t.shape, values)
        })
        .collect();
    write_safetensors(&tensors)
}

fn with_header(flags: u8, seed: u16, file: &[u8], cfg: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend(seed.to_le_bytes());
    out.extend(file);
    if let Some(c) = cfg {
        out.push(0);
        out.extend(c);
    }
    out
}

const LLAMA_CONFIG: &str = r#"{"model_type":"llama","hidden_size":16,"intermediate_size":24,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":40,"max_position_embeddings":64,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true}"#;

/// A byte-level BPE tokenizer of a few tokens, and a tokenizer_config.json with a chat template.
const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":9,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},"post_processor":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true},"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":"","end_of_word_suffix":"","fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"H":0,"e":1,"l":2,"o":3,"Ġ":4,"w":5,"r":6,"d":7,"He":8,"<|endoftext|>":9,"ll":10,"Ġw":11},"merges":["H e","l l","Ġ w"]}}"#;
const TOKENIZER_CONFIG: &str = r#"{"bos_token":"<|endoftext|>","eos_token":"<|endoftext|>","chat_template":"{% for m in messages %}{{ bos_token }}{{ m['role'] }}: {{ m['content'] | trim }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"}"#;

fn main() {
    let gpt2 = ModelSpec::gpt2(1, 8, 2, 16, 40);
    let file = model(&gpt2);
    write("safetensors", "gpt2-length-known", &with_header(1, 7, &file, None));
    write("safetensors", "gpt2-streamed", &with_header(0, 1234, &file, None));
    let gpt2_cfg = br#"{"model_type":"gpt2","n_layer":1,"n_embd":8,"n_head":2,"n_positions":16,"vocab_size":40}"#;
    write("safetensors", "gpt2-with-config", &with_header(3, 99, &file, Some(gpt2_cfg)));
    let llama = config::from_json(LLAMA_CONFIG.as_bytes(), None).expect("the seed's llama config");
    write("safetensors", "llama-with-config", &with_header(3, 5, &model(&llama), Some(LLAMA_CONFIG.as_bytes())));

    for f in ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-neox"] {
        copy("config", f, &format!("tests/fixtures/{f}/config.json"));
    }
    write("config", "llama-small", LLAMA_CONFIG.as_bytes());
    write("config", "gpt2-small", gpt2_cfg);

    write("tokenizer", "bpe", TOKENIZER.as_bytes());
    write("tokenizer", "bpe-with-chat", format!("{TOKENIZER}\0{TOKENIZER_CONFIG}").as_bytes());

    let recipe =
        Recipe { terms: vec![Term::parse("1:4:Love").expect("term"), Term::parse("1:-4:Hate").expect("term")], ..Default::default() };
    let recipe_json = serde_json::to_vec(&recipe).expect("recipe");
    write("recipe", "default", &serde_json::to_vec(&Recipe::default()).expect("recipe"));
    write("recipe", "love-hate", &recipe_json);

    let state = ShareState { model: ModelSource::Default("gpt2".into()), recipe, vocab_ln_f: false, sweep: None };
    let json = serde_json::to_vec(&state).expect("state");
    write("share_link", "link", share::encode(&state).as_bytes());
    write("share_link", "json", &[&[0u8][..], &json].concat());

    copy("gguf", "from-gguf-py", "tests/fixtures/gguf/from-gguf-py.gguf");
    copy("gguf", "from-gguf-py-f16", "tests/fixtures/gguf/from-gguf-py-f16.gguf");
    copy("gguf", "tiller-export", "tests/fixtures/gguf/tiller-export.gguf");

    let entry = VectorEntry {
        name: "love".into(),
        model: "gpt2".into(),
        site: Site::ResidPre,
        method: "actadd".into(),
        source: "Love - Hate".into(),
        created: "2026-12-07T00:00:00Z".into(),
        formula: None,
        extra: Default::default(),
        layers: vec![
            LayerEntry { layer: 1, vector: vec![0.5, -1.0, 0.25, 2.0], front: None },
            LayerEntry { layer: 3, vector: vec![1.0; 4], front: None },
        ],
    };
    let st = entry.to_safetensors().expect("vector file");
    write("vector_file", "safetensors", &st);
    write("vector_file", "safetensors-and-formula", &[&st[..], b"\x000.5*love - 2*hate + calm"].concat());
    write("vector_file", "gguf", &entry.to_gguf("gpt2").expect("gguf").0);

    for f in ["sentiment", "optimism-ab"] {
        copy("pairs", f, &format!("datasets/{f}.jsonl"));
    }
    write("pairs", "lists", b"I love this\nWhat a joy\0I hate this\nWhat a pain");
    for f in ["antonyms", "country-capital"] {
        copy("fv_task", f, &format!("datasets/icl/{f}.jsonl"));
    }
    write("fv_task", "pasted", b"hot -> cold\nbig -> small\nup -> down\n");
    copy("iti_statements", "statements", "datasets/icl/statements.jsonl");
    write("melbo_init", "json", b"[[0.5, -1.0, 0.25, 2.0], [1, 0, 0, 0]]");
    println!("wrote {}", repo().join("fuzz/corpus").display());
}
