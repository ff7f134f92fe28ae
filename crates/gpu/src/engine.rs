//! [`GpuEngine`]: the family's block program (`tiller_core::arch::program`) on wgpu, the same
//! forward as `tiller_core::CpuModel` op for op (embed → per block, each op of the program as a
//! pipeline dispatch, hooks where the injections are added and captures copied → final norm →
//! head), recorded as one compute pass and submitted once per step.
//!
//! Buffers are built once and reused: activations (one buffer per program slot) are sized for
//! a row capacity that grows to the largest step seen; KV caches and rotary tables are
//! allocated by `reset`; bind groups are rebuilt only when one of those buffers is replaced.
//! Per step only tokens, row metadata, hook tables and kernel params are written, and only
//! logits and the captured rows are read back (captures are gathered on the GPU into one
//! buffer: the rows and channels asked for, not whole slots).

use std::collections::HashMap;

use tiller_core::arch::program::{self, Op, Slot};
use tiller_core::arch::{Activation, NormKind, PosEncoding, MAX_HEAD_DIM as SPEC_MAX_HEAD_DIM};
use tiller_core::backend::{check_fork, Backend, Site, StepOutput, StepPlan, StepRequest};
use tiller_core::weights::load_from_bytes;
use tiller_core::{ModelSpec, Result, TillerError};

use crate::device::describe_adapter;
use crate::errors::{ErrorLog, Scopes};
use crate::kernels::{
    check_workgroups, AttentionBuffers, AttentionParams, CopyParams, EmbedBuffers, EmbedParams, GatherBuffers, HookParams,
    InterveneBuffers, Kernels, KvWriteBuffers, LayernormBuffers, LayernormParams, LogitsBuffers, LogitsParams, MatmulBuffers, MatmulParams,
    ParamsArena, Recorder, ResidualBuffers, ResidualParams, RopeBuffers, RopeParams, MAX_HEAD_DIM,
};
use crate::readback::map_read;
use crate::weights::{max_binding, GpuWeights, GpuWeightsSink};

mod tape;
pub use tape::GpuTape;
use tape::TapeState;

/// Per-row activations for up to `rows` rows (one buffer per program slot), plus the step's
/// small inputs.
struct Activations {
    rows: usize,
    /// Per slot, [R, width].
    slots: HashMap<Slot, wgpu::Buffer>,
    /// [R] u32
    tokens: wgpu::Buffer,
    /// [R] u32
    positions: wgpu::Buffer,
    /// [R] (slot, pos)
    meta: wgpu::Buffer,
    /// [R] rows whose logits are wanted
    row_index: wgpu::Buffer,
}

impl Activations {
    fn slot(&self, s: Slot) -> &wgpu::Buffer {
        // Every slot has a buffer (unused ones are tiny), see `Activations::new`.
        &self.slots[&s]
    }
}

/// Logits output and its readback buffer, for up to `rows` rows at a time.
struct LogitsOut {
    rows: usize,
    out: wgpu::Buffer,
    staging: wgpu::Buffer,
}

struct KvCache {
    /// Per layer [S, TM, KV].
    k: Vec<wgpu::Buffer>,
    v: Vec<wgpu::Buffer>,
    lens: Vec<usize>,
    max_len: usize,
    /// Rotary tables [TM, D/2] (tiny placeholders without rotary).
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
}

/// Every bind group of a forward, valid until a buffer they name is replaced.
struct BindGroups {
    /// One per wte chunk.
    embed: Vec<wgpu::BindGroup>,
    /// Per layer, per op of the block program (None for hooks, which use `inject`). Empty
    /// until `reset` made caches.
    layers: Vec<Vec<Option<wgpu::BindGroup>>>,
    /// `intervene` on the slot of each hook site.
    intervene: HashMap<Site, wgpu::BindGroup>,
    /// `gather` from the slot of each hook site into the capture buffer.
    gather: HashMap<Site, wgpu::BindGroup>,
    /// Per layer, `copy_slot` on its k and v caches (empty until `reset`).
    fork: Vec<[wgpu::BindGroup; 2]>,
    ln_f: wgpu::BindGroup,
    /// Per head chunk, reading `H` (after the final norm) or `X` (unembed without it).
    logits_ln: Vec<wgpu::BindGroup>,
    logits_x: Vec<wgpu::BindGroup>,
}

