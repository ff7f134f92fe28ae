//! Reading Hugging Face safetensors checkpoints (one `model.safetensors`, or the shards of a
//! `model.safetensors.index.json`), from bytes, in one streaming path that native code and the
//! browser share.
//!
//! The header is parsed and every tensor the model needs (`arch::weights::file_tensors`) is
//! shape-checked before any weight is read, so a foreign or truncated file fails fast. Tensors
//! are then mapped to Tiller's names and layouts (`arch::weights::Mapper`) and handed to a
//! [`TensorSink`] one at a time, in file order; the loader never holds more than one tensor,
//! which is what lets gpt2-xl stream from the network to GPU buffers inside wasm32.

use std::collections::{HashMap, HashSet};

use half::{bf16, f16};

pub use crate::arch::weights::TensorSink;
use crate::arch::weights::{file_tensors, FileTensor, Mapper};
use crate::arch::{config as arch_config, ModelSpec};
use crate::error::{Result, TillerError};

/// safetensors' own upper bound on the JSON header.
const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
}

/// One entry of the safetensors header. Offsets are relative to the start of the data section.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The name as stored in the file (maybe with a `transformer.` prefix).
    pub name: String,
    /// The name without the `transformer.` prefix.
    pub canonical: String,
    pub dtype: Option<Dtype>,
    pub dtype_name: String,
    pub shape: Vec<usize>,
    pub start: u64,
    pub end: u64,
}

