//! The safetensors loader: every malformed file is an `Err` that says what is wrong (never a
//! panic), dtypes and name prefixes do not change the weights, and streaming in any chunking
//! equals loading from one buffer.

use half::{bf16, f16};
use serde_json::{json, Value};
use tiller_core::arch::weights::file_tensors;
use tiller_core::golden::load_fixture;
use tiller_core::weights::{load_from_bytes, write_safetensors, Dtype, StreamLoader, TensorSink, TensorView};
use tiller_core::{CpuWeights, ModelSpec, TillerError};

/// A small GPT-2 (C = 8, so one head when inferred without config.json).
fn cfg() -> ModelSpec {
    ModelSpec::gpt2(2, 8, 1, 16, 40)
}

/// Every tensor a GPT-2 file holds, by name, with its shape.
fn required_tensors(cfg: &ModelSpec) -> Vec<(String, Vec<usize>)> {
    file_tensors(cfg).into_iter().map(|t| (t.name, t.shape)).collect()
}

/// xorshift64*: seeded data without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 33) as usize % n
    }
}

/// The small model's tensors in f32, by canonical name, in `required_tensors` order.
fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = Rng::new(7);
    required_tensors(&cfg())
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name, shape, (0..n).map(|_| rng.uniform()).collect())
        })
        .collect()
}

fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        Dtype::BF16 => v.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
    }
}

fn file(dtype: Dtype, prefix: &str) -> Vec<u8> {
    let t: Vec<_> = tensors().into_iter().map(|(n, s, v)| (format!("{prefix}{n}"), dtype, s, encode(&v, dtype))).collect();
    write_safetensors(&t)
}

/// Splits a file into its JSON header and data.
fn split(bytes: &[u8]) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

fn join(header: &serde_json::Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out
}

/// Removes a tensor from a file given as header and data, closing the gap it leaves (the
/// format allows none).
fn remove(header: &mut serde_json::Map<String, Value>, data: &mut Vec<u8>, name: &str) {
    let o = header.remove(name).unwrap()["data_offsets"].clone();
    let (s, e) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
    data.drain(s as usize..e as usize);
    for (_, t) in header.iter_mut() {
        if let Some(o) = t.get_mut("data_offsets") {
            let (a, b) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
            if a >= e {
                *o = json!([a - (e - s), b - (e - s)]);
            }
        }
    }
}

