//! Reading Hugging Face `model.safetensors` for GPT-2, from bytes, in one streaming path that
//! native code and the browser share.
//!
//! The header is parsed and every tensor GPT-2 needs is shape-checked before any weight is
//! read, so a foreign or truncated file fails fast. Tensors are then handed to a
//! [`TensorSink`] one at a time, in file order; the loader never holds more than one tensor,
//! which is what lets gpt2-xl stream from the network to GPU buffers inside wasm32.

use std::collections::HashMap;

use half::{bf16, f16};

use crate::config::Gpt2Config;
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
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| bad(format!("the header is not valid JSON ({e})")))?;
        let map = value.as_object().ok_or_else(|| bad("the header is not a JSON object".into()))?;
        let mut tensors = Vec::with_capacity(map.len());
        for (name, entry) in map {
            if name == "__metadata__" {
                continue;
            }
            let dtype_name = entry
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad(format!("tensor `{name}` has no dtype")))?
                .to_string();
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
        tensors.sort_by_key(|t| (t.start, t.end));
        for pair in tensors.windows(2) {
            if pair[1].start < pair[0].end {
                return Err(bad(format!("tensors `{}` and `{}` overlap", pair[0].name, pair[1].name)));
            }
        }
        Ok(Self { data_start: 0, tensors })
    }

    pub fn get(&self, canonical: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.canonical == canonical)
    }

    /// Shapes read off the tensors; n_head is not visible in any shape, so it comes from the
    /// released checkpoint with that width, or C/64.
    pub fn infer_config(&self) -> Result<Gpt2Config> {
        let wte = self.get("wte.weight").ok_or_else(|| TillerError::MissingTensor("wte.weight".into()))?;
        let wpe = self.get("wpe.weight").ok_or_else(|| TillerError::MissingTensor("wpe.weight".into()))?;
        if wte.shape.len() != 2 || wpe.shape.len() != 2 {
            return Err(TillerError::Safetensors("wte.weight and wpe.weight must be 2-D".into()));
        }
        let (vocab_size, n_embd) = (wte.shape[0], wte.shape[1]);
        let n_layer = (0..)
            .take_while(|i| self.get(&format!("h.{i}.ln_1.weight")).is_some())
            .count();
        let n_head = match n_embd {
            768 => 12,
            1024 => 16,
            1280 => 20,
            1600 => 25,
            c if c % 64 == 0 => c / 64,
            _ => 1,
        };
        let n_inner = self
            .get("h.0.mlp.c_fc.weight")
            .and_then(|t| t.shape.get(1).copied())
            .unwrap_or(4 * n_embd);
        Ok(Gpt2Config { n_layer, n_embd, n_head, n_positions: wpe.shape[0], vocab_size, n_inner })
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

/// Every tensor a GPT-2 needs, by canonical name, with its shape.
pub fn required_tensors(cfg: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
    let (c, v, p, f) = (cfg.n_embd, cfg.vocab_size, cfg.n_positions, cfg.n_inner);
    let mut out = vec![("wte.weight".to_string(), vec![v, c]), ("wpe.weight".to_string(), vec![p, c])];
    for l in 0..cfg.n_layer {
        let h = |s: &str| format!("h.{l}.{s}");
        out.extend([
            (h("ln_1.weight"), vec![c]),
            (h("ln_1.bias"), vec![c]),
            (h("attn.c_attn.weight"), vec![c, 3 * c]),
            (h("attn.c_attn.bias"), vec![3 * c]),
            (h("attn.c_proj.weight"), vec![c, c]),
            (h("attn.c_proj.bias"), vec![c]),
            (h("ln_2.weight"), vec![c]),
            (h("ln_2.bias"), vec![c]),
            (h("mlp.c_fc.weight"), vec![c, f]),
            (h("mlp.c_fc.bias"), vec![f]),
            (h("mlp.c_proj.weight"), vec![f, c]),
            (h("mlp.c_proj.bias"), vec![c]),
        ]);
    }
    out.push(("ln_f.weight".to_string(), vec![c]));
    out.push(("ln_f.bias".to_string(), vec![c]));
    out
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

    /// IEEE half bits, rounding to nearest from F32 and BF16.
    pub fn to_f16_bits(&self) -> Vec<u16> {
        match self.dtype {
            Dtype::F16 => self.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect(),
            _ => self.to_f32().into_iter().map(|x| f16::from_f32(x).to_bits()).collect(),
        }
    }
}

/// Receives a GPT-2's tensors from [`StreamLoader`].
pub trait TensorSink {
    /// Called once, after the header is parsed and every needed tensor is shape-checked, before
    /// any tensor data.
    fn begin(&mut self, cfg: &Gpt2Config, header: &SafetensorsHeader) -> Result<()>;
    /// Called once per needed tensor (canonical name), in file order.
    fn tensor(&mut self, t: TensorView<'_>) -> Result<()>;
}

enum Phase {
    /// Waiting for the 8-byte length and the JSON header.
    Header,
    /// Streaming the data section; `pos` is the offset (within data) of `buf[0]`.
    Body { pos: u64, next: usize },
    Done,
}

/// Turns a stream of byte chunks of `model.safetensors` into GPT-2 tensors.
pub struct StreamLoader {
    config_json: Option<Vec<u8>>,
    file_len: Option<u64>,
    phase: Phase,
    buf: Vec<u8>,
    header: Option<SafetensorsHeader>,
    /// Indices into `header.tensors` of the tensors to deliver, in file order.
    wanted: Vec<usize>,
    config: Option<Gpt2Config>,
    received: u64,
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
            config: None,
            received: 0,
        }
    }

    pub fn config(&self) -> Option<&Gpt2Config> {
        self.config.as_ref()
    }

    pub fn header(&self) -> Option<&SafetensorsHeader> {
        self.header.as_ref()
    }

    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// Feeds the next chunk of the file.
    pub fn feed(&mut self, mut chunk: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
        self.received += chunk.len() as u64;
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
                    self.start_body(header, sink)?;
                    self.buf = rest;
                    self.phase = Phase::Body { pos: 0, next: 0 };
                    // fall through to deliver what is already buffered
                }
                Phase::Body { pos, next } => {
                    let header = self.header.as_ref().expect("header is set before the body phase");
                    let Some(&idx) = self.wanted.get(next) else {
                        self.phase = Phase::Done;
                        self.buf = Vec::new();
                        return Ok(());
                    };
                    let info = &header.tensors[idx];
                    // Drop bytes before the tensor we need next (ignored buffers, padding).
                    let buffered_end = pos + self.buf.len() as u64;
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
                        deliver(info, tensor_bytes, sink)?;
                        chunk = rest;
                        self.phase = Phase::Body { pos: info.end, next: next + 1 };
                        continue;
                    }
                    let missing = need.saturating_sub(self.buf.len());
                    let take = missing.min(chunk.len());
                    if self.buf.capacity() < need {
                        self.buf.reserve_exact(need - self.buf.len());
                    }
                    self.buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    let _ = buffered_end;
                    if self.buf.len() < need {
                        return Ok(());
                    }
                    let rest = self.buf.split_off(need);
                    deliver(info, &self.buf, sink)?;
                    self.buf = rest;
                    self.phase = Phase::Body { pos: info.end, next: next + 1 };
                }
                Phase::Done => return Ok(()),
            }
        }
    }

    fn start_body(&mut self, header: SafetensorsHeader, sink: &mut dyn TensorSink) -> Result<()> {
        let inferred = header.infer_config();
        let cfg = match &self.config_json {
            Some(json) => Gpt2Config::from_json(json, inferred.as_ref().ok())?,
            None => {
                // Without config.json the configuration is the tensors' shapes: a problem with
                // it is a problem with model.safetensors, not with a config.json there is none of.
                let c = inferred?;
                if c.n_layer == 0 {
                    return Err(TillerError::MissingTensor("h.0.ln_1.weight".into()));
                }
                c.validate().map_err(|e| match e {
                    TillerError::Config(m) => TillerError::Safetensors(format!("its tensor shapes do not make a usable GPT-2: {m}")),
                    e => e,
                })?;
                c
            }
        };
        let mut wanted = Vec::new();
        let index: HashMap<&str, usize> =
            header.tensors.iter().enumerate().map(|(i, t)| (t.canonical.as_str(), i)).collect();
        for (name, shape) in required_tensors(&cfg) {
            let &i = index.get(name.as_str()).ok_or_else(|| TillerError::MissingTensor(name.clone()))?;
            let t = &header.tensors[i];
            if t.dtype.is_none() {
                return Err(TillerError::UnsupportedDtype { tensor: t.name.clone(), dtype: t.dtype_name.clone() });
            }
            if t.shape != shape {
                return Err(TillerError::ShapeMismatch { tensor: t.name.clone(), expected: shape, got: t.shape.clone() });
            }
            wanted.push(i);
        }
        wanted.sort_by_key(|&i| header.tensors[i].start);
        sink.begin(&cfg, &header)?;
        self.wanted = wanted;
        self.config = Some(cfg);
        self.header = Some(header);
        Ok(())
    }

    /// Call after the last chunk: errors if the file ended before every tensor arrived.
    pub fn finish(&self) -> Result<Gpt2Config> {
        match (&self.phase, &self.header, &self.config) {
            (Phase::Done, _, Some(cfg)) => Ok(*cfg),
            (Phase::Header, _, _) => Err(TillerError::Safetensors(format!(
                "the file ended after {} bytes, inside its header: it is truncated or not safetensors",
                self.received
            ))),
            (Phase::Body { next, .. }, Some(h), _) => {
                let name = self.wanted.get(*next).map(|&i| h.tensors[i].name.as_str()).unwrap_or("?");
                Err(TillerError::Safetensors(format!(
                    "the file ended after {} bytes, inside tensor `{name}`: it is truncated (download it again)",
                    self.received
                )))
            }
            _ => Err(TillerError::Safetensors("the file ended early".into())),
        }
    }
}