/// The parsed header of a safetensors file.
#[derive(Debug, Clone)]
pub struct SafetensorsHeader {
    /// Byte offset of the data section in the file (8 + header length).
    pub data_start: u64,
    /// Sorted by `start`.
    pub tensors: Vec<TensorInfo>,
    /// The `__metadata__` strings (values that are not strings are left out).
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// A JSON object's keys in order, repeats kept (serde_json's map keeps only the last).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> std::result::Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl SafetensorsHeader {
    /// The header length announced by the first 8 bytes of the file.
    pub fn header_len(first8: &[u8]) -> Result<u64> {
        let bytes: [u8; 8] = first8
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| TillerError::Safetensors("the file is shorter than 8 bytes".into()))?;
        let n = u64::from_le_bytes(bytes);
        if n == 0 || n > MAX_HEADER_LEN {
            return Err(TillerError::Safetensors(format!(
                "the header claims {n} bytes (allowed: 1..={MAX_HEADER_LEN}); this is not a safetensors file"
            )));
        }
        Ok(n)
    }

    /// Parses the JSON header. `data_len`, when known, bounds every tensor's offsets.
    pub fn parse(json: &[u8], data_len: Option<u64>) -> Result<Self> {
        let bad = |m: String| TillerError::Safetensors(m);
        let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(format!("the header is not valid JSON ({e})")))?;
        let map = value.as_object().ok_or_else(|| bad("the header is not a JSON object".into()))?;
        // A JSON object read into a map keeps the last of two equal keys: count them first.
        let keys: Keys = serde_json::from_slice(json).map_err(|e| bad(format!("the header is not valid JSON ({e})")))?;
        if keys.0.len() != map.len() {
            let mut seen = HashSet::new();
            let twice = keys.0.iter().find(|k| !seen.insert(k.as_str())).cloned().unwrap_or_default();
            return Err(bad(format!("the header names `{twice}` twice: the file is corrupt")));
        }
        let mut tensors = Vec::with_capacity(map.len());
        let mut metadata = std::collections::BTreeMap::new();
        for (name, entry) in map {
            if name == "__metadata__" {
                if let Some(m) = entry.as_object() {
                    metadata.extend(m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))));
                }
                continue;
            }
            let dtype_name =
                entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad(format!("tensor `{name}` has no dtype")))?.to_string();
            let dtype = match dtype_name.as_str() {
                "F32" => Some(Dtype::F32),
                "F16" => Some(Dtype::F16),
                "BF16" => Some(Dtype::BF16),
                _ => None,
            };
            let shape = entry
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad(format!("tensor `{name}` has no shape")))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| bad(format!("tensor `{name}` has a shape that is not a list of integers")))?;
            let offsets = entry
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
                .ok_or_else(|| bad(format!("tensor `{name}` has no valid data_offsets")))?;
            let (start, end) = offsets;
            if start > end {
                return Err(bad(format!("tensor `{name}` ends before it starts ({start} > {end})")));
            }
            if let Some(len) = data_len {
                if end > len {
                    return Err(bad(format!(
                        "tensor `{name}` ends at byte {end} of the data but the file holds only {len}: the file is truncated or corrupt"
                    )));
                }
            }
            let elem = match dtype {
                Some(d) => d.size() as u64,
                None => dtype_size_any(&dtype_name),
            };
            let numel = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
            if let (Some(numel), true) = (numel, elem > 0) {
                if numel.checked_mul(elem) != Some(end - start) {
                    return Err(bad(format!(
                        "tensor `{name}` of shape {shape:?} and dtype {dtype_name} should span {} bytes, but its offsets span {}",
                        numel.saturating_mul(elem),
                        end - start
                    )));
                }
            }
            let canonical = name.strip_prefix("transformer.").unwrap_or(name).to_string();
            tensors.push(TensorInfo { name: name.clone(), canonical, dtype, dtype_name, shape, start, end });
        }
        let mut names = HashSet::new();
        for t in &tensors {
            if !names.insert(t.canonical.as_str()) {
                return Err(bad(format!("two tensors are named `{}` (with and without the `transformer.` prefix)", t.canonical)));
            }
        }
        tensors.sort_by_key(|t| (t.start, t.end));
        for pair in tensors.windows(2) {
            if pair[1].start < pair[0].end {
                return Err(bad(format!("tensors `{}` and `{}` overlap", pair[0].name, pair[1].name)));
            }
        }
        // The format's rule: the tensors cover the data section exactly, in some order, with
        // no gaps and nothing after the last (a header length off by a byte shows up here).
        let mut at = 0u64;
        for t in &tensors {
            if t.start != at {
                return Err(bad(format!(
                    "bytes {at}..{} of the data belong to no tensor (before `{}`): safetensors data has no gaps, so the file is corrupt or its header length is wrong",
                    t.start, t.name
                )));
            }
            at = t.end;
        }
        if let Some(len) = data_len {
            if len != at {
                return Err(bad(format!(
                    "the data section is {len} bytes but its tensors cover {at}: {} bytes after the last tensor, which safetensors forbids (the file is corrupt, or its header length is wrong)",
                    len - at
                )));
            }
        }
        Ok(Self { data_start: 0, tensors, metadata })
    }

    pub fn get(&self, canonical: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.canonical == canonical)
    }

    /// A GPT-2's shapes read off the tensors, for a checkpoint without config.json; n_head is
    /// not visible in any shape, so it comes from the released checkpoint with that width, or
    /// C/64.
    pub fn infer_gpt2(&self) -> Result<ModelSpec> {
        let Some(wte) = self.get("wte.weight") else {
            for (name, family) in [("model.embed_tokens.weight", "Llama/Qwen2"), ("gpt_neox.embed_in.weight", "GPT-NeoX")] {
                if self.get(name).is_some() {
                    return Err(TillerError::Config(format!(
                        "config.json is missing: this looks like a {family} checkpoint, whose shapes only its config.json gives; put it beside the weights"
                    )));
                }
            }
            return Err(TillerError::MissingTensor("wte.weight".into()));
        };
        let wpe = self.get("wpe.weight").ok_or_else(|| TillerError::MissingTensor("wpe.weight".into()))?;
        if wte.shape.len() != 2 || wpe.shape.len() != 2 {
            return Err(TillerError::Safetensors("wte.weight and wpe.weight must be 2-D".into()));
        }
        let (vocab_size, n_embd) = (wte.shape[0], wte.shape[1]);
        let n_layer = (0..).take_while(|i| self.get(&format!("h.{i}.ln_1.weight")).is_some()).count();
        let n_head = match n_embd {
            768 => 12,
            1024 => 16,
            1280 => 20,
            1600 => 25,
            c if c % 64 == 0 && c > 0 => c / 64,
            _ => 1,
        };
        let mut spec = ModelSpec::gpt2(n_layer, n_embd, n_head, wpe.shape[0], vocab_size);
        spec.n_inner = self.get("h.0.mlp.c_fc.weight").and_then(|t| t.shape.get(1).copied()).unwrap_or(4 * n_embd);
        Ok(spec)
    }
}