/// Appends a tensor to a file given as header and data.
fn append(header: &mut serde_json::Map<String, Value>, data: &mut Vec<u8>, name: &str, dtype: &str, shape: &[usize], bytes: &[u8]) {
    let start = data.len();
    data.extend_from_slice(bytes);
    header.insert(name.to_string(), json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
}

fn load(bytes: &[u8]) -> Result<CpuWeights, TillerError> {
    CpuWeights::from_bytes(bytes, None)
}

fn err(what: &str, bytes: &[u8]) -> TillerError {
    match load(bytes) {
        Ok(_) => panic!("{what}: loaded, should have failed"),
        Err(e) => e,
    }
}

/// Records what a sink is handed.
#[derive(Default, PartialEq, Debug)]
struct Recorder {
    cfg: Option<ModelSpec>,
    begins: usize,
    tensors: Vec<(String, Vec<usize>, Dtype, Vec<u8>)>,
}

impl TensorSink for Recorder {
    fn begin(&mut self, cfg: &ModelSpec) -> tiller_core::Result<()> {
        self.cfg = Some(*cfg);
        self.begins += 1;
        Ok(())
    }
    fn tensor(&mut self, t: TensorView<'_>) -> tiller_core::Result<()> {
        assert_eq!(t.bytes.len(), t.numel() * t.dtype.size());
        self.tensors.push((t.name.to_string(), t.shape.to_vec(), t.dtype, t.bytes.to_vec()));
        Ok(())
    }
}

#[test]
fn the_small_model_loads() {
    let w = load(&file(Dtype::F32, "")).unwrap();
    assert_eq!(*w.spec(), cfg());
    for (name, _, v) in tensors() {
        assert_eq!(w.get(&name), v.as_slice(), "{name}");
    }
}

#[test]
fn truncated_files_are_errors() {
    let good = file(Dtype::F32, "");
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let cuts = [
        0,
        1,
        4,
        7,
        8,
        9,
        8 + hlen / 2,
        8 + hlen - 1,
        8 + hlen,
        8 + hlen + 1,
        8 + hlen + 100,
        (good.len() + hlen) / 2,
        good.len() - 4,
        good.len() - 1,
    ];
    for cut in cuts {
        let bytes = &good[..cut];
        let e = err(&format!("cut at {cut}"), bytes);
        assert!(matches!(e, TillerError::Safetensors(_)), "cut at {cut}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains("truncated") || msg.contains("shorter than 8 bytes") || msg.contains("ends at byte"), "cut at {cut}: {msg}");
        // The same through the stream without knowing the length: an error at feed or at finish.
        let mut loader = StreamLoader::new(None, None);
        let mut sink = Recorder::default();
        let streamed = loader.feed(bytes, &mut sink).and_then(|_| loader.finish());
        let e = streamed.expect_err(&format!("streamed cut at {cut} should fail"));
        assert!(e.to_string().contains("truncated") || e.to_string().contains("ended"), "streamed cut at {cut}: {e}");
    }
    // A body cut names the tensor it stopped in.
    let mut loader = StreamLoader::new(None, None);
    loader.feed(&good[..good.len() - 1], &mut Recorder::default()).unwrap();
    let msg = loader.finish().unwrap_err().to_string();
    assert!(msg.contains("inside tensor `ln_f.bias`"), "{msg}");
}

#[test]
fn garbage_and_absurd_headers_are_errors() {
    let mut rng = Rng::new(3);
    for len in [8usize, 9, 100, 4096] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let e = err(&format!("{len} random bytes"), &bytes);
        assert!(matches!(e, TillerError::Safetensors(_)), "{e:?}");
    }
    for n in [0u64, u64::MAX, 100 * 1024 * 1024 + 1, 1 << 40] {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let msg = err(&format!("header length {n}"), &bytes).to_string();
        assert!(msg.contains(&format!("the header claims {n} bytes")), "{msg}");
    }
    // A plausible length past the end of the file.
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\": 1}");
    let msg = err("header past the end", &bytes).to_string();
    assert!(msg.contains("the header claims 1000 bytes but the file holds only 16"), "{msg}");
    // Headers that are not JSON objects, or entries missing fields.
    for header in [
        &b"not json"[..],
        b"[1, 2]",
        b"{\"wte.weight\": {\"shape\": [1]}}",
        b"{\"wte.weight\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}",
    ] {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        let e = err(&String::from_utf8_lossy(header), &bytes);
        assert!(matches!(e, TillerError::Safetensors(_)), "{e:?}");
    }
}