/// A model on a wgpu device. Implements [`Backend`] with the semantics of `CpuModel`.
pub struct GpuEngine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    cfg: ModelSpec,
    block: Vec<Op>,
    kernels: Kernels,
    arena: ParamsArena,
    w: GpuWeights,
    acts: Activations,
    logits: LogitsOut,
    /// Injection tables, row maps and capture row lists of a step (f32 and u32 words).
    inject: wgpu::Buffer,
    /// The step's captures, gathered, and their readback buffer.
    captures: wgpu::Buffer,
    captures_staging: wgpu::Buffer,
    /// Bound where a kernel's buffer is unused (wpe of a rotary model, a norm's bias).
    dummy: wgpu::Buffer,
    kv: Option<KvCache>,
    groups: Option<BindGroups>,
    /// MELBO's tape while a tape forward or backward is under way (see `tape.rs`).
    tape: Option<TapeState>,
    /// The tape's blocks (source, target) and their projection weights transposed
    /// (`h.N.….weight` → [N, K] f16), for the backward's `dx += dy · Wᵀ`; kept across prompts
    /// and steps, dropped when the blocks change.
    tape_weights: Option<((usize, usize), HashMap<String, wgpu::Buffer>)>,
    log: ErrorLog,
}

const MB: f64 = 1e6;

