//! [`GpuEngine`]: GPT-2 on wgpu, the same forward as `tiller_core::CpuModel` step for step
//! (embed → per block: inject/capture resid_pre, ln_1, c_attn, kv_write, attention, c_proj,
//! inject/capture attn_out, residual, ln_2, c_fc+GELU, c_proj, inject/capture mlp_out, residual →
//! ln_f → logits), recorded as one compute pass and submitted once per step.
//!
//! Buffers are built once and reused: activations are sized for a row capacity that grows to
//! the largest step seen; KV caches are allocated by `reset`; bind groups are rebuilt only when
//! one of those buffers is replaced. Per step only tokens, row metadata, injection tables and
//! kernel params are written, and only logits (and a capture when asked) are read back.

use tiller_core::backend::{Backend, Injection, LogitRows, Site, StepOutput, StepRequest};
use tiller_core::model::plan_rows;
use tiller_core::weights::load_from_bytes;
use tiller_core::{Gpt2Config, Result, TillerError};

use crate::device::describe_adapter;
use crate::errors::{ErrorLog, Scopes};
use crate::kernels::{
    check_workgroups, AddRowsBuffers, AttentionBuffers, AttentionParams, EmbedBuffers, EmbedParams, Kernels, KvWriteBuffers,
    LayernormBuffers, LayernormParams, LogitsBuffers, LogitsParams, MatmulBuffers, MatmulParams, ParamsArena, Recorder,
    ResidualBuffers, ResidualParams, MAX_HEAD_DIM,
};
use crate::readback::map_read;
use crate::weights::{max_binding, GpuWeights, GpuWeightsSink};

/// Per-row activations for up to `rows` rows, plus the step's small inputs.
struct Activations {
    rows: usize,
    /// [R, C] residual stream
    x: wgpu::Buffer,
    /// [R, C] a LayerNorm's output
    ln: wgpu::Buffer,
    /// [R, 3C]
    qkv: wgpu::Buffer,
    /// [R, C] attention output before c_proj
    att: wgpu::Buffer,
    /// [R, C] a sublayer's output
    sub: wgpu::Buffer,
    /// [R, F]
    fc: wgpu::Buffer,
    /// [R] u32
    tokens: wgpu::Buffer,
    /// [R] u32
    positions: wgpu::Buffer,
    /// [R] (slot, pos)
    meta: wgpu::Buffer,
    /// [R] rows whose logits are wanted
    row_index: wgpu::Buffer,
    /// [R, C] captured activation, mappable
    capture: wgpu::Buffer,
}

/// Logits output and its readback buffer, for up to `rows` rows at a time.
struct LogitsOut {
    rows: usize,
    out: wgpu::Buffer,
    staging: wgpu::Buffer,
}

struct KvCache {
    /// Per layer [S, TM, C].
    k: Vec<wgpu::Buffer>,
    v: Vec<wgpu::Buffer>,
    lens: Vec<usize>,
    max_len: usize,
}

struct LayerGroups {
    ln_1: wgpu::BindGroup,
    c_attn: wgpu::BindGroup,
    kv_write: wgpu::BindGroup,
    attention: wgpu::BindGroup,
    attn_c_proj: wgpu::BindGroup,
    ln_2: wgpu::BindGroup,
    c_fc: wgpu::BindGroup,
    mlp_c_proj: wgpu::BindGroup,
}

/// Every bind group of a forward, valid until a buffer they name is replaced.
struct BindGroups {
    /// One per wte chunk.
    embed: Vec<wgpu::BindGroup>,
    /// Empty until `reset` made caches.
    layers: Vec<LayerGroups>,
    residual: wgpu::BindGroup,
    inject_x: wgpu::BindGroup,
    inject_sub: wgpu::BindGroup,
    ln_f: wgpu::BindGroup,
    /// Per wte chunk, reading `ln` (after ln_f) or `x` (unembed without ln_f).
    logits_ln: Vec<wgpu::BindGroup>,
    logits_x: Vec<wgpu::BindGroup>,
}