#[test]
fn offsets_out_of_range_are_errors() {
    let (header, data) = split(&file(Dtype::F32, ""));
    let shift = |name: &str, f: &dyn Fn(u64, u64) -> (u64, u64)| {
        let mut h = header.clone();
        let o = h[name]["data_offsets"].as_array().unwrap().clone();
        let (s, e) = f(o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
        h.get_mut(name).unwrap()["data_offsets"] = json!([s, e]);
        join(&h, &data)
    };
    let len = data.len() as u64;
    let msg = err("past the end", &shift("ln_f.bias", &|_, _| (len, len + 32))).to_string();
    assert!(msg.contains("tensor `ln_f.bias` ends at byte") && msg.contains("truncated or corrupt"), "{msg}");
    let msg = err("absurd end", &shift("ln_f.bias", &|_, _| (u64::MAX - 32, u64::MAX))).to_string();
    assert!(msg.contains("ln_f.bias"), "{msg}");
    let msg = err("reversed", &shift("ln_f.bias", &|s, e| (e, s))).to_string();
    assert!(msg.contains("ends before it starts"), "{msg}");
    let msg = err("span mismatch", &shift("ln_f.bias", &|s, e| (s, e - 4))).to_string();
    assert!(msg.contains("should span 32 bytes, but its offsets span 28"), "{msg}");
    let msg = err("overlap", &shift("ln_f.bias", &|_, _| (0, 32))).to_string();
    assert!(msg.contains("overlap"), "{msg}");
}

/// The safetensors rules (issue 17): the tensors cover the data section exactly, no gaps, no
/// trailing bytes, no name twice; a header length one byte off is caught, streamed or not.
#[test]
fn gaps_trailing_bytes_and_repeated_names_are_errors() {
    let good = file(Dtype::F32, "");
    let (header, data) = split(&good);
    // A gap: one tensor moved 4 bytes later, the data grown to keep the end.
    let mut h = header.clone();
    let o = h["ln_f.bias"]["data_offsets"].clone();
    let (s0, e0) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
    let mut d = data.clone();
    if e0 == data.len() as u64 {
        h.get_mut("ln_f.bias").unwrap()["data_offsets"] = json!([s0 + 4, e0 + 4]);
        d.splice(s0 as usize..s0 as usize, [0u8; 4]);
        let msg = err("gap", &join(&h, &d)).to_string();
        assert!(msg.contains("belong to no tensor") && msg.contains("ln_f.bias"), "{msg}");
    }
    // A gap in the middle: a tensor removed without closing it.
    let mut h = header.clone();
    h.remove("h.0.ln_1.bias");
    let msg = err("hole", &join(&h, &data)).to_string();
    assert!(msg.contains("belong to no tensor"), "{msg}");
    // Trailing bytes.
    let mut d = data.clone();
    d.extend_from_slice(&[0u8; 3]);
    let msg = err("trailing", &join(&header, &d)).to_string();
    assert!(msg.contains("3 bytes after the last tensor"), "{msg}");
    // The header length one byte short (the header padded with a space): every tensor would
    // shift by a byte; instead it is an error.
    let mut json = serde_json::to_vec(&header).unwrap();
    json.push(b' ');
    let mut shifted = ((json.len() - 1) as u64).to_le_bytes().to_vec();
    shifted.extend_from_slice(&json);
    shifted.extend_from_slice(&data);
    let msg = err("header one byte short", &shifted).to_string();
    assert!(msg.contains("after the last tensor"), "{msg}");
    // Streamed without the file's length, the trailing bytes are caught as they arrive.
    let mut d = data.clone();
    d.extend_from_slice(&[7u8; 5]);
    let bytes = join(&header, &d);
    let mut loader = tiller_core::weights::StreamLoader::new(None, None);
    let mut sink = tiller_core::weights::F32Sink::default();
    let e = bytes.chunks(13).try_for_each(|c| loader.feed(c, &mut sink)).unwrap_err();
    assert!(e.to_string().contains("past its last tensor"), "{e}");
    // A name twice in the JSON (a map would keep the last one silently).
    let text = String::from_utf8(serde_json::to_vec(&header).unwrap()).unwrap();
    let entry = serde_json::to_string(&header["ln_f.bias"]).unwrap();
    let twice = text.replacen('{', &format!("{{\"ln_f.bias\":{entry},"), 1);
    let mut bytes = (twice.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(twice.as_bytes());
    bytes.extend_from_slice(&data);
    let msg = err("repeated name", &bytes).to_string();
    assert!(msg.contains("names `ln_f.bias` twice"), "{msg}");
    // And the good file still loads, streamed in small chunks without its length.
    let mut loader = tiller_core::weights::StreamLoader::new(None, None);
    let mut sink = tiller_core::weights::F32Sink::default();
    good.chunks(7).try_for_each(|c| loader.feed(c, &mut sink)).unwrap();
    loader.finish().unwrap();
}

/// A NaN or an infinity in a needed tensor is refused at load, naming the tensor and the
/// count, in every dtype (issue 17: such a model ranked NaN logits first and swept to KL 0).
#[test]
fn non_finite_weights_are_refused_with_the_tensor_named() {
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let (header, mut data) = split(&file(dtype, ""));
        let o = header["h.1.mlp.c_fc.weight"]["data_offsets"].clone();
        let start = o[0].as_u64().unwrap() as usize;
        let size = match dtype {
            Dtype::F32 => 4,
            _ => 2,
        };
        let (nan, inf): (Vec<u8>, Vec<u8>) = match dtype {
            Dtype::F32 => (f32::NAN.to_le_bytes().to_vec(), f32::NEG_INFINITY.to_le_bytes().to_vec()),
            Dtype::F16 => (half::f16::NAN.to_le_bytes().to_vec(), half::f16::INFINITY.to_le_bytes().to_vec()),
            Dtype::BF16 => (half::bf16::NAN.to_le_bytes().to_vec(), half::bf16::NEG_INFINITY.to_le_bytes().to_vec()),
        };
        data[start..start + size].copy_from_slice(&nan);
        data[start + 3 * size..start + 4 * size].copy_from_slice(&inf);
        let bytes = join(&header, &data);
        let msg = err("non-finite", &bytes).to_string();
        assert!(msg.contains("tensor `h.1.mlp.c_fc.weight` holds 2 values that are not finite"), "{dtype:?}: {msg}");
        assert!(msg.contains("--allow-non-finite"), "the message names the override: {msg}");
        // Asked to, the loader takes them and says which tensor holds them.
        let mut loader = StreamLoader::new(None, Some(bytes.len() as u64)).allow_non_finite();
        let mut sink = Recorder::default();
        loader.feed(&bytes, &mut sink).unwrap();
        assert_eq!(loader.warnings().len(), 1, "{dtype:?}: {:?}", loader.warnings());
        assert!(
            loader.warnings()[0]
                .starts_with("tensor `h.1.mlp.c_fc.weight` holds 2 values that are not finite (NaN or infinity); loaded anyway"),
            "{:?}",
            loader.warnings()
        );
        loader.finish().unwrap();
    }
    // The largest finite values are fine.
    assert_eq!(tiller_core::weights::non_finite(Dtype::F16, &half::f16::MAX.to_le_bytes()), 0);
    assert_eq!(tiller_core::weights::non_finite(Dtype::F32, &f32::MAX.to_le_bytes()), 0);
}

#[test]
fn unsupported_dtype_is_an_error() {
    let (mut header, mut data) = split(&file(Dtype::F32, ""));
    remove(&mut header, &mut data, "ln_f.bias");
    append(&mut header, &mut data, "ln_f.bias", "I64", &[8], &[0u8; 64]);
    let e = err("I64", &join(&header, &data));
    assert_eq!(e, TillerError::UnsupportedDtype { tensor: "ln_f.bias".into(), dtype: "I64".into() });
    assert!(e.to_string().contains("F32, F16 and BF16"), "{e}");
    // An unknown dtype name too.
    let (mut header, mut data) = split(&file(Dtype::F32, ""));
    remove(&mut header, &mut data, "ln_f.bias");
    append(&mut header, &mut data, "ln_f.bias", "Q4", &[8], &[0u8; 16]);
    assert!(matches!(err("Q4", &join(&header, &data)), TillerError::UnsupportedDtype { .. }));
    // An unneeded tensor of another dtype is fine.
    let (mut header, mut data) = split(&file(Dtype::F32, ""));
    append(&mut header, &mut data, "h.0.attn.masked_bias", "I64", &[1], &[0u8; 8]);
    load(&join(&header, &data)).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    for name in ["h.1.mlp.c_proj.bias", "ln_f.weight", "h.0.attn.c_attn.weight", "wpe.weight", "wte.weight"] {
        let (mut header, mut data) = split(&file(Dtype::F32, ""));
        remove(&mut header, &mut data, name);
        let e = err(name, &join(&header, &data));
        assert_eq!(e, TillerError::MissingTensor(name.into()));
        assert!(e.to_string().contains(&format!("`{name}` is missing")), "{e}");
    }
}

#[test]
fn shape_mismatch_names_tensor_expected_and_found() {
    let (mut header, mut data) = split(&file(Dtype::F32, ""));
    remove(&mut header, &mut data, "h.1.attn.c_proj.weight");
    append(&mut header, &mut data, "h.1.attn.c_proj.weight", "F32", &[8, 9], &[0u8; 8 * 9 * 4]);
    let e = err("shape", &join(&header, &data));
    assert_eq!(e, TillerError::ShapeMismatch { tensor: "h.1.attn.c_proj.weight".into(), expected: vec![8, 8], got: vec![8, 9] });
    let msg = e.to_string();
    assert!(msg.contains("h.1.attn.c_proj.weight") && msg.contains("[8, 9]") && msg.contains("[8, 8]"), "{msg}");
    // With the prefix the message names the tensor as stored.
    let (mut header, mut data) = split(&file(Dtype::F32, "transformer."));
    remove(&mut header, &mut data, "transformer.ln_f.weight");
    append(&mut header, &mut data, "transformer.ln_f.weight", "F32", &[4], &[0u8; 16]);
    let msg = err("prefixed shape", &join(&header, &data)).to_string();
    assert!(msg.contains("transformer.ln_f.weight") && msg.contains("[4]") && msg.contains("[8]"), "{msg}");
}

#[test]
fn dtypes_give_the_same_weights_within_precision() {
    let want = tensors();
    for (dtype, tol) in [(Dtype::F32, 0.0f32), (Dtype::F16, 1.0 / 1024.0), (Dtype::BF16, 1.0 / 128.0)] {
        let w = load(&file(dtype, "")).unwrap();
        assert_eq!(*w.spec(), cfg(), "{dtype:?}");
        for (name, _, v) in &want {
            let got = w.get(name);
            assert_eq!(got.len(), v.len());
            for (i, (g, x)) in got.iter().zip(v).enumerate() {
                // Relative rounding of the format (values are in [-1, 1)); F32 is exact.
                assert!((g - x).abs() <= tol * x.abs().max(1.0 / 64.0), "{dtype:?} {name}[{i}]: {g} vs {x}");
            }
        }
    }
    // The golden fixtures: F16 and F32 files load to the same kind of model.
    let f16m = CpuWeights::from_bytes(&load_fixture("tiny-gpt2").safetensors, None).unwrap();
    let f32m = CpuWeights::from_bytes(&load_fixture("tiny-gpt2-f32").safetensors, None).unwrap();
    assert_eq!((f16m.spec().n_layer, f32m.spec().n_layer), (4, 3));
    assert_eq!(f16m.spec().n_embd, f32m.spec().n_embd);
}

#[test]
fn extra_attn_bias_is_ignored_and_prefix_is_stripped() {
    let plain = load(&file(Dtype::F16, "")).unwrap();
    let (mut header, mut data) = split(&file(Dtype::F16, ""));
    for l in 0..cfg().n_layer {
        append(&mut header, &mut data, &format!("h.{l}.attn.bias"), "F32", &[1, 1, 16, 16], &[0u8; 16 * 16 * 4]);
        append(&mut header, &mut data, &format!("h.{l}.attn.masked_bias"), "F32", &[], &[0u8; 4]);
    }
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let extra = load(&join(&header, &data)).unwrap();
    assert_eq!(extra.tensors(), plain.tensors());
    assert!(!extra.tensors().contains_key("h.0.attn.bias"));
    let prefixed = load(&file(Dtype::F16, "transformer.")).unwrap();
    assert_eq!(prefixed.spec(), plain.spec());
    assert_eq!(prefixed.tensors(), plain.tensors(), "`transformer.` names load as the plain ones");
    // Fixture with the prefix (tiny-gpt2-f32) has only canonical names after loading.
    let f = CpuWeights::from_bytes(&load_fixture("tiny-gpt2-f32").safetensors, None).unwrap();
    assert!(f.tensors().keys().all(|k| !k.starts_with("transformer.")));
    assert!(f.tensors().contains_key("wte.weight"));
}

#[test]
fn streaming_in_random_chunks_equals_one_buffer() {
    let files = [file(Dtype::F32, ""), file(Dtype::BF16, "transformer."), load_fixture("tiny-gpt2").safetensors];
    for (fi, bytes) in files.iter().enumerate() {
        let mut whole = Recorder::default();
        let cfg = load_from_bytes(bytes, None, &mut whole).unwrap();
        assert_eq!(whole.begins, 1);
        assert_eq!(whole.tensors.len(), required_tensors(&cfg).len());
        let big = fi == 2;
        for seed in 0..if big { 3 } else { 12 } {
            let mut rng = Rng::new(100 + seed);
            let max = match seed % 4 {
                0 => 1, // one byte at a time
                1 => 7,
                2 => 300,
                _ => 70_000,
            };
            // One byte at a time through the 7 MB fixture is slow in a debug build: cap it.
            let max = if big && max < 300 { 4093 } else { max };
            let known_len = seed % 2 == 0;
            let mut loader = StreamLoader::new(None, known_len.then_some(bytes.len() as u64));
            let mut sink = Recorder::default();
            let mut at = 0;
            while at < bytes.len() {
                let n = (1 + rng.below(max)).min(bytes.len() - at);
                loader.feed(&bytes[at..at + n], &mut sink).unwrap();
                at += n;
            }
            assert_eq!(loader.finish().unwrap(), cfg, "file {fi} seed {seed}");
            assert_eq!(loader.bytes_received(), bytes.len() as u64);
            assert!(sink == whole, "file {fi} seed {seed} (chunks up to {max}): streamed tensors differ");
        }
    }
}

#[test]
fn without_config_json_shape_problems_are_about_the_weights() {
    // Embeddings but no transformer blocks: not "config.json is invalid" (there is none).
    let (mut header, mut data) = split(&file(Dtype::F32, ""));
    let blocks: Vec<String> = header.keys().filter(|k| k.starts_with("h.")).cloned().collect();
    blocks.iter().for_each(|k| remove(&mut header, &mut data, k));
    let e = err("no blocks", &join(&header, &data));
    assert_eq!(e, TillerError::MissingTensor("h.0.ln_1.weight".into()));
    // An odd width inferred from wte: a malformed-weights error, not a config.json one.
    let odd = ModelSpec { n_embd: 7, n_inner: 28, ..cfg() };
    let t: Vec<_> = required_tensors(&odd)
        .into_iter()
        .map(|(n, s)| {
            let bytes = vec![0u8; s.iter().product::<usize>() * 4];
            (n, Dtype::F32, s, bytes)
        })
        .collect();
    let e = err("odd width", &write_safetensors(&t));
    assert!(matches!(e, TillerError::Safetensors(_)), "{e:?}");
    assert!(!e.to_string().contains("config.json is invalid") && e.to_string().contains("must be even"), "{e}");
    // With a config.json, its own problems are reported as such.
    let e = CpuWeights::from_bytes(&file(Dtype::F32, ""), Some(b"{\"model_type\": \"mamba\"}")).unwrap_err();
    assert!(matches!(e, TillerError::Config(_)) && e.to_string().contains("model_type is `mamba`"), "{e}");
    assert!(e.to_string().contains("gpt2, llama, qwen2 and gpt_neox"), "{e}");
    let e = CpuWeights::from_bytes(&file(Dtype::F32, ""), Some(b"{\"model_type\": \"llama\"}")).unwrap_err();
    assert!(matches!(e, TillerError::Config(_)) && e.to_string().contains("hidden_size"), "{e}");
    let e = CpuWeights::from_bytes(&file(Dtype::F32, ""), Some(b"not json")).unwrap_err();
    assert!(matches!(e, TillerError::Config(_)), "{e:?}");
    // config.json fields the file lacks come from the shapes.
    let w = CpuWeights::from_bytes(&file(Dtype::F32, ""), Some(b"{\"n_head\": 2}")).unwrap();
    assert_eq!(*w.spec(), ModelSpec::gpt2(2, 8, 2, 16, 40));
    // A config.json with fewer layers than the file: an error naming both, not a model
    // silently cut to its first block (issue 17).
    let e = CpuWeights::from_bytes(&file(Dtype::F32, ""), Some(b"{\"n_layer\": 1}")).unwrap_err();
    assert!(matches!(e, TillerError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("says 1 layers, but the weights hold more (tensor `h.1."), "{e}");
    let e = CpuWeights::from_bytes(&file(Dtype::F32, "transformer."), Some(b"{\"n_layer\": 1}")).unwrap_err();
    assert!(e.to_string().contains("(tensor `transformer.h.1."), "{e}");
}

/// A header that claims a huge tensor, streamed without a length (the page with no
/// Content-Length): the loader's buffer grows with the bytes that arrive, so 20 KB of data
/// is an error about the file ending early, not an allocation of the 160 GB the header claims
/// (which aborted the process).
#[test]
fn a_huge_claimed_tensor_streamed_without_a_length_allocates_only_what_arrives() {
    let spec = ModelSpec::gpt2(1, 4096, 8, 16, 10_000_000);
    let config = json!({"model_type": "gpt2", "n_layer": 1, "n_embd": 4096, "n_head": 8, "n_positions": 16, "vocab_size": 10_000_000});
    let mut header = serde_json::Map::new();
    let mut at = 0u64;
    for (name, shape) in required_tensors(&spec) {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        header.insert(name, json!({"dtype": "F32", "shape": shape, "data_offsets": [at, at + bytes]}));
        at += bytes;
    }
    let bytes = join(&header, &vec![0u8; 20_000]);
    let config = serde_json::to_vec(&config).unwrap();
    let mut loader = StreamLoader::new(Some(&config), None);
    let mut sink = Recorder::default();
    let mut result = Ok(());
    for chunk in bytes.chunks(4096) {
        result = loader.feed(chunk, &mut sink);
        if result.is_err() {
            break;
        }
    }
    let e = result.and_then(|_| loader.finish().map(|_| ())).expect_err("20 KB of a 160 GB model is not a model");
    assert!(matches!(e, TillerError::Safetensors(_) | TillerError::Config(_) | TillerError::Input(_)), "{e:?}");
    assert!(sink.tensors.iter().all(|t| t.0 != "wte.weight"), "the huge tensor never arrived");
}
