//! A model's weights on the GPU, uploaded tensor by tensor as the safetensors stream arrives
//! ([`GpuWeightsSink`] is a [`TensorSink`]), so no whole file is ever held in memory. The sink
//! receives Tiller's names and layouts (`tiller_core::arch::weights`), whatever the family.
//!
//! Matrices (wte, wpe, the `[in, out]` projections) are stored as f16, two per u32: projection
//! weights in `[in, out]` order, rows padded to whole 16-byte words (a no-op for widths that
//! are multiples of 8) because the kernels read eight f16 per load; wte (and an untied
//! `lm_head`) transposed to `[C, V]` in that same layout, so the LM head is the matmul kernel's
//! product (see `kernels::pack_wte_chunk`). F32 and BF16 files are rounded to f16 on upload.
//! Norm parameters and biases stay f32. wte and the head are split by vocab rows into chunks
//! that each fit one storage binding (gpt2-xl's is 161 MB in f16; WebGPU's default binding
//! limit is 128 MiB).

use std::collections::HashMap;
use std::ops::Range;

use half::{bf16, f16};
use tiller_core::arch::weights::engine_tensors;
use tiller_core::arch::PosEncoding;
use tiller_core::weights::{Dtype, TensorSink, TensorView};
use tiller_core::{ModelSpec, Result, TillerError};

use crate::errors::{ErrorLog, Scopes};
use crate::kernels::f16_row_words;

/// wte rows converted per block while transposing into a chunk.
const WTE_BLOCK: usize = 256;

/// Vocab rows `vocab_start..vocab_start + vocab_len` of wte.
pub struct WteChunk {
    pub buffer: wgpu::Buffer,
    pub vocab_start: u32,
    pub vocab_len: u32,
}

pub struct GpuWeights {
    pub config: ModelSpec,
    /// The token embedding, transposed, by vocab chunks.
    pub wte: Vec<WteChunk>,
    /// The untied head (`lm_head`), transposed, by vocab chunks; empty when tied to wte.
    pub head: Vec<WteChunk>,
    /// [P, C] f16 pairs, for learned positions.
    pub wpe: Option<wgpu::Buffer>,
    /// Every other tensor by Tiller's name (`h.N.attn.c_attn.weight`, `ln_f.weight`, ...).
    pub tensors: HashMap<String, wgpu::Buffer>,
    /// Bytes uploaded.
    pub bytes: u64,
}

impl GpuWeights {
    /// A tensor by Tiller's name (checked present by [`GpuWeightsSink::finish`]).
    pub fn get(&self, name: &str) -> Result<&wgpu::Buffer> {
        self.tensors.get(name).ok_or_else(|| TillerError::MissingTensor(name.to_string()))
    }

    /// The head's chunks: the untied head, or wte.
    pub fn head_chunks(&self) -> &[WteChunk] {
        if self.head.is_empty() {
            &self.wte
        } else {
            &self.head
        }
    }
}