fn dtype_size_any(name: &str) -> u64 {
    match name {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => 0,
    }
}

/// A tensor's raw little-endian bytes, as stored.
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub dtype: Dtype,
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            Dtype::F32 => self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => self.bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => self.bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        }
    }
}

enum Phase {
    /// Waiting for the 8-byte length and the JSON header.
    Header,
    /// Streaming the data section; `pos` is the offset (within data) of `buf[0]`.
    Body {
        pos: u64,
        next: usize,
    },
    Done,
}

/// Turns a stream of byte chunks of a checkpoint into Tiller's tensors. One file: `new`, then
/// `feed` every chunk, then `finish`. Shards: `sharded`, then per shard `start_file`, `feed`
/// its chunks and `end_file`, then `finish`.
pub struct StreamLoader {
    config_json: Option<Vec<u8>>,
    file_len: Option<u64>,
    phase: Phase,
    buf: Vec<u8>,
    header: Option<SafetensorsHeader>,
    /// This file's tensors to deliver, in file order: (index into `header.tensors`, index into `needed`).
    wanted: Vec<(usize, usize)>,
    spec: Option<ModelSpec>,
    /// What the model needs from the checkpoint.
    needed: Vec<FileTensor>,
    /// Names delivered so far (all files).
    delivered: HashSet<String>,
    mapper: Option<Mapper>,
    /// Shard files expected (sharded loads); None for one file.
    shards: Option<Vec<String>>,
    received: u64,
    /// Bytes of the current file fed so far, and where its last tensor ends (once its header
    /// is read): anything past that is an error even when the file's length was not known.
    file_received: u64,
    file_end: Option<u64>,
    /// Load tensors holding NaN or infinities anyway ([`StreamLoader::allow_non_finite`]).
    allow_non_finite: bool,
    warnings: Vec<String>,
}

impl StreamLoader {
    /// `config_json` is the model's `config.json`, if it has one; `file_len` the file's size
    /// when known (it lets a truncated header be caught before the download ends).
    pub fn new(config_json: Option<&[u8]>, file_len: Option<u64>) -> Self {
        Self {
            config_json: config_json.map(<[u8]>::to_vec),
            file_len,
            phase: Phase::Header,
            buf: Vec::new(),
            header: None,
            wanted: Vec::new(),
            spec: None,
            needed: Vec::new(),
            delivered: HashSet::new(),
            mapper: None,
            shards: None,
            received: 0,
            file_received: 0,
            file_end: None,
            allow_non_finite: false,
            warnings: Vec::new(),
        }
    }

    /// Loads tensors that hold NaN or infinities instead of refusing them, each named in
    /// [`StreamLoader::warnings`]. A run that reaches them still stops where its values first
    /// stop being finite ([`crate::generate`]), so nothing ranks a NaN.
    pub fn allow_non_finite(mut self) -> Self {
        self.allow_non_finite = true;
        self
    }

    /// What was loaded anyway, one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A loader for a sharded checkpoint: `index_json` is `model.safetensors.index.json`. The
    /// configuration must come from config.json. Returns the loader and the shard file names in
    /// the order to feed them.
    pub fn sharded(config_json: &[u8], index_json: &[u8]) -> Result<(Self, Vec<String>)> {
        let shards = shard_files(index_json)?;
        let mut loader = Self::new(Some(config_json), None);
        loader.shards = Some(shards.clone());
        Ok((loader, shards))
    }