/// GPT-2 on a wgpu device. Implements [`Backend`] with the semantics of `CpuModel`.
pub struct GpuEngine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    cfg: Gpt2Config,
    kernels: Kernels,
    arena: ParamsArena,
    w: GpuWeights,
    acts: Activations,
    logits: LogitsOut,
    /// Injection tables and row maps of a step (f32 and u32 words).
    inject: wgpu::Buffer,
    kv: Option<KvCache>,
    groups: Option<BindGroups>,
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

impl Activations {
    fn new(device: &wgpu::Device, cfg: &Gpt2Config, rows: usize) -> Self {
        use wgpu::BufferUsages as U;
        let (c, f) = (cfg.n_embd as u64, cfg.n_inner as u64);
        let r = rows as u64;
        let act = |label: &str, width: u64| storage(device, label, r * width * 4, U::COPY_SRC | U::COPY_DST);
        let small = |label: &str, words: u64| storage(device, label, r * words * 4, U::COPY_DST);
        Self {
            rows,
            x: act("x", c),
            ln: act("ln", c),
            qkv: act("qkv", 3 * c),
            att: act("att", c),
            sub: act("sub", c),
            fc: act("fc", f),
            tokens: small("tokens", 1),
            positions: small("positions", 1),
            meta: small("row meta", 2),
            row_index: small("row index", 1),
            capture: mappable(device, "capture", r * c * 4),
        }
    }
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
        if cfg.head_dim() > MAX_HEAD_DIM {
            return Err(TillerError::Gpu(format!(
                "head size {} is larger than the attention kernel's {MAX_HEAD_DIM}",
                cfg.head_dim()
            )));
        }
        let log = ErrorLog::install(&device);
        let scopes = Scopes::push(&device);
        let kernels = Kernels::new(&device)?;
        let arena = ParamsArena::new(&device, &kernels);
        let acts = Activations::new(&device, &cfg, 1);
        let logits = Self::make_logits(&device, &cfg, 1);
        let inject = storage(&device, "injections", 1024, wgpu::BufferUsages::COPY_DST);
        scopes.pop("building the GPU pipelines").await?;
        log.check("building the GPU pipelines")?;
        Ok(Self { device, queue, info, cfg, kernels, arena, w: weights, acts, logits, inject, kv: None, groups: None, log })
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

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.w.bytes
    }

    fn make_logits(device: &wgpu::Device, cfg: &Gpt2Config, rows: usize) -> LogitsOut {
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
        let widest = (3 * self.cfg.n_embd).max(self.cfg.n_inner) as u64 * 4;
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

    fn ensure_inject(&mut self, bytes: u64) -> Result<()> {
        if bytes <= self.inject.size() {
            return Ok(());
        }
        if bytes > max_binding(&self.device) {
            return Err(TillerError::input(format!(
                "the step's injection tables take {:.1} MB, more than this GPU binds ({:.1} MB)",
                bytes as f64 / MB,
                max_binding(&self.device) as f64 / MB
            )));
        }
        self.inject = storage(&self.device, "injections", bytes.next_power_of_two(), wgpu::BufferUsages::COPY_DST);
        self.groups = None;
        self.log.check("allocating injection tables")
    }

    fn build_groups(&self) -> BindGroups {
        let (d, k, a, w) = (&self.device, &self.kernels, &self.acts, &self.w);
        let matmul = |out, inp, weight, bias| k.bind_matmul(d, &MatmulBuffers { out, inp, weight, bias });
        let layernorm = |out, inp, weight, bias| k.bind_layernorm(d, &LayernormBuffers { out, inp, weight, bias });
        let layers = match &self.kv {
            None => Vec::new(),
            Some(kv) => w
                .layers
                .iter()
                .enumerate()
                .map(|(l, lw)| LayerGroups {
                    ln_1: layernorm(&a.ln, &a.x, &lw.ln_1_weight, &lw.ln_1_bias),
                    c_attn: matmul(&a.qkv, &a.ln, &lw.c_attn_weight, &lw.c_attn_bias),
                    kv_write: k.bind_kv_write(d, &KvWriteBuffers { k_cache: &kv.k[l], v_cache: &kv.v[l], qkv: &a.qkv, rows: &a.meta }),
                    attention: k.bind_attention(
                        d,
                        &AttentionBuffers { out: &a.att, qkv: &a.qkv, k_cache: &kv.k[l], v_cache: &kv.v[l], rows: &a.meta },
                    ),
                    attn_c_proj: matmul(&a.sub, &a.att, &lw.attn_c_proj_weight, &lw.attn_c_proj_bias),
                    ln_2: layernorm(&a.ln, &a.x, &lw.ln_2_weight, &lw.ln_2_bias),
                    c_fc: matmul(&a.fc, &a.ln, &lw.c_fc_weight, &lw.c_fc_bias),
                    mlp_c_proj: matmul(&a.sub, &a.fc, &lw.mlp_c_proj_weight, &lw.mlp_c_proj_bias),
                })
                .collect(),
        };
        let logits = |inp| -> Vec<wgpu::BindGroup> {
            w.wte
                .iter()
                .map(|chunk| {
                    k.bind_logits(d, &LogitsBuffers { out: &self.logits.out, inp, row_index: &a.row_index, wte: &chunk.buffer })
                })
                .collect()
        };
        BindGroups {
            embed: w
                .wte
                .iter()
                .map(|chunk| {
                    k.bind_embed(
                        d,
                        &EmbedBuffers { out: &a.x, tokens: &a.tokens, positions: &a.positions, wte: &chunk.buffer, wpe: &w.wpe },
                    )
                })
                .collect(),
            layers,
            residual: k.bind_residual_add(d, &ResidualBuffers { x: &a.x, y: &a.sub }),
            inject_x: k.bind_add_rows(d, &AddRowsBuffers { x: &a.x, table: &self.inject, row_map: &self.inject }),
            inject_sub: k.bind_add_rows(d, &AddRowsBuffers { x: &a.sub, table: &self.inject, row_map: &self.inject }),
            ln_f: layernorm(&a.ln, &a.x, &w.ln_f_weight, &w.ln_f_bias),
            logits_ln: logits(&a.ln),
            logits_x: logits(&a.x),
        }
    }

    /// Rebuilds the bind groups if a buffer they name was replaced.
    fn ensure_groups(&mut self) {
        if self.groups.is_none() {
            self.groups = Some(self.build_groups());
        }
    }

    fn groups_ref(&self) -> Result<&BindGroups> {
        self.groups.as_ref().ok_or_else(|| TillerError::Gpu("internal: bind groups were not built".into()))
    }

    fn write_u32(&self, buffer: &wgpu::Buffer, data: &[u32]) {
        if !data.is_empty() {
            self.queue.write_buffer(buffer, 0, bytemuck::cast_slice(data));
        }
    }

    /// Lays the step's injections out in the arena: each table, then its row map.
    fn pack_injections(&mut self, injections: &[Injection]) -> Result<Vec<ResidualParams>> {
        let c = self.cfg.n_embd;
        let mut words: Vec<u32> = Vec::new();
        let mut params = Vec::with_capacity(injections.len());
        for inj in injections {
            let table_offset = words.len() as u32;
            words.extend(inj.table.iter().map(|x| x.to_bits()));
            let map_offset = words.len() as u32;
            words.extend_from_slice(&inj.row_map);
            params.push(ResidualParams { rows: inj.row_map.len() as u32, c: c as u32, table_offset, map_offset });
        }
        self.ensure_inject(words.len() as u64 * 4)?;
        self.write_u32(&self.inject, &words);
        Ok(params)
    }

    /// Records logits of `picked` rows (indices into `ln` or `x`) for one group that fits the
    /// logits buffer, and the copy to its readback buffer.
    fn record_logits(&mut self, rec: &mut Recorder, picked: &[u32], from_ln: bool) -> Result<()> {
        self.ensure_groups();
        self.write_u32(&self.acts.row_index, picked);
        let (c, v) = (self.cfg.n_embd as u32, self.cfg.vocab_size as u32);
        let rows = picked.len() as u32;
        let chunks: Vec<(u32, u32)> = self.w.wte.iter().map(|ch| (ch.vocab_start, ch.vocab_len)).collect();
        let groups = self.groups_ref()?;
        let logits_groups = if from_ln { &groups.logits_ln } else { &groups.logits_x };
        for ((vocab_start, vocab_len), group) in chunks.into_iter().zip(logits_groups) {
            let p = LogitsParams { rows, c, vocab_start, vocab_len, v };
            self.kernels.logits(rec, group, &p);
        }
        rec.copy(&self.logits.out, 0, &self.logits.staging, rows as u64 * v as u64 * 4);
        Ok(())
    }

    /// Submits `rec` (which holds the first group's logits when `picked` is not empty), reads
    /// everything back, and runs any further groups of logits.
    async fn finish_logits(&mut self, mut rec: Recorder, picked: &[u32], from_ln: bool, capture_rows: Option<usize>) -> Result<StepOutput> {
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
        if let Some(rows) = capture_rows {
            let bytes = map_read(&self.device, &self.acts.capture, (rows * self.cfg.n_embd * 4) as u64).await?;
            out.captured = bytemuck::pod_collect_to_vec(&bytes);
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
}

/// The (layer, site) a step stops after when it wants a capture and no logits.
fn stop_after(req: &StepRequest) -> Option<(usize, Site)> {
    if req.logits == LogitRows::None {
        req.capture
    } else {
        None
    }
}

impl Backend for GpuEngine {
    fn config(&self) -> &Gpt2Config {
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
        let bytes = (slots * max_len * cfg.n_embd * 4) as u64;
        let limit = max_binding(&self.device);
        if bytes > limit {
            return Err(TillerError::Gpu(format!(
                "a KV cache of {slots} slots × {max_len} positions needs {:.1} MB per layer in one binding but this GPU allows {:.1} MB; use fewer slots or a shorter max length",
                bytes as f64 / MB,
                limit as f64 / MB
            )));
        }
        let make = |kind: &str| -> Vec<wgpu::Buffer> {
            (0..cfg.n_layer)
                .map(|l| storage(&self.device, &format!("h.{l} {kind} cache"), bytes, wgpu::BufferUsages::empty()))
                .collect()
        };
        let (k, v) = (make("k"), make("v"));
        self.log.check("allocating the KV caches")?;
        self.kv = Some(KvCache { k, v, lens: vec![0; slots], max_len });
        Ok(())
    }

    fn slot_len(&self, slot: usize) -> usize {
        self.kv.as_ref().and_then(|kv| kv.lens.get(slot).copied()).unwrap_or(0)
    }

    async fn step(&mut self, req: &StepRequest) -> Result<StepOutput> {
        let cfg = self.cfg;
        let (c, f) = (cfg.n_embd as u32, cfg.n_inner as u32);
        let (lens, max_len) = match &self.kv {
            Some(kv) => (kv.lens.clone(), kv.max_len),
            None => (Vec::new(), 0),
        };
        let rows = plan_rows(req, &lens, max_len, &cfg)?;
        if req.logits == LogitRows::Last && req.seqs.iter().any(|s| s.tokens.is_empty()) {
            return Err(TillerError::input("a sequence in the step has no tokens".to_string()));
        }
        let r = rows.len();
        if r == 0 {
            return Ok(StepOutput::default());
        }
        check_workgroups(&self.device, "a step", r)?;
        self.ensure_rows(r)?;
        let picked: Vec<u32> = match req.logits {
            LogitRows::None => Vec::new(),
            LogitRows::All => (0..r as u32).collect(),
            LogitRows::Last => req
                .seqs
                .iter()
                .scan(0u32, |end, s| {
                    *end += s.tokens.len() as u32;
                    Some(*end - 1)
                })
                .collect(),
        };
        self.ensure_logit_rows(picked.len())?;
        let inject_params = self.pack_injections(&req.injections)?;

        let tokens: Vec<u32> = req.seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let positions: Vec<u32> = rows.iter().map(|m| m.pos).collect();
        let meta: Vec<u32> = rows.iter().flat_map(|m| [m.slot, m.pos]).collect();
        self.write_u32(&self.acts.tokens, &tokens);
        self.write_u32(&self.acts.positions, &positions);
        self.write_u32(&self.acts.meta, &meta);

        let stop = stop_after(req);
        let rows_u = r as u32;
        let mut rec = Recorder::new(&self.kernels);
        let mut captured = false;
        let mut stopped = false;
        {
            self.ensure_groups();
            let chunks: Vec<(u32, u32)> = self.w.wte.iter().map(|ch| (ch.vocab_start, ch.vocab_len)).collect();
            let groups = self.groups_ref()?;
            let k = &self.kernels;
            for ((vocab_start, vocab_len), group) in chunks.into_iter().zip(&groups.embed) {
                k.embed(&mut rec, group, &EmbedParams { rows: rows_u, c, vocab_start, vocab_len });
            }
            let ln = LayernormParams { rows: rows_u, c };
            let attn = AttentionParams { rows: rows_u, c, n_head: cfg.n_head as u32, tm: max_len as u32 };
            let residual = ResidualParams { rows: rows_u, c, table_offset: 0, map_offset: 0 };
            let linear = |k_in: u32, n: u32, gelu: bool| MatmulParams {
                rows: rows_u,
                k: k_in,
                n,
                flags: MatmulParams::BIAS | if gelu { MatmulParams::GELU } else { 0 },
            };
            // Injections at (layer, site) in request order, then the capture if it is this one.
            let mut hook = |rec: &mut Recorder, layer: usize, site: Site| -> bool {
                let (target, buffer) = match site {
                    Site::ResidPre => (&groups.inject_x, &self.acts.x),
                    Site::AttnOut | Site::MlpOut => (&groups.inject_sub, &self.acts.sub),
                };
                for (inj, p) in req.injections.iter().zip(&inject_params) {
                    if inj.layer == layer && inj.site == site {
                        k.add_rows(rec, target, p);
                    }
                }
                if req.capture == Some((layer, site)) {
                    rec.copy(buffer, 0, &self.acts.capture, r as u64 * c as u64 * 4);
                    captured = true;
                }
                stop == Some((layer, site))
            };
            'layers: for (l, g) in groups.layers.iter().enumerate() {
                if hook(&mut rec, l, Site::ResidPre) {
                    stopped = true;
                    break 'layers;
                }
                // x = x + attn(ln_1(x))
                k.layernorm(&mut rec, &g.ln_1, &ln);
                k.matmul(&mut rec, &g.c_attn, &linear(c, 3 * c, false));
                k.kv_write(&mut rec, &g.kv_write, &attn);
                k.attention(&mut rec, &g.attention, &attn);
                k.matmul(&mut rec, &g.attn_c_proj, &linear(c, c, false));
                if hook(&mut rec, l, Site::AttnOut) {
                    stopped = true;
                    break 'layers;
                }
                k.residual_add(&mut rec, &groups.residual, &residual);
                // x = x + mlp(ln_2(x))
                k.layernorm(&mut rec, &g.ln_2, &ln);
                k.matmul(&mut rec, &g.c_fc, &linear(c, f, true));
                k.matmul(&mut rec, &g.mlp_c_proj, &linear(f, c, false));
                if hook(&mut rec, l, Site::MlpOut) {
                    stopped = true;
                    break 'layers;
                }
                k.residual_add(&mut rec, &groups.residual, &residual);
            }
            if !stopped && !picked.is_empty() {
                k.layernorm(&mut rec, &groups.ln_f, &ln);
            }
        }
        let out = self.finish_logits(rec, &picked, true, captured.then_some(r)).await?;
        if !stopped {
            if let Some(kv) = &mut self.kv {
                for s in &req.seqs {
                    kv.lens[s.slot] += s.tokens.len();
                }
            }
        }
        Ok(out)
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
        self.queue.write_buffer(&self.acts.x, 0, bytemuck::cast_slice(rows));
        let mut rec = Recorder::new(&self.kernels);
        if apply_ln_f {
            self.ensure_groups();
            let ln_f = &self.groups_ref()?.ln_f.clone();
            self.kernels.layernorm(&mut rec, ln_f, &LayernormParams { rows: k as u32, c: c as u32 });
        }
        let picked: Vec<u32> = (0..k as u32).collect();
        Ok(self.finish_logits(rec, &picked, apply_ln_f, None).await?.logits)
    }
}