/// A byte count for a message: kB, MB or GB with one or two decimals.
fn size_text(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

/// The largest buffer one storage binding can cover on this device.
pub(crate) fn max_binding(device: &wgpu::Device) -> u64 {
    let l = device.limits();
    l.max_storage_buffer_binding_size.min(l.max_buffer_size) & !3
}

/// Receives tensors from `tiller_core::weights::StreamLoader` and uploads each to its own GPU
/// buffer. Call [`GpuWeightsSink::finish`] after the loader's `finish`.
pub struct GpuWeightsSink {
    device: wgpu::Device,
    config: Option<ModelSpec>,
    tensors: HashMap<String, wgpu::Buffer>,
    wte: Vec<WteChunk>,
    head: Vec<WteChunk>,
    bytes: u64,
    scopes: Option<Scopes>,
    log: ErrorLog,
}

const CONVERT_BLOCK: usize = 1 << 16; // elements converted per copy into a mapping

impl GpuWeightsSink {
    pub fn new(device: &wgpu::Device) -> Self {
        let log = ErrorLog::install(device);
        Self {
            device: device.clone(),
            config: None,
            tensors: HashMap::new(),
            wte: Vec::new(),
            head: Vec::new(),
            bytes: 0,
            scopes: Some(Scopes::push(device)),
            log,
        }
    }

    fn too_big(&self, name: &str, bytes: u64) -> TillerError {
        TillerError::Gpu(format!(
            "tensor `{name}` needs {} in one buffer binding but this GPU allows {} (its maxStorageBufferBindingSize){}; try a smaller model",
            size_text(bytes),
            size_text(max_binding(&self.device)),
            self.model_size().map(|b| format!(", and the whole model takes {} on the GPU", size_text(b))).unwrap_or_default()
        ))
    }

    /// The GPU bytes of the whole model's weights (f16), once the header is read.
    fn model_size(&self) -> Option<u64> {
        self.config.map(|c| c.parameter_count() * 2)
    }

    /// An error while uploading: an out-of-memory names how much of the model was placed when
    /// the GPU refused more, and the model's size (WebGPU tells no memory total to compare with).
    fn upload_error(&self, e: TillerError) -> TillerError {
        match e {
            TillerError::Gpu(m) if m.contains(crate::errors::OOM_ADVICE) => TillerError::Gpu(format!(
                "out of GPU memory while loading the weights: the GPU refused more after {}{}; try a smaller model, or close other tabs and programs that use the GPU",
                size_text(self.bytes),
                self.model_size().map(|b| format!(" of the model's {}", size_text(b))).unwrap_or_default()
            )),
            e => e,
        }
    }

    /// A buffer holding rows `rows` (of `cols` elements each) of `t` as f16,
    /// each row padded with zeros to `row_bytes`.
    fn upload_f16(&mut self, label: &str, t: &TensorView<'_>, rows: Range<usize>, cols: usize, row_bytes: usize) -> Result<wgpu::Buffer> {
        let size = (rows.len() * row_bytes) as u64;
        if size > max_binding(&self.device) {
            return Err(self.too_big(label, size));
        }
        let buffer = self.mapped_buffer(label, size);
        {
            let mut view = buffer.get_mapped_range_mut(..).map_err(|e| TillerError::Gpu(format!("uploading `{label}` failed: {e}")))?;
            let es = t.dtype.size();
            let (start, len) = (rows.start * cols, rows.len() * cols);
            if t.dtype == Dtype::F16 && row_bytes == cols * 2 {
                view.slice(..).copy_from_slice(&t.bytes[start * 2..(start + len) * 2]);
            } else {
                // Convert a block of whole rows at a time into the mapping.
                let mut overflow = 0usize;
                let rows_per_block = (CONVERT_BLOCK / cols).max(1);
                let mut block: Vec<u8> = Vec::with_capacity(rows_per_block * row_bytes);
                for r0 in (0..rows.len()).step_by(rows_per_block) {
                    let n = rows_per_block.min(rows.len() - r0);
                    block.clear();
                    let src = &t.bytes[(start + r0 * cols) * es..(start + (r0 + n) * cols) * es];
                    for row in src.chunks_exact(cols * es) {
                        for e in row.chunks_exact(es) {
                            let x = match t.dtype {
                                Dtype::F32 => f32::from_le_bytes([e[0], e[1], e[2], e[3]]),
                                Dtype::F16 => f16::from_le_bytes([e[0], e[1]]).to_f32(),
                                Dtype::BF16 => bf16::from_le_bytes([e[0], e[1]]).to_f32(),
                            };
                            let h = f16::from_f32(x);
                            overflow += usize::from(h.is_infinite() && x.is_finite());
                            block.extend_from_slice(&h.to_le_bytes());
                        }
                        block.resize(block.len() + row_bytes - cols * 2, 0);
                    }
                    view.slice(r0 * row_bytes..(r0 + n) * row_bytes).copy_from_slice(&block);
                }
                if overflow > 0 {
                    return Err(f16_overflow(label, overflow));
                }
            }
        }
        buffer.unmap();
        self.bytes += size;
        Ok(buffer)
    }

    /// A buffer holding wte rows `rows` (each of `c` elements) transposed: `[c, rows.len()]`
    /// as f16, each row padded with zeros to whole 16-byte words.
    fn upload_wte_chunk(&mut self, label: &str, t: &TensorView<'_>, rows: Range<usize>, c: usize) -> Result<wgpu::Buffer> {
        let row_bytes = f16_row_words(rows.len()) * 4;
        let size = (c * row_bytes) as u64;
        if size > max_binding(&self.device) {
            return Err(self.too_big(label, size));
        }
        let buffer = self.mapped_buffer(label, size);
        {
            let mut view = buffer.get_mapped_range_mut(..).map_err(|e| TillerError::Gpu(format!("uploading `{label}` failed: {e}")))?;
            let es = t.dtype.size();
            // A block of vocab rows at a time: convert [n, c] to f16, then write each channel's
            // n values contiguously into its row of the chunk.
            let mut block = vec![0u16; WTE_BLOCK * c]; // [n, c] f16 bits
            let mut column = vec![0u8; WTE_BLOCK * 2];
            for v0 in (0..rows.len()).step_by(WTE_BLOCK) {
                let n = WTE_BLOCK.min(rows.len() - v0);
                let src = &t.bytes[(rows.start + v0) * c * es..(rows.start + v0 + n) * c * es];
                let block = &mut block[..n * c];
                for (d, e) in block.iter_mut().zip(src.chunks_exact(es)) {
                    *d = match t.dtype {
                        Dtype::F16 => u16::from_le_bytes([e[0], e[1]]),
                        Dtype::F32 => f16::from_f32(f32::from_le_bytes([e[0], e[1], e[2], e[3]])).to_bits(),
                        Dtype::BF16 => f16::from_f32(bf16::from_le_bytes([e[0], e[1]]).to_f32()).to_bits(),
                    };
                }
                // Values that were finite and are not in f16 overflowed (the loader refuses
                // non-finite weights unless asked to load them anyway; those stay as they were).
                let in_f16 = block.iter().filter(|&&b| b & 0x7c00 == 0x7c00).count();
                let overflow = in_f16.saturating_sub(tiller_core::weights::non_finite(t.dtype, src));
                if overflow > 0 {
                    return Err(f16_overflow(label, overflow));
                }
                let column = &mut column[..n * 2];
                for ch in 0..c {
                    for (v, d) in column.chunks_exact_mut(2).enumerate() {
                        d.copy_from_slice(&block[v * c + ch].to_le_bytes());
                    }
                    view.slice(ch * row_bytes + v0 * 2..ch * row_bytes + (v0 + n) * 2).copy_from_slice(column);
                }
            }
        }
        buffer.unmap();
        self.bytes += size;
        Ok(buffer)
    }

    fn upload_f32(&mut self, label: &str, t: &TensorView<'_>) -> Result<wgpu::Buffer> {
        let data = t.to_f32();
        let size = (data.len() * 4) as u64;
        if size > max_binding(&self.device) {
            return Err(self.too_big(label, size));
        }
        let buffer = self.mapped_buffer(label, size);
        buffer
            .get_mapped_range_mut(..)
            .map_err(|e| TillerError::Gpu(format!("uploading `{label}` failed: {e}")))?
            .copy_from_slice(bytemuck::cast_slice(&data));
        buffer.unmap();
        self.bytes += size;
        Ok(buffer)
    }

    fn mapped_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4),
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: true,
        })
    }

    /// Checks that every tensor arrived and the GPU took them.
    pub async fn finish(mut self) -> Result<GpuWeights> {
        let cfg = self.config.ok_or_else(|| TillerError::Gpu("no weights were loaded".into()))?;
        if let Some(scopes) = self.scopes.take() {
            scopes.pop("uploading the weights").await.map_err(|e| self.upload_error(e))?;
        }
        self.log.check("uploading the weights").map_err(|e| self.upload_error(e))?;
        let covered = |chunks: &[WteChunk]| chunks.iter().map(|c| c.vocab_len as u64).sum::<u64>() == cfg.vocab_size as u64;
        if !covered(&self.wte) {
            return Err(TillerError::MissingTensor("wte.weight".into()));
        }
        if !cfg.tied_head && !covered(&self.head) {
            return Err(TillerError::MissingTensor("lm_head.weight".into()));
        }
        let wpe = self.tensors.remove("wpe.weight");
        if cfg.pos == PosEncoding::Learned && wpe.is_none() {
            return Err(TillerError::MissingTensor("wpe.weight".into()));
        }
        for (name, _) in engine_tensors(&cfg) {
            if !matches!(name.as_str(), "wte.weight" | "lm_head.weight" | "wpe.weight") && !self.tensors.contains_key(&name) {
                return Err(TillerError::MissingTensor(name));
            }
        }
        Ok(GpuWeights {
            config: cfg,
            wte: std::mem::take(&mut self.wte),
            head: std::mem::take(&mut self.head),
            wpe,
            tensors: std::mem::take(&mut self.tensors),
            bytes: self.bytes,
        })
    }

    /// Splits `[V, C]` rows into transposed chunks that each fit one binding, in multiples of
    /// eight rows (one 16-byte word per channel).
    fn upload_vocab_table(&mut self, t: &TensorView<'_>, cfg: &ModelSpec) -> Result<Vec<WteChunk>> {
        let c = cfg.n_embd;
        let rows_per_chunk = (max_binding(&self.device) / (c as u64 * 16)) as usize * 8;
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < cfg.vocab_size {
            let len = rows_per_chunk.min(cfg.vocab_size - start);
            let label = format!("{}[{start}..{}]", t.name, start + len);
            let buffer = self.upload_wte_chunk(&label, t, start..start + len, c)?;
            chunks.push(WteChunk { buffer, vocab_start: start as u32, vocab_len: len as u32 });
            start += len;
        }
        Ok(chunks)
    }
}