    /// Starts the next shard (of a loader made by [`StreamLoader::sharded`]).
    pub fn start_file(&mut self, file_len: Option<u64>) -> Result<()> {
        if !matches!(self.phase, Phase::Header | Phase::Done) || !self.buf.is_empty() {
            return Err(TillerError::Safetensors("a shard was started before the previous one ended".into()));
        }
        self.file_len = file_len;
        self.phase = Phase::Header;
        self.header = None;
        self.wanted.clear();
        self.file_received = 0;
        self.file_end = None;
        Ok(())
    }

    /// Ends a shard: errors if it ended before every tensor it holds arrived.
    pub fn end_file(&mut self) -> Result<()> {
        match self.phase {
            Phase::Done => Ok(()),
            _ => Err(self.truncated()),
        }
    }

    pub fn spec(&self) -> Option<&ModelSpec> {
        self.spec.as_ref()
    }

    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Feeds the next chunk of the file.
    pub fn feed(&mut self, mut chunk: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
        self.received += chunk.len() as u64;
        self.file_received += chunk.len() as u64;
        self.check_end()?;
        loop {
            match self.phase {
                Phase::Header => {
                    self.buf.extend_from_slice(chunk);
                    chunk = &[];
                    if self.buf.len() < 8 {
                        return Ok(());
                    }
                    let n = SafetensorsHeader::header_len(&self.buf)?;
                    let data_start = 8 + n;
                    if let Some(len) = self.file_len {
                        if data_start > len {
                            return Err(TillerError::Safetensors(format!(
                                "the header claims {n} bytes but the file holds only {len}: the file is truncated or not safetensors"
                            )));
                        }
                    }
                    if (self.buf.len() as u64) < data_start {
                        return Ok(());
                    }
                    let rest = self.buf.split_off(data_start as usize);
                    let data_len = self.file_len.map(|l| l - data_start);
                    let mut header = SafetensorsHeader::parse(&self.buf[8..], data_len)?;
                    header.data_start = data_start;
                    self.file_end = Some(data_start + header.tensors.last().map_or(0, |t| t.end));
                    self.check_end()?;
                    self.start_body(header, sink)?;
                    self.buf = rest;
                    self.phase = Phase::Body { pos: 0, next: 0 };
                    // fall through to deliver what is already buffered
                }
                Phase::Body { pos, next } => {
                    let header = self.header.as_ref().expect("header is set before the body phase");
                    let Some(&(idx, _)) = self.wanted.get(next) else {
                        self.phase = Phase::Done;
                        self.buf = Vec::new();
                        return Ok(());
                    };
                    let info = &header.tensors[idx];
                    // Drop bytes before the tensor we need next (ignored buffers, padding).
                    if info.start > pos {
                        let skip = (info.start - pos).min(self.buf.len() as u64) as usize;
                        self.buf.drain(..skip);
                        let mut new_pos = pos + skip as u64;
                        if new_pos < info.start {
                            let skip_chunk = ((info.start - new_pos) as usize).min(chunk.len());
                            chunk = &chunk[skip_chunk..];
                            new_pos += skip_chunk as u64;
                        }
                        self.phase = Phase::Body { pos: new_pos, next };
                        if new_pos < info.start {
                            return Ok(());
                        }
                        continue;
                    }
                    let need = (info.end - info.start) as usize;
                    if self.buf.is_empty() && chunk.len() >= need {
                        // Zero-copy: the whole tensor is inside this chunk.
                        let (tensor_bytes, rest) = chunk.split_at(need);
                        self.deliver(next, tensor_bytes, sink)?;
                        chunk = rest;
                        self.phase = Phase::Body { pos: info_end(&self.header, idx), next: next + 1 };
                        continue;
                    }
                    let missing = need.saturating_sub(self.buf.len());
                    let take = missing.min(chunk.len());
                    // Grown with the bytes that arrive (doubling, at most to the tensor's
                    // size), never to the size a header claims before its data is here.
                    let have = self.buf.len() + take;
                    if self.buf.capacity() < have {
                        let grown = have.max(self.buf.len() * 2).min(need);
                        self.buf.reserve_exact(grown - self.buf.len());
                    }
                    self.buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if self.buf.len() < need {
                        return Ok(());
                    }
                    let rest = self.buf.split_off(need);
                    let bytes = std::mem::replace(&mut self.buf, rest);
                    self.deliver(next, &bytes, sink)?;
                    self.phase = Phase::Body { pos: info_end(&self.header, idx), next: next + 1 };
                }
                Phase::Done => return Ok(()),
            }
        }
    }