fn storage(device: &wgpu::Device, label: &str, size: u64, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: size.max(16).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

fn mappable(device: &wgpu::Device, label: &str, size: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: size.max(16).next_multiple_of(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

fn slot_label(s: Slot) -> &'static str {
    match s {
        Slot::X => "x",
        Slot::H => "h",
        Slot::Qkv => "qkv",
        Slot::Z => "z",
        Slot::Attn => "attn_out",
        Slot::Fc => "fc",
        Slot::Gate => "gate",
        Slot::Mlp => "mlp_out",
    }
}

impl Activations {
    fn new(device: &wgpu::Device, cfg: &ModelSpec, rows: usize) -> Self {
        use wgpu::BufferUsages as U;
        let r = rows as u64;
        let slots = Slot::ALL
            .iter()
            .map(|&s| {
                let width = if s.used(cfg) { s.width(cfg) as u64 } else { 0 };
                (s, storage(device, slot_label(s), r * width * 4, U::COPY_SRC | U::COPY_DST))
            })
            .collect();
        let small = |label: &str, words: u64| storage(device, label, r * words * 4, U::COPY_DST);
        Self {
            rows,
            slots,
            tokens: small("tokens", 1),
            positions: small("positions", 1),
            meta: small("row meta", 2),
            row_index: small("row index", 1),
        }
    }
}

/// Why the GPU engine cannot run a model (None: it can).
pub fn unsupported(s: &ModelSpec) -> Option<String> {
    if s.head_dim > MAX_HEAD_DIM {
        return Some(format!(
            "head size {} is larger than the GPU attention kernel's {MAX_HEAD_DIM} (the CPU reference takes up to {SPEC_MAX_HEAD_DIM})",
            s.head_dim
        ));
    }
    None
}

impl GpuEngine {
    /// A [`GpuWeightsSink`] to stream `model.safetensors` into (through
    /// `tiller_core::weights::StreamLoader` or `load_from_bytes`); then [`GpuEngine::new`].
    pub fn loader(device: &wgpu::Device) -> GpuWeightsSink {
        GpuWeightsSink::new(device)
    }

    /// Builds the engine on uploaded weights. `info` is only used by [`Backend::describe`].
    /// Installs an uncaptured-error handler on the device, so GPU errors come back as
    /// `TillerError::Gpu` instead of panics.
    pub async fn new(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo, weights: GpuWeights) -> Result<Self> {
        let cfg = weights.config;
        if let Some(why) = unsupported(&cfg) {
            return Err(TillerError::Gpu(why));
        }
        let log = ErrorLog::install(&device);
        let scopes = Scopes::push(&device);
        let kernels = Kernels::new(&device)?;
        let arena = ParamsArena::new(&device, &kernels);
        let acts = Activations::new(&device, &cfg, 1);
        let logits = Self::make_logits(&device, &cfg, 1);
        let inject = storage(&device, "injections", 1024, wgpu::BufferUsages::COPY_DST);
        let captures = storage(&device, "captures", 1024, wgpu::BufferUsages::COPY_SRC);
        let captures_staging = mappable(&device, "captures readback", 1024);
        let dummy = storage(&device, "unused binding", 16, wgpu::BufferUsages::empty());
        scopes.pop("building the GPU pipelines").await?;
        log.check("building the GPU pipelines")?;
        let block = program::block(&cfg);
        Ok(Self {
            device,
            queue,
            info,
            cfg,
            block,
            kernels,
            arena,
            w: weights,
            acts,
            logits,
            inject,
            captures,
            captures_staging,
            dummy,
            kv: None,
            groups: None,
            tape: None,
            tape_weights: None,
            log,
        })
    }

    /// Loads a whole `model.safetensors` held in memory (native convenience; the web page
    /// streams through [`GpuEngine::loader`] instead).
    pub async fn from_bytes(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        safetensors: &[u8],
        config_json: Option<&[u8]>,
    ) -> Result<Self> {
        let mut sink = Self::loader(&device);
        load_from_bytes(safetensors, config_json, &mut sink)?;
        let weights = sink.finish().await?;
        Self::new(device, queue, info, weights).await
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.w.bytes
    }

    fn make_logits(device: &wgpu::Device, cfg: &ModelSpec, rows: usize) -> LogitsOut {
        let size = (rows * cfg.vocab_size * 4) as u64;
        LogitsOut {
            rows,
            out: storage(device, "logits", size, wgpu::BufferUsages::COPY_SRC),
            staging: mappable(device, "logits readback", size),
        }
    }

    /// Most rows of logits one binding holds.
    fn max_logit_rows(&self) -> usize {
        ((max_binding(&self.device) / (self.cfg.vocab_size as u64 * 4)) as usize).max(1)
    }

    /// Grows the activations to hold `rows` rows.
    fn ensure_rows(&mut self, rows: usize) -> Result<()> {
        if rows <= self.acts.rows {
            return Ok(());
        }
        let widest = Slot::ALL.iter().map(|s| s.width(&self.cfg)).max().unwrap_or(1) as u64 * 4;
        let limit = (max_binding(&self.device) / widest) as usize;
        if rows > limit {
            return Err(TillerError::input(format!(
                "a step of {rows} tokens needs activations larger than this GPU binds (at most {limit} tokens per step); split the step"
            )));
        }
        let rows = rows.next_power_of_two().min(limit);
        self.acts = Activations::new(&self.device, &self.cfg, rows);
        self.groups = None;
        self.log.check("allocating activations")
    }

    fn ensure_logit_rows(&mut self, rows: usize) -> Result<()> {
        if rows <= self.logits.rows {
            return Ok(());
        }
        let rows = rows.next_power_of_two().min(self.max_logit_rows());
        self.logits = Self::make_logits(&self.device, &self.cfg, rows);
        // The logits bind groups name the old output buffer.
        self.groups = None;
        self.log.check("allocating logits")
    }

    /// The size to grow a per-step buffer to so it holds `bytes`: the next power of two, but
    /// no more than one binding holds; an error (naming `what`, with `hint`) when `bytes` alone
    /// is past that.
    fn grown_size(&self, bytes: u64, what: &str, hint: &str) -> Result<u64> {
        let limit = max_binding(&self.device);
        if bytes > limit {
            return Err(TillerError::input(format!(
                "the step's {what} take {:.1} MB, more than this GPU binds ({:.1} MB){hint}",
                bytes as f64 / MB,
                limit as f64 / MB
            )));
        }
        Ok(bytes.next_power_of_two().min(limit))
    }

    fn ensure_inject(&mut self, bytes: u64) -> Result<()> {
        if bytes <= self.inject.size() {
            return Ok(());
        }
        let size = self.grown_size(bytes, "injection tables", "")?;
        self.inject = storage(&self.device, "injections", size, wgpu::BufferUsages::COPY_DST);
        self.groups = None;
        self.log.check("allocating injection tables")
    }

    fn ensure_captures(&mut self, bytes: u64) -> Result<()> {
        if bytes <= self.captures.size() {
            return Ok(());
        }
        let size = self.grown_size(bytes, "captures", "; capture fewer rows per step")?;
        self.captures = storage(&self.device, "captures", size, wgpu::BufferUsages::COPY_SRC);
        self.captures_staging = mappable(&self.device, "captures readback", size);
        self.groups = None;
        self.log.check("allocating the capture buffer")
    }

    /// The bind group of one op of block `l` (None for hooks).
    fn op_group(&self, l: usize, op: &Op, kv: &KvCache) -> Result<Option<wgpu::BindGroup>> {
        let (d, k, a, w) = (&self.device, &self.kernels, &self.acts, &self.w);
        let t = |name: String| w.get(&name);
        Ok(match *op {
            Op::Hook(_) => None,
            Op::Norm { src, dst, param } => {
                let prefix = format!("h.{l}.{}", param.name());
                let weight = t(format!("{prefix}.weight"))?;
                let bias = if self.cfg.norm.kind == NormKind::LayerNorm { t(format!("{prefix}.bias"))? } else { &self.dummy };
                Some(k.bind_layernorm(d, &LayernormBuffers { out: a.slot(dst), inp: a.slot(src), weight, bias }))
            }
            Op::Linear { src, dst, param, .. } => {
                let name = format!("h.{l}.{}", param.name());
                let (weight, bias) = (t(format!("{name}.weight"))?, t(format!("{name}.bias"))?);
                Some(k.bind_matmul(d, &MatmulBuffers { out: a.slot(dst), inp: a.slot(src), weight, bias }))
            }
            Op::Rope => Some(k.bind_rope(d, &RopeBuffers { qkv: a.slot(Slot::Qkv), cos: &kv.cos, sin: &kv.sin, rows: &a.meta })),
            Op::KvWrite => {
                Some(k.bind_kv_write(d, &KvWriteBuffers { k_cache: &kv.k[l], v_cache: &kv.v[l], qkv: a.slot(Slot::Qkv), rows: &a.meta }))
            }
            Op::Attention => Some(k.bind_attention(
                d,
                &AttentionBuffers { out: a.slot(Slot::Z), qkv: a.slot(Slot::Qkv), k_cache: &kv.k[l], v_cache: &kv.v[l], rows: &a.meta },
            )),
            Op::SwiGlu => Some(k.bind_swiglu(d, &ResidualBuffers { x: a.slot(Slot::Fc), y: a.slot(Slot::Gate) })),
            Op::Add { dst, src } => Some(k.bind_residual_add(d, &ResidualBuffers { x: a.slot(dst), y: a.slot(src) })),
        })
    }

    fn build_groups(&self) -> Result<BindGroups> {
        let (d, k, a, w) = (&self.device, &self.kernels, &self.acts, &self.w);
        let layers = match &self.kv {
            None => Vec::new(),
            Some(kv) => (0..self.cfg.n_layer)
                .map(|l| self.block.iter().map(|op| self.op_group(l, op, kv)).collect::<Result<Vec<_>>>())
                .collect::<Result<Vec<_>>>()?,
        };
        let logits = |inp| -> Vec<wgpu::BindGroup> {
            w.head_chunks()
                .iter()
                .map(|chunk| k.bind_logits(d, &LogitsBuffers { out: &self.logits.out, inp, row_index: &a.row_index, wte: &chunk.buffer }))
                .collect()
        };
        let wpe = w.wpe.as_ref().unwrap_or(&self.dummy);
        let site_groups = |bind: &dyn Fn(&wgpu::Buffer) -> wgpu::BindGroup| -> HashMap<Site, wgpu::BindGroup> {
            Site::ALL.into_iter().map(|site| (site, bind(a.slot(program::site_slot(site))))).collect()
        };
        let intervene = site_groups(&|x| k.bind_intervene(d, &InterveneBuffers { x, table: &self.inject, row_map: &self.inject }));
        let gather = site_groups(&|src| k.bind_gather(d, &GatherBuffers { captured: &self.captures, src, rows: &self.inject }));
        let fork = match &self.kv {
            None => Vec::new(),
            Some(kv) => kv.k.iter().zip(&kv.v).map(|(kc, vc)| [k.bind_copy_slot(d, kc), k.bind_copy_slot(d, vc)]).collect(),
        };
        let ln_f_bias = if self.cfg.norm.kind == NormKind::LayerNorm { w.get("ln_f.bias")? } else { &self.dummy };
        Ok(BindGroups {
            embed: w
                .wte
                .iter()
                .map(|chunk| {
                    k.bind_embed(
                        d,
                        &EmbedBuffers { out: a.slot(Slot::X), tokens: &a.tokens, positions: &a.positions, wte: &chunk.buffer, wpe },
                    )
                })
                .collect(),
            layers,
            intervene,
            gather,
            fork,
            ln_f: k.bind_layernorm(
                d,
                &LayernormBuffers { out: a.slot(Slot::H), inp: a.slot(Slot::X), weight: w.get("ln_f.weight")?, bias: ln_f_bias },
            ),
            logits_ln: logits(a.slot(Slot::H)),
            logits_x: logits(a.slot(Slot::X)),
        })
    }

    /// Rebuilds the bind groups if a buffer they name was replaced.
    fn ensure_groups(&mut self) -> Result<()> {
        if self.groups.is_none() {
            self.groups = Some(self.build_groups()?);
        }
        Ok(())
    }

    fn groups_ref(&self) -> Result<&BindGroups> {
        self.groups.as_ref().ok_or_else(|| TillerError::Gpu("internal: bind groups were not built".into()))
    }

    fn write_u32(&self, buffer: &wgpu::Buffer, data: &[u32]) {
        if !data.is_empty() {
            self.queue.write_buffer(buffer, 0, bytemuck::cast_slice(data));
        }
    }

    fn norm_params(&self, rows: u32) -> LayernormParams {
        let rms = u32::from(self.cfg.norm.kind == NormKind::RmsNorm);
        LayernormParams { rows, c: self.cfg.n_embd as u32, eps: self.cfg.norm.eps, rms }
    }

    /// Lays the step's hooks out in the arena (each injection's table, then its row map; each
    /// capture's row list) and sizes the capture buffer. Returns the params of every injection
    /// and every capture, in request order, and the captured floats in all.
    fn pack_hooks(&mut self, req: &StepRequest, plan: &StepPlan) -> Result<(Vec<HookParams>, Vec<HookParams>, usize)> {
        let mut words: Vec<u32> = Vec::new();
        let r = plan.rows.len() as u32;
        let mut inject = Vec::with_capacity(req.injections.len());
        for (inj, &(col0, width)) in req.injections.iter().zip(&plan.injection_cols) {
            let table_offset = words.len() as u32;
            words.extend(inj.table.iter().map(|x| x.to_bits()));
            let map_offset = words.len() as u32;
            words.extend_from_slice(&inj.row_map);
            inject.push(HookParams {
                rows: r,
                stride: inj.site.width(&self.cfg) as u32,
                col0: col0 as u32,
                width: width as u32,
                table_offset,
                map_offset,
                mode: HookParams::mode(inj.mode),
                _pad: 0,
            });
        }
        let mut captures = Vec::with_capacity(plan.captures.len());
        let mut out = 0usize;
        for (cap, asked) in plan.captures.iter().zip(&req.captures) {
            let table_offset = words.len() as u32;
            words.extend_from_slice(&cap.rows);
            // A projection's vector follows its row list.
            let vector_offset = words.len() as u32;
            if let Some(v) = &asked.project {
                words.extend(v.iter().map(|x| x.to_bits()));
            }
            captures.push(HookParams {
                rows: cap.rows.len() as u32,
                stride: cap.site.width(&self.cfg) as u32,
                col0: cap.col0 as u32,
                width: cap.width as u32,
                table_offset,
                map_offset: out as u32,
                mode: if cap.projected { vector_offset } else { 0 },
                _pad: 0,
            });
            out += cap.out_len();
        }
        self.ensure_inject(words.len() as u64 * 4)?;
        self.ensure_captures(out as u64 * 4)?;
        self.write_u32(&self.inject, &words);
        Ok((inject, captures, out))
    }

    /// Records logits of `picked` rows (indices into `H` or `X`) for one group that fits the
    /// logits buffer, and the copy to its readback buffer.
    fn record_logits(&mut self, rec: &mut Recorder, picked: &[u32], from_ln: bool) -> Result<()> {
        self.ensure_groups()?;
        self.write_u32(&self.acts.row_index, picked);
        let (c, v) = (self.cfg.n_embd as u32, self.cfg.vocab_size as u32);
        let rows = picked.len() as u32;
        let chunks: Vec<(u32, u32)> = self.w.head_chunks().iter().map(|ch| (ch.vocab_start, ch.vocab_len)).collect();
        let groups = self.groups_ref()?;
        let logits_groups = if from_ln { &groups.logits_ln } else { &groups.logits_x };
        for ((vocab_start, vocab_len), group) in chunks.into_iter().zip(logits_groups) {
            let p = LogitsParams { rows, c, vocab_start, vocab_len, v };
            self.kernels.logits(rec, group, &p);
        }
        rec.copy(&self.logits.out, 0, &self.logits.staging, rows as u64 * v as u64 * 4);
        Ok(())
    }

    /// Submits `rec` (the step's work, plus the first group's logits when `picked` is not
    /// empty), reads the capture and logits back, and runs any further groups of logits.
    async fn submit_and_read(
        &mut self,
        mut rec: Recorder,
        picked: &[u32],
        from_ln: bool,
        plan: Option<(&StepPlan, usize)>,
    ) -> Result<StepOutput> {
        let v = self.cfg.vocab_size;
        let group = self.logits.rows;
        let mut out = StepOutput::default();
        let mut groups = picked.chunks(group);
        if let Some(first) = groups.next() {
            self.record_logits(&mut rec, first, from_ln)?;
        }
        let scopes = Scopes::push(&self.device);
        rec.submit(&self.device, &self.queue, &self.kernels, &mut self.arena);
        scopes.pop("running the forward pass").await?;
        self.log.check("running the forward pass")?;
        if let Some((plan, floats)) = plan {
            let all: Vec<f32> = if floats > 0 {
                bytemuck::pod_collect_to_vec(&map_read(&self.device, &self.captures_staging, floats as u64 * 4).await?)
            } else {
                Vec::new()
            };
            let mut at = 0;
            out.captured = plan
                .captures
                .iter()
                .map(|c| {
                    let n = c.out_len();
                    at += n;
                    all[at - n..at].to_vec()
                })
                .collect();
        }
        let mut logits = Vec::with_capacity(picked.len() * v);
        let mut read = picked.len().min(group);
        if read > 0 {
            let bytes = map_read(&self.device, &self.logits.staging, (read * v * 4) as u64).await?;
            logits.extend_from_slice(bytemuck::cast_slice::<u8, f32>(&bytes));
        }
        for next in groups {
            let mut rec = Recorder::new(&self.kernels);
            self.record_logits(&mut rec, next, from_ln)?;
            let scopes = Scopes::push(&self.device);
            rec.submit(&self.device, &self.queue, &self.kernels, &mut self.arena);
            scopes.pop("computing logits").await?;
            let bytes = map_read(&self.device, &self.logits.staging, (next.len() * v * 4) as u64).await?;
            logits.extend_from_slice(bytemuck::cast_slice::<u8, f32>(&bytes));
            read += next.len();
        }
        debug_assert_eq!(read, picked.len());
        out.logits = logits;
        Ok(out)
    }

    /// Records the step's forward: embed, every op of every block (hooks: its interventions,
    /// then its captures' gathers), the copy of the captures to their readback buffer, and the
    /// final norm when logits are wanted. Returns whether the step stopped at a capture.
    fn record_forward(
        &self,
        rec: &mut Recorder,
        req: &StepRequest,
        plan: &StepPlan,
        (inject_params, capture_params, captured_floats): &(Vec<HookParams>, Vec<HookParams>, usize),
    ) -> Result<bool> {
        let cfg = &self.cfg;
        let (c, r) = (cfg.n_embd as u32, plan.rows.len() as u32);
        let max_len = self.kv.as_ref().map_or(0, |kv| kv.max_len) as u32;
        let groups = self.groups_ref()?;
        let k = &self.kernels;
        let learned = u32::from(cfg.pos == PosEncoding::Learned);
        // MELBO's tape: the residual before block `source` kept from the batch's first forward,
        // or this forward starting from it there
        let prefix = self.tape.as_ref().and_then(|t| t.prefix(cfg.n_embd));
        let resume = prefix.is_some_and(|p| p.3);
        if !resume {
            for (chunk, group) in self.w.wte.iter().zip(&groups.embed) {
                k.embed(rec, group, &EmbedParams { rows: r, c, vocab_start: chunk.vocab_start, vocab_len: chunk.vocab_len, learned });
            }
        }
        let attn = AttentionParams {
            rows: r,
            n_head: cfg.n_head as u32,
            n_kv_head: cfg.n_kv_head as u32,
            head_dim: cfg.head_dim as u32,
            tm: max_len,
        };
        let rope = cfg.rope().map(|rp| RopeParams {
            rows: r,
            heads: (cfg.n_head + cfg.n_kv_head) as u32,
            head_dim: cfg.head_dim as u32,
            qkv_width: cfg.qkv_width() as u32,
            half: (rp.rotary_dim / 2) as u32,
        });
        let gelu_flag = match cfg.act {
            Activation::GeluErf => MatmulParams::GELU_ERF,
            _ => MatmulParams::GELU,
        };
        let norm = self.norm_params(r);
        let copy_captures = |rec: &mut Recorder| rec.copy(&self.captures, 0, &self.captures_staging, *captured_floats as u64 * 4);
        for (l, layer_groups) in groups.layers.iter().enumerate() {
            if let Some((source, buffer, bytes, resume)) = prefix {
                match l.cmp(&source) {
                    std::cmp::Ordering::Less if resume => continue,
                    std::cmp::Ordering::Equal if resume => rec.copy(buffer, 0, self.acts.slot(Slot::X), bytes),
                    std::cmp::Ordering::Equal => rec.copy(self.acts.slot(Slot::X), 0, buffer, bytes),
                    _ => {}
                }
            }
            for (oi, (op, group)) in self.block.iter().zip(layer_groups).enumerate() {
                if let Op::Hook(site) = *op {
                    for (inj, p) in req.injections.iter().zip(inject_params) {
                        if inj.layer == l && inj.site == site {
                            k.intervene(rec, &groups.intervene[&site], p);
                        }
                    }
                    for (cap, p) in plan.captures.iter().zip(capture_params) {
                        if cap.layer == l && cap.site == site {
                            if cap.projected {
                                k.project(rec, &groups.gather[&site], p);
                            } else {
                                k.gather(rec, &groups.gather[&site], p);
                            }
                        }
                    }
                    if plan.stop_after == Some((l, site)) {
                        copy_captures(rec);
                        return Ok(true);
                    }
                    continue;
                }
                let g = group.as_ref().ok_or_else(|| TillerError::Gpu("internal: an op has no bind group".into()))?;
                let taped = self.tape.as_ref().and_then(|t| t.saved(l, oi));
                if let Some(saved) = taped {
                    self.tape_before(rec, op, saved);
                }
                match *op {
                    Op::Hook(_) => {}
                    Op::Norm { .. } => k.layernorm(rec, g, &norm),
                    Op::Linear { src, dst, gelu: true, .. } if taped.is_some() => {
                        // the tape keeps the projection's output before the GELU
                        let p = MatmulParams { rows: r, k: src.width(cfg) as u32, n: dst.width(cfg) as u32, flags: MatmulParams::BIAS };
                        k.matmul(rec, g, &p);
                        if let Some(saved) = taped {
                            self.tape_gelu(rec, dst, saved, gelu_flag);
                        }
                    }
                    Op::Linear { src, dst, gelu, .. } => {
                        let flags = MatmulParams::BIAS | if gelu { gelu_flag } else { 0 };
                        k.matmul(rec, g, &MatmulParams { rows: r, k: src.width(cfg) as u32, n: dst.width(cfg) as u32, flags });
                    }
                    Op::Rope => {
                        if let Some(p) = &rope {
                            k.rope(rec, g, p);
                        }
                    }
                    Op::KvWrite => k.kv_write(rec, g, &attn),
                    Op::Attention => k.attention(rec, g, &attn),
                    Op::SwiGlu => k.swiglu(rec, g, &ResidualParams::new(r, cfg.n_inner as u32)),
                    Op::Add { .. } => k.residual_add(rec, g, &ResidualParams::new(r, c)),
                }
            }
        }
        copy_captures(rec);
        if !plan.logit_rows.is_empty() {
            k.layernorm(rec, &groups.ln_f, &norm);
        }
        Ok(false)
    }
}

impl Backend for GpuEngine {
    fn config(&self) -> &ModelSpec {
        &self.cfg
    }

    fn describe(&self) -> String {
        format!("GPU: {}", describe_adapter(&self.info))
    }

    fn reset(&mut self, slots: usize, max_len: usize) -> Result<()> {
        let cfg = self.cfg;
        let max_len = max_len.min(cfg.n_positions);
        self.kv = None;
        self.groups = None;
        let bytes = (slots * max_len * cfg.kv_width() * 4) as u64;
        let limit = max_binding(&self.device);
        if bytes > limit {
            return Err(TillerError::Gpu(format!(
                "a KV cache of {slots} slots × {max_len} positions needs {:.1} MB per layer in one binding but this GPU allows {:.1} MB; use fewer slots or a shorter max length",
                bytes as f64 / MB,
                limit as f64 / MB
            )));
        }
        let make = |kind: &str| -> Vec<wgpu::Buffer> {
            (0..cfg.n_layer).map(|l| storage(&self.device, &format!("h.{l} {kind} cache"), bytes, wgpu::BufferUsages::empty())).collect()
        };
        let (k, v) = (make("k"), make("v"));
        let (cos, sin) = match cfg.rope() {
            Some(rope) => {
                let (cos, sin) = rope.tables(max_len);
                let upload = |label: &str, data: &[f32]| {
                    let b = storage(&self.device, label, data.len() as u64 * 4, wgpu::BufferUsages::COPY_DST);
                    self.queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
                    b
                };
                (upload("rope cos", &cos), upload("rope sin", &sin))
            }
            None => (self.dummy.clone(), self.dummy.clone()),
        };
        self.log.check("allocating the KV caches")?;
        self.kv = Some(KvCache { k, v, lens: vec![0; slots], max_len, cos, sin });
        Ok(())
    }

    fn slot_len(&self, slot: usize) -> usize {
        self.kv.as_ref().and_then(|kv| kv.lens.get(slot).copied()).unwrap_or(0)
    }

    async fn step(&mut self, req: &StepRequest) -> Result<StepOutput> {
        let cfg = self.cfg;
        let (lens, max_len) = match &self.kv {
            Some(kv) => (kv.lens.clone(), kv.max_len),
            None => (Vec::new(), 0),
        };
        let plan = StepPlan::new(req, &lens, max_len, &cfg)?;
        let r = plan.rows.len();
        if r == 0 {
            return Ok(StepOutput { captured: vec![Vec::new(); plan.captures.len()], ..Default::default() });
        }
        check_workgroups(&self.device, "a step", r)?;
        self.ensure_rows(r)?;
        self.ensure_logit_rows(plan.logit_rows.len())?;
        let hooks = self.pack_hooks(req, &plan)?;

        let tokens: Vec<u32> = req.seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let positions: Vec<u32> = plan.rows.iter().map(|m| m.pos).collect();
        let meta: Vec<u32> = plan.rows.iter().flat_map(|m| [m.slot, m.pos]).collect();
        self.write_u32(&self.acts.tokens, &tokens);
        self.write_u32(&self.acts.positions, &positions);
        self.write_u32(&self.acts.meta, &meta);

        self.ensure_groups()?;
        let mut rec = Recorder::new(&self.kernels);
        let stopped = self.record_forward(&mut rec, req, &plan, &hooks)?;
        let out = self.submit_and_read(rec, &plan.logit_rows, true, Some((&plan, hooks.2))).await?;
        if !stopped {
            if let Some(kv) = &mut self.kv {
                for s in &req.seqs {
                    kv.lens[s.slot] += s.tokens.len();
                }
            }
        }
        Ok(out)
    }

    fn fork_slot(&mut self, src: usize, dst: usize) -> Result<()> {
        let Some(kv) = &self.kv else {
            return check_fork(&[], src, dst);
        };
        check_fork(&kv.lens, src, dst)?;
        if src == dst {
            return Ok(());
        }
        let (tm, width) = (kv.max_len, self.cfg.kv_width());
        let len = kv.lens[src];
        let p = CopyParams { kv: width as u32, len: len as u32, src: (src * tm * width) as u32, dst: (dst * tm * width) as u32 };
        self.ensure_groups()?;
        let groups = self.groups_ref()?;
        let mut rec = Recorder::new(&self.kernels);
        for pair in &groups.fork {
            for g in pair {
                self.kernels.copy_slot(&mut rec, g, &p);
            }
        }
        rec.submit(&self.device, &self.queue, &self.kernels, &mut self.arena);
        self.log.check("copying a KV cache slot")?;
        if let Some(kv) = &mut self.kv {
            kv.lens[dst] = len;
        }
        Ok(())
    }

    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> Result<Vec<f32>> {
        let c = self.cfg.n_embd;
        if rows.len() % c != 0 {
            return Err(TillerError::input("vectors to unembed must be a multiple of n_embd long".to_string()));
        }
        let k = rows.len() / c;
        if k == 0 {
            return Ok(Vec::new());
        }
        check_workgroups(&self.device, "unembed", k)?;
        self.ensure_rows(k)?;
        self.ensure_logit_rows(k)?;
        self.queue.write_buffer(self.acts.slot(Slot::X), 0, bytemuck::cast_slice(rows));
        let mut rec = Recorder::new(&self.kernels);
        if apply_ln_f {
            self.ensure_groups()?;
            let ln_f = &self.groups_ref()?.ln_f.clone();
            self.kernels.layernorm(&mut rec, ln_f, &self.norm_params(k as u32));
        }
        let picked: Vec<u32> = (0..k as u32).collect();
        Ok(self.submit_and_read(rec, &picked, apply_ln_f, None).await?.logits)
    }
}