impl TensorSink for GpuWeightsSink {
    fn begin(&mut self, cfg: &ModelSpec) -> Result<()> {
        if let Some(why) = crate::engine::unsupported(cfg) {
            return Err(TillerError::Gpu(why));
        }
        let c = cfg.n_embd as u64;
        // The smallest wte chunk is eight vocab rows: one 16-byte word per channel.
        if (cfg.vocab_size as u64) > u32::MAX as u64 / 2 || c * 16 > max_binding(&self.device) {
            return Err(TillerError::Gpu(format!("this model's shapes ({cfg:?}) do not fit the GPU's limits; try a smaller model")));
        }
        self.config = Some(*cfg);
        Ok(())
    }

    fn tensor(&mut self, t: TensorView<'_>) -> Result<()> {
        let cfg = self.config.ok_or_else(|| TillerError::Gpu("weights arrived before the header".into()))?;
        if t.name == "wte.weight" {
            self.wte = self.upload_vocab_table(&t, &cfg)?;
        } else if t.name == "lm_head.weight" {
            self.head = self.upload_vocab_table(&t, &cfg)?;
        } else {
            let buffer = if t.name == "wpe.weight" {
                self.upload_f16(t.name, &t, 0..t.shape[0], t.shape[1], t.shape[1] * 2)?
            } else if t.shape.len() == 2 {
                // A projection [in, out], in the matmul kernel's layout.
                self.upload_f16(t.name, &t, 0..t.shape[0], t.shape[1], f16_row_words(t.shape[1]) * 4)?
            } else {
                self.upload_f32(t.name, &t)?
            };
            self.tensors.insert(t.name.to_string(), buffer);
        }
        self.log.check(&format!("uploading `{}`", t.name)).map_err(|e| self.upload_error(e))
    }
}

/// The error for values a weight holds beyond f16's range, which the GPU engine stores in f16.
fn f16_overflow(label: &str, n: usize) -> TillerError {
    TillerError::Safetensors(format!(
        "tensor `{label}` holds {n} value{} beyond f16's range (±65504), and the GPU engine keeps weights in f16: they would become infinities; run it on the CPU engine (--device cpu, or \"CPU\" in the page), which keeps f32",
        if n == 1 { "" } else { "s" }
    ))
}