    /// Bytes past the current file's last tensor are an error (the file's length, when known,
    /// is checked against the header at once).
    fn check_end(&self) -> Result<()> {
        match self.file_end {
            Some(end) if self.file_received > end => Err(TillerError::Safetensors(format!(
                "the file goes on past its last tensor (byte {end}): safetensors forbids trailing bytes, so it is corrupt or not what its header says"
            ))),
            _ => Ok(()),
        }
    }

    fn deliver(&mut self, next: usize, bytes: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
        let (Some(header), Some(mapper)) = (&self.header, &mut self.mapper) else {
            return Err(TillerError::Safetensors("internal: a tensor arrived before the header".into()));
        };
        let (idx, need) = self.wanted[next];
        let info = &header.tensors[idx];
        let dtype = info.dtype.expect("dtype checked in start_body");
        let bad = non_finite(dtype, bytes);
        if bad > 0 {
            let (s, are) = if bad == 1 { ("", "is") } else { ("s", "are") };
            if !self.allow_non_finite {
                return Err(TillerError::Safetensors(format!(
                    "tensor `{}` holds {bad} value{s} that {are} not finite (NaN or infinity): the checkpoint is corrupt, and a model with them computes nothing meaningful; download it again or fix the file (or load it anyway, to see where they go: --allow-non-finite in the CLI, \"Load anyway\" on the page)",
                    info.name
                )));
            }
            self.warnings.push(format!(
                "tensor `{}` holds {bad} value{s} that {are} not finite (NaN or infinity); loaded anyway, as asked: a run stops where its values first stop being finite",
                info.name
            ));
        }
        let view = TensorView { name: &info.canonical, shape: &info.shape, dtype, bytes };
        mapper.tensor(&self.needed[need], view, sink)?;
        self.delivered.insert(self.needed[need].name.clone());
        Ok(())
    }

    /// The model's spec, from config.json (the authority) or, for a GPT-2 without one, from
    /// the first file's tensor shapes.
    fn resolve_spec(&self, header: &SafetensorsHeader) -> Result<ModelSpec> {
        let inferred = header.infer_gpt2();
        match &self.config_json {
            Some(json) => arch_config::from_json(json, inferred.as_ref().ok()),
            None => {
                // Without config.json the configuration is the tensors' shapes: a problem with
                // it is a problem with model.safetensors, not with a config.json there is none of.
                let c = inferred?;
                if c.n_layer == 0 {
                    return Err(TillerError::MissingTensor("h.0.ln_1.weight".into()));
                }
                arch_config::validate(&c).map_err(|e| match e {
                    TillerError::Config(m) => TillerError::Safetensors(format!("its tensor shapes do not make a usable GPT-2: {m}")),
                    e => e,
                })?;
                Ok(c)
            }
        }
    }

