//! One fuzz target per parser of what a user (or a link, or a model repository) hands Tiller.
//! A target takes any bytes and must return: an `Err` is the expected answer to bad input,
//! a panic, an abort or unbounded memory is a bug. The same functions run under AFL++
//! (`src/bin/afl.rs`, scripts/fuzz.sh) and in the test command's bounded, seeded mutation test
//! (tests/mutation.rs), both from the seed corpora in `corpus/<target>/` (written by
//! `src/bin/seeds.rs`).

use tiller_core::arch::config;
use tiller_core::library::VectorEntry;
use tiller_core::weights::{F32Sink, StreamLoader};
use tiller_core::{fv, gguf, iti, library, melbo, pairs, ModelSpec, Recipe, Tokenizer};

/// A target: any bytes in, nothing out (it must only return).
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and the AFL binary's `TILLER_FUZZ_TARGET` use.
pub const TARGETS: [(&str, Target); 11] = [
    ("safetensors", safetensors),
    ("config", config_json),
    ("tokenizer", tokenizer),
    ("share_link", share_link),
    ("recipe", recipe),
    ("gguf", gguf_file),
    ("vector_file", vector_file),
    ("pairs", pairs_dataset),
    ("fv_task", fv_task),
    ("iti_statements", iti_statements),
    ("melbo_init", melbo_init),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The small model the targets check against (recipes, tokenizers).
pub fn spec() -> ModelSpec {
    ModelSpec::gpt2(2, 16, 2, 64, 300)
}

/// Splits at the first `\0`: two inputs in one (a file and its companion).
fn split(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// The most parameters the safetensors target's CPU sink keeps: a fuzz input's header may
/// claim any shapes, the sink refuses more (as the CPU engine refuses a model too big for it).
pub const SINK_PARAMETERS: u64 = 2_000_000;

/// A safetensors file through `StreamLoader` as the browser streams it: the first byte's bits
/// say whether the file's length is known (bit 0) and whether config.json comes with it
/// (bit 1: the config is the part after the first `\0` of the rest); the next two bytes seed
/// the chunk sizes (1 to 4096 bytes).
pub fn safetensors(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (seed, file) = match rest {
        [a, b, file @ ..] => (u16::from_le_bytes([*a, *b]) as u64, file),
        _ => return,
    };
    let (file, cfg) = if flags & 2 != 0 { split(file) } else { (file, None) };
    let len = (flags & 1 != 0).then_some(file.len() as u64);
    let mut loader = StreamLoader::new(cfg, len);
    let mut sink = F32Sink::with_limit(SINK_PARAMETERS);
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut at = 0;
    while at < file.len() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = (1 + (state % 4096) as usize).min(file.len() - at);
        if loader.feed(&file[at..at + n], &mut sink).is_err() {
            return;
        }
        at += n;
    }
    if loader.finish().is_ok() {
        let _ = sink.into_weights();
    }
}

/// config.json → the model spec, alone and against a spec the tensors imply.
pub fn config_json(data: &[u8]) {
    let _ = config::from_json(data, None);
    let _ = config::from_json(data, Some(&spec()));
}

/// tokenizer.json (before the first `\0`) and tokenizer_config.json (after it), checked
/// against a model; what loads then encodes, decodes and renders its chat template.
pub fn tokenizer(data: &[u8]) {
    let (json, cfg) = split(data);
    let spec = spec();
    for spec in [None, Some(&spec)] {
        let Ok(tok) = Tokenizer::from_files(json, cfg, spec) else { continue };
        if let Ok(ids) = tok.encode("Hello, world! <|endoftext|> ünïcødé") {
            let _ = tok.decode(&ids);
        }
        let _ = tok.token_text(u32::MAX);
        let _ = tok.bos_id();
        if tok.has_chat_template() {
            let _ = tok.render_chat(Some("You are a helpful assistant."), "Hi");
        }
    }
}

/// A share link's fragment as typed; with a first byte of `\0`, the rest as the link's JSON
/// (packed and encoded as the page does), so the fuzzer reaches the settings and their caps.
pub fn share_link(data: &[u8]) {
    use tiller_web::share;
    match data.split_first() {
        Some((0, json)) => {
            let packed = share::pack_json(json);
            let _ = share::decode(&packed);
        }
        _ => {
            let _ = share::decode(&String::from_utf8_lossy(data));
        }
    }
}

/// A recipe file (`--recipe`) parsed and validated against a model.
pub fn recipe(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<Recipe>(data) {
        let _ = r.validate(&spec());
    }
}

/// A GGUF control vector (llama.cpp's format), as a vector file and on its own.
pub fn gguf_file(data: &[u8]) {
    let _ = gguf::read_control_vector(data);
    if let Ok(v) = VectorEntry::from_gguf(data, "fuzz") {
        let _ = v.check();
        let _ = v.to_gguf("gpt2");
    }
}

/// A vector file of the library (safetensors or GGUF, by its bytes), and a combination formula
/// (the part after the first `\0`).
pub fn vector_file(data: &[u8]) {
    let (file, formula) = split(data);
    if let Ok(v) = VectorEntry::from_bytes(file, "fuzz") {
        let _ = v.check();
        let _ = v.to_safetensors();
        let _ = v.norms();
    }
    if let Some(f) = formula {
        let _ = library::parse_formula(&String::from_utf8_lossy(f));
    }
}

/// A CAA pairs dataset (JSON or JSONL), and two pasted lists (split at the first `\0`).
pub fn pairs_dataset(data: &[u8]) {
    let _ = pairs::parse_dataset(data);
    let (a, b) = split(data);
    if let Some(b) = b {
        let _ = pairs::from_lists(&String::from_utf8_lossy(a), &String::from_utf8_lossy(b));
    }
}

/// A function-vector task file, and the same bytes as pasted examples; heads lists.
pub fn fv_task(data: &[u8]) {
    let _ = fv::parse_task(data);
    let text = String::from_utf8_lossy(data);
    let _ = fv::parse_pasted(&text);
    let _ = fv::Head::parse_list(&text, &spec());
}

/// An ITI statements dataset.
pub fn iti_statements(data: &[u8]) {
    let _ = iti::parse_statements(data);
}

/// `tiller melbo --init`: a JSON list of vectors, or the safetensors file `--out` writes.
pub fn melbo_init(data: &[u8]) {
    let _ = melbo::parse_init_json(data);
    let _ = melbo::MelboSet::from_safetensors(data);
}