fn deliver(info: &TensorInfo, bytes: &[u8], sink: &mut dyn TensorSink) -> Result<()> {
    let dtype = info.dtype.expect("dtype checked in start_body");
    sink.tensor(TensorView { name: &info.canonical, shape: &info.shape, dtype, bytes })
}

/// Loads a whole file held in memory through the streaming path.
pub fn load_from_bytes(bytes: &[u8], config_json: Option<&[u8]>, sink: &mut dyn TensorSink) -> Result<Gpt2Config> {
    let mut loader = StreamLoader::new(config_json, Some(bytes.len() as u64));
    loader.feed(bytes, sink)?;
    loader.finish()
}

/// GPT-2 weights in f32 for the CPU reference, by canonical name.
#[derive(Debug, Clone)]
pub struct Gpt2Weights {
    pub config: Gpt2Config,
    pub tensors: HashMap<String, Vec<f32>>,
}

impl Gpt2Weights {
    pub fn from_bytes(safetensors: &[u8], config_json: Option<&[u8]>) -> Result<Self> {
        let mut sink = F32Sink::default();
        let config = load_from_bytes(safetensors, config_json, &mut sink)?;
        Ok(Self { config, tensors: sink.tensors })
    }

    /// A tensor by canonical name; every required tensor is present after loading.
    pub fn get(&self, name: &str) -> &[f32] {
        self.tensors.get(name).map(Vec::as_slice).unwrap_or_else(|| panic!("tensor {name} was checked at load"))
    }

    pub fn layer(&self, l: usize, name: &str) -> &[f32] {
        self.get(&format!("h.{l}.{name}"))
    }
}

#[derive(Default)]
struct F32Sink {
    tensors: HashMap<String, Vec<f32>>,
}

impl TensorSink for F32Sink {
    fn begin(&mut self, _cfg: &Gpt2Config, _header: &SafetensorsHeader) -> Result<()> {
        Ok(())
    }
    fn tensor(&mut self, t: TensorView<'_>) -> Result<()> {
        self.tensors.insert(t.name.to_string(), t.to_f32());
        Ok(())
    }
}

/// Writes a safetensors file (for tests and the benchmark's random models).
pub fn write_safetensors(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        let d = match dtype {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        };
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": d, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
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