    fn start_body(&mut self, header: SafetensorsHeader, sink: &mut dyn TensorSink) -> Result<()> {
        if self.spec.is_none() {
            let spec = self.resolve_spec(&header)?;
            self.needed = file_tensors(&spec);
            let mut mapper = Mapper::new(spec);
            mapper.begin(sink)?;
            self.mapper = Some(mapper);
            self.spec = Some(spec);
        }
        // A block past the spec's depth means config.json and the weights disagree: loading the
        // first n_layer blocks would be a different, silently truncated model.
        let spec = self.spec.expect("the spec is set above");
        if let Some(prefix) = self.needed.iter().find_map(|t| t.name.find(".0.").map(|i| &t.name[..i + 1])) {
            let past = format!("{prefix}{}.", spec.n_layer);
            if let Some(t) = header.tensors.iter().find(|t| t.canonical.starts_with(&past)) {
                return Err(TillerError::Config(format!(
                    "it says {} layers, but the weights hold more (tensor `{}`): the config does not match the checkpoint",
                    spec.n_layer, t.name
                )));
            }
        }
        let index: HashMap<&str, usize> = header.tensors.iter().enumerate().map(|(i, t)| (t.canonical.as_str(), i)).collect();
        let mut wanted = Vec::new();
        for (n, need) in self.needed.iter().enumerate() {
            let Some(&i) = index.get(need.name.as_str()) else {
                if self.shards.is_none() {
                    return Err(TillerError::MissingTensor(need.name.clone()));
                }
                continue;
            };
            let t = &header.tensors[i];
            if self.delivered.contains(&need.name) {
                return Err(TillerError::Safetensors(format!("tensor `{}` appears in two shards", t.name)));
            }
            if t.dtype.is_none() {
                return Err(TillerError::UnsupportedDtype { tensor: t.name.clone(), dtype: t.dtype_name.clone() });
            }
            if t.shape != need.shape {
                return Err(TillerError::ShapeMismatch { tensor: t.name.clone(), expected: need.shape.clone(), got: t.shape.clone() });
            }
            wanted.push((i, n));
        }
        wanted.sort_by_key(|&(i, _)| header.tensors[i].start);
        self.wanted = wanted;
        self.header = Some(header);
        Ok(())
    }

    fn truncated(&self) -> TillerError {
        match (&self.phase, &self.header) {
            (Phase::Header, _) => TillerError::Safetensors(format!(
                "the file ended after {} bytes, inside its header: it is truncated or not safetensors",
                self.received
            )),
            (Phase::Body { next, .. }, Some(h)) => {
                let name = self.wanted.get(*next).map(|&(i, _)| h.tensors[i].name.as_str()).unwrap_or("?");
                TillerError::Safetensors(format!(
                    "the file ended after {} bytes, inside tensor `{name}`: it is truncated (download it again)",
                    self.received
                ))
            }
            _ => TillerError::Safetensors("the file ended early".into()),
        }
    }

    /// Call after the last chunk (of the last shard): errors if a tensor never arrived.
    pub fn finish(&self) -> Result<ModelSpec> {
        if !matches!(self.phase, Phase::Done) {
            return Err(self.truncated());
        }
        let spec = self.spec.ok_or_else(|| TillerError::Safetensors("the file ended early".into()))?;
        if let Some(missing) = self.needed.iter().find(|t| !self.delivered.contains(&t.name)) {
            return Err(TillerError::MissingTensor(missing.name.clone()));
        }
        Ok(spec)
    }
}

/// How many values of a tensor's little-endian bytes are NaN or ±infinity (all exponent bits
/// set), read off the bits.
pub fn non_finite(dtype: Dtype, bytes: &[u8]) -> usize {
    match dtype {
        Dtype::F32 => bytes.chunks_exact(4).filter(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000).count(),
        Dtype::F16 => bytes.chunks_exact(2).filter(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00).count(),
        Dtype::BF16 => bytes.chunks_exact(2).filter(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80).count(),
    }
}

fn info_end(header: &Option<SafetensorsHeader>, idx: usize) -> u64 {
    header.as_ref().map_or(0, |h| h.tensors[idx].end)
}

/// The shard files of `model.safetensors.index.json`, in first-mention order.
pub fn shard_files(index_json: &[u8]) -> Result<Vec<String>> {
    let bad = |m: String| TillerError::Safetensors(format!("model.safetensors.index.json: {m}"));
    let value: serde_json::Value = serde_json::from_slice(index_json).map_err(|e| bad(format!("it is not valid JSON ({e})")))?;
    let map = value.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("it has no `weight_map` object".into()))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("the file of `{name}` is not a string")))?;
        if file.is_empty() || file.contains('/') || file.contains('\\') || file.starts_with('.') || !file.ends_with(".safetensors") {
            return Err(bad(format!("`{file}` is not a shard file name (like model-00001-of-00002.safetensors)")));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    if files.is_empty() {
        return Err(bad("its weight_map is empty".into()));
    }
    if files.len() > 1000 {
        return Err(bad(format!("it names {} shards; at most 1000 are accepted", files.len())));
    }
    files.sort();
    Ok(files)
}

/// Loads a whole file held in memory through the streaming path.
pub fn load_from_bytes(bytes: &[u8], config_json: Option<&[u8]>, sink: &mut dyn TensorSink) -> Result<ModelSpec> {
    let mut loader = StreamLoader::new(config_json, Some(bytes.len() as u64));
    loader.feed(bytes, sink)?;
    loader.finish()
}

/// A model's weights in f32 for the CPU reference, by Tiller's names (`arch::weights`).
#[derive(Debug, Clone)]
pub struct CpuWeights {
    spec: ModelSpec,
    tensors: HashMap<String, Vec<f32>>,
}

impl CpuWeights {
    pub fn from_bytes(safetensors: &[u8], config_json: Option<&[u8]>) -> Result<Self> {
        let mut sink = F32Sink::default();
        load_from_bytes(safetensors, config_json, &mut sink)?;
        sink.into_weights()
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// A tensor by Tiller's name; every tensor the spec needs is present (checked when built).
    pub fn get(&self, name: &str) -> &[f32] {
        self.tensors.get(name).map(Vec::as_slice).unwrap_or_else(|| panic!("tensor {name} was checked at load"))
    }

    pub fn layer(&self, l: usize, name: &str) -> &[f32] {
        self.get(&format!("h.{l}.{name}"))
    }

    /// Every tensor, by Tiller's name.
    pub fn tensors(&self) -> &HashMap<String, Vec<f32>> {
        &self.tensors
    }
}

/// Keeps every tensor as f32 (the CPU reference's store), optionally refusing a model larger
/// than a budget of elements.
#[derive(Default)]
pub struct F32Sink {
    spec: Option<ModelSpec>,
    tensors: HashMap<String, Vec<f32>>,
    /// Most elements to keep (None: no limit).
    pub max_elements: Option<u64>,
}

impl F32Sink {
    /// A sink that refuses models of more than `max` parameters.
    pub fn with_limit(max: u64) -> Self {
        Self { max_elements: Some(max), ..Self::default() }
    }

    /// Checks that every tensor the spec needs arrived with its shape.
    pub fn into_weights(self) -> Result<CpuWeights> {
        let spec = self.spec.ok_or_else(|| TillerError::Safetensors("no weights were loaded".into()))?;
        for (name, shape) in crate::arch::weights::engine_tensors(&spec) {
            match self.tensors.get(&name) {
                Some(t) if t.len() == shape.iter().product::<usize>() => {}
                Some(t) => return Err(TillerError::ShapeMismatch { tensor: name, expected: shape, got: vec![t.len()] }),
                None => return Err(TillerError::MissingTensor(name)),
            }
        }
        Ok(CpuWeights { spec, tensors: self.tensors })
    }
}

impl TensorSink for F32Sink {
    fn begin(&mut self, spec: &ModelSpec) -> Result<()> {
        if let Some(max) = self.max_elements {
            let n = spec.parameter_count();
            if n > max {
                return Err(TillerError::input(format!(
                    "this model has {:.0} million parameters; the CPU engine here takes at most {:.0} million (use WebGPU, or a smaller model)",
                    n as f64 / 1e6,
                    max as f64 / 1e6
                )));
            }
        }
        self.spec = Some(*spec);
        Ok(())
    }
    fn tensor(&mut self, t: TensorView<'_>) -> Result<()> {
        self.tensors.insert(t.name.to_string(), t.to_f32());
        Ok(())
    }
}

/// Writes a safetensors file (for tests and the benchmark's random models).
pub fn write_safetensors(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    write_safetensors_with_metadata(tensors, &std::collections::BTreeMap::new())
}

/// Writes a safetensors file with `__metadata__` strings (left out when empty).
pub fn write_safetensors_with_metadata(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        let d = match dtype {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        };
        header.insert(name.clone(), serde_json::json!({"dtype": d, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}));
        offset += bytes.len();
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("a JSON map serializes");
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}
