//! MELBO's tape on the GPU, the twin of `tiller_core::tape`: a forward step of one prompt with
//! θ added before block `source` keeps, for blocks `source..target`, what each op's backward
//! needs (norm inputs, the GELU projection's output before the GELU, qkv after rotary,
//! SwiGLU's gate and up) by copies recorded into the same submission; the backward then runs
//! the block program in reverse through backward.wgsl's kernels over one gradient buffer per
//! program slot, in one submission, and reads back the gradient before block `source`.

use std::collections::HashMap;

use tiller_core::arch::program::{self, Op, Slot};
use tiller_core::arch::{Activation, NormKind};
use tiller_core::backend::{Capture, Injection, LogitRows, SeqStep, Site, StepRequest};
use tiller_core::melbo::Differentiable;
use tiller_core::{Result, TillerError};

use super::{mappable, storage, GpuEngine};
use crate::errors::Scopes;
use crate::kernels::{
    f16_row_words, AttentionBackwardBuffers, BackwardParams, MatmulBuffers, MatmulParams, NormBackwardBuffers, Recorder, ResidualBuffers,
    ResidualParams, RopeBuffers, RopeParams,
};
use crate::readback::map_read;

/// The tape of one prompt's forward.
pub(super) struct TapeState {
    source: usize,
    target: usize,
    /// Tokens (rows) of the prompt of the last forward.
    t: usize,
    /// Rows the buffers hold: the longest prompt so far, so prompts of different lengths share
    /// one tape instead of reallocating it at every forward.
    cap: usize,
    /// Per block source..target, per op of the block: the buffers it keeps (empty: none).
    saved: Vec<Vec<Vec<wgpu::Buffer>>>,
    /// One gradient buffer per program slot, [T, width].
    grads: HashMap<Slot, wgpu::Buffer>,
    /// [NH, T, T] scratch of the attention's backward.
    probs: wgpu::Buffer,
    dscores: wgpu::Buffer,
    /// The rotary sine table negated [T, D/2]: `rope` with it rotates back.
    sin_neg: wgpu::Buffer,
    /// Readback of the gradient before block `source`.
    staging: wgpu::Buffer,
    /// Whether a forward filled the tape (a backward needs one).
    filled: bool,
}

impl TapeState {
    /// What op `oi` of block `l` keeps, when the tape covers that block and the op keeps any.
    pub(super) fn saved(&self, l: usize, oi: usize) -> Option<&[wgpu::Buffer]> {
        if l < self.source || l >= self.target {
            return None;
        }
        self.saved.get(l - self.source).and_then(|ops| ops.get(oi)).filter(|b| !b.is_empty()).map(Vec::as_slice)
    }
}

/// The slots whose values op `op` keeps, in order.
fn kept(op: &Op) -> Vec<Slot> {
    match *op {
        Op::Norm { src, .. } => vec![src],
        Op::Linear { dst, gelu: true, .. } => vec![dst],
        Op::Attention => vec![Slot::Qkv],
        Op::SwiGlu => vec![Slot::Gate, Slot::Fc],
        _ => Vec::new(),
    }
}

impl GpuEngine {
    /// Copies what `op` keeps, before it runs (the GELU projection keeps its output later, in
    /// [`GpuEngine::tape_gelu`]).
    pub(super) fn tape_before(&self, rec: &mut Recorder, op: &Op, saved: &[wgpu::Buffer]) {
        if matches!(op, Op::Linear { .. }) {
            return;
        }
        let t = self.tape.as_ref().map_or(0, |t| t.t) as u64;
        for (slot, dst) in kept(op).into_iter().zip(saved) {
            rec.copy(self.acts.slot(slot), 0, dst, t * slot.width(&self.cfg) as u64 * 4);
        }
    }

    /// Keeps `dst` (the projection's output) and then applies the GELU to it in place.
    pub(super) fn tape_gelu(&self, rec: &mut Recorder, dst: Slot, saved: &[wgpu::Buffer], gelu_flag: u32) {
        let t = self.tape.as_ref().map_or(0, |t| t.t);
        let width = dst.width(&self.cfg);
        if let Some(b) = saved.first() {
            rec.copy(self.acts.slot(dst), 0, b, (t * width * 4) as u64);
        }
        let g = self.kernels.bind_gelu(&self.device, self.acts.slot(dst));
        let p = BackwardParams { flags: gelu_flag, ..BackwardParams::rows(t as u32, width as u32) };
        self.kernels.gelu(rec, &g, &p);
    }

    /// A tape for prompts of up to `t` tokens.
    fn make_tape(&self, t: usize, source: usize, target: usize) -> Result<TapeState> {
        use wgpu::BufferUsages as U;
        let cfg = &self.cfg;
        let block = program::block(cfg);
        let bytes = |slot: Slot| (t * slot.width(cfg) * 4) as u64;
        let saved = (source..target)
            .map(|l| {
                block
                    .iter()
                    .enumerate()
                    .map(|(oi, op)| {
                        kept(op).into_iter().map(|s| storage(&self.device, &format!("tape h.{l} op {oi}"), bytes(s), U::COPY_DST)).collect()
                    })
                    .collect()
            })
            .collect();
        let grads = Slot::ALL
            .iter()
            .map(|&s| {
                let size = if s.used(cfg) { bytes(s) } else { 16 };
                (s, storage(&self.device, "tape gradient", size, U::COPY_SRC | U::COPY_DST))
            })
            .collect();
        let scratch = (cfg.n_head * t * t * 4) as u64;
        let sin_neg = match cfg.rope() {
            Some(rope) => {
                let (_, sin) = rope.tables(t);
                let neg: Vec<f32> = sin.iter().map(|s| -s).collect();
                let b = storage(&self.device, "tape rope -sin", neg.len() as u64 * 4, U::COPY_DST);
                self.queue.write_buffer(&b, 0, bytemuck::cast_slice(&neg));
                b
            }
            None => self.dummy.clone(),
        };
        let state = TapeState {
            source,
            target,
            t,
            cap: t,
            saved,
            grads,
            probs: storage(&self.device, "tape attention probs", scratch, U::empty()),
            dscores: storage(&self.device, "tape attention dscores", scratch, U::empty()),
            sin_neg,
            staging: mappable(&self.device, "tape gradient readback", bytes(Slot::X)),
            filled: false,
        };
        self.log.check("allocating MELBO's tape")?;
        Ok(state)
    }

    /// The forward of one prompt (positions 0..T, from a fresh cache) with `theta` added to
    /// the residual stream before block `source` at every position; returns the residual
    /// stream before block `target` [T, C] and keeps the tape for [`GpuEngine::tape_backward`].
    pub async fn tape_forward(&mut self, tokens: &[u32], theta: &[f32], source: usize, target: usize) -> Result<Vec<f32>> {
        let cfg = self.cfg;
        let t = tokens.len();
        if !(source < target && target < cfg.n_layer) || t == 0 || theta.len() != cfg.n_embd {
            return Err(TillerError::input(format!(
                "a tape needs source < target < {}, tokens and θ of {} channels; got {source}..{target}, {t} tokens, θ of {}",
                cfg.n_layer,
                cfg.n_embd,
                theta.len()
            )));
        }
        let same = self.tape.as_ref().filter(|s| s.source == source && s.target == target).map(|s| s.cap);
        if same.is_none_or(|cap| cap < t) {
            let cap = same.unwrap_or(0).max(t);
            self.tape = None;
            let state = self.make_tape(cap, source, target)?;
            self.tape = Some(state);
        }
        if let Some(s) = &mut self.tape {
            s.t = t;
            s.filled = false;
        }
        use tiller_core::Backend;
        self.reset(1, t)?;
        let req = StepRequest {
            seqs: vec![SeqStep { slot: 0, tokens: tokens.to_vec() }],
            injections: vec![Injection::add(source, Site::ResidPre, theta.to_vec(), vec![0; t])],
            captures: vec![Capture::all(target, Site::ResidPre)],
            logits: LogitRows::None,
        };
        let out = self.step(&req).await;
        let mut out = match out {
            Ok(o) => o,
            Err(e) => {
                self.tape = None;
                return Err(e);
            }
        };
        if let Some(s) = &mut self.tape {
            s.filled = true;
        }
        Ok(out.captured.pop().unwrap_or_default())
    }

    /// Transposes the projection weights of blocks `source..target` once (kept until the
    /// blocks change): the backward's `dx += dy · Wᵀ` is then the forward's matmul kernel.
    async fn ensure_transposed(&mut self, source: usize, target: usize) -> Result<()> {
        if self.tape_weights.as_ref().is_some_and(|(layers, _)| *layers == (source, target)) {
            return Ok(());
        }
        self.tape_weights = None;
        let cfg = self.cfg;
        let mut out = HashMap::new();
        let mut rec = Recorder::new(&self.kernels);
        for l in source..target {
            for op in program::block(&cfg) {
                if let Op::Linear { src, dst, param, .. } = op {
                    let name = format!("h.{l}.{}.weight", param.name());
                    let (k, n) = (src.width(&cfg), dst.width(&cfg));
                    let wt =
                        storage(&self.device, "tape transposed weight", (n * f16_row_words(k) * 4) as u64, wgpu::BufferUsages::empty());
                    let group = self.kernels.bind_transpose_f16(&self.device, &wt, self.w.get(&name)?);
                    let p = BackwardParams { width: k as u32, n: n as u32, ..Default::default() };
                    self.kernels.transpose_f16(&mut rec, &group, &p);
                    out.insert(name, wt);
                }
            }
        }
        let scopes = Scopes::push(&self.device);
        rec.submit(&self.device, &self.queue, &self.kernels, &mut self.arena);
        scopes.pop("transposing the weights for MELBO's backward pass").await?;
        self.log.check("transposing the weights for MELBO's backward pass")?;
        self.tape_weights = Some(((source, target), out));
        Ok(())
    }

    /// The gradient with respect to the residual stream before block `source` (after θ)
    /// [T, C], from `dh` [T, C], the gradient with respect to the stream before block
    /// `target`, through the tape of the last [`GpuEngine::tape_forward`].
    pub async fn tape_backward(&mut self, dh: &[f32]) -> Result<Vec<f32>> {
        let cfg = self.cfg;
        let c = cfg.n_embd;
        if let Some((source, target)) = self.tape.as_ref().map(|s| (s.source, s.target)) {
            self.ensure_transposed(source, target).await?;
        }
        let transposed = &self.tape_weights.as_ref().ok_or_else(|| TillerError::input("a tape backward needs a tape forward first"))?.1;
        let state =
            self.tape.as_ref().filter(|s| s.filled).ok_or_else(|| TillerError::input("a tape backward needs a tape forward first"))?;
        let t = state.t;
        if dh.len() != t * c {
            return Err(TillerError::input(format!("the gradient has {} values for a tape of {t} rows of {c}", dh.len())));
        }
        let (d, k) = (&self.device, &self.kernels);
        for (slot, b) in &state.grads {
            if slot.used(&cfg) {
                let data = if *slot == Slot::X { dh.to_vec() } else { vec![0.0f32; t * slot.width(&cfg)] };
                self.queue.write_buffer(b, 0, bytemuck::cast_slice(&data));
            }
        }
        let g = |s: Slot| &state.grads[&s];
        let w = |l: usize, name: &str| self.w.get(&format!("h.{l}.{name}.weight"));
        let rows = t as u32;
        let zero = |rec: &mut Recorder, s: Slot| {
            k.fill_zero(rec, &k.bind_fill_zero(d, g(s)), &BackwardParams::rows(rows, s.width(&cfg) as u32));
        };
        let gelu_flag = match cfg.act {
            Activation::GeluErf => MatmulParams::GELU_ERF,
            _ => MatmulParams::GELU,
        };
        let kv = self.kv.as_ref().ok_or_else(|| TillerError::Gpu("internal: the tape's cache is gone".into()))?;
        let block = program::block(&cfg);
        let mut rec = Recorder::new(k);
        for l in (state.source..state.target).rev() {
            let saved = &state.saved[l - state.source];
            for (oi, op) in block.iter().enumerate().rev() {
                let kept = &saved[oi];
                match *op {
                    Op::Add { dst, src } => {
                        let group = k.bind_residual_add(d, &ResidualBuffers { x: g(src), y: g(dst) });
                        k.residual_add(&mut rec, &group, &ResidualParams::new(rows, c as u32));
                    }
                    Op::Linear { src, dst, param, gelu } => {
                        let n = dst.width(&cfg) as u32;
                        if gelu {
                            let group = k.bind_gelu_backward(d, g(dst), &kept[0]);
                            k.gelu_backward(&mut rec, &group, &BackwardParams { flags: gelu_flag, ..BackwardParams::rows(rows, n) });
                        }
                        let name = format!("h.{l}.{}.weight", param.name());
                        let wt = transposed.get(&name).ok_or_else(|| TillerError::MissingTensor(format!("{name} (transposed)")))?;
                        let group = k.bind_matmul(d, &MatmulBuffers { out: g(src), inp: g(dst), weight: wt, bias: &self.dummy });
                        let p = MatmulParams { rows, k: n, n: src.width(&cfg) as u32, flags: MatmulParams::ACCUMULATE };
                        k.matmul(&mut rec, &group, &p);
                        zero(&mut rec, dst);
                    }
                    Op::SwiGlu => {
                        let group = k.bind_swiglu_backward(d, g(Slot::Fc), g(Slot::Gate), &kept[0], &kept[1]);
                        k.swiglu_backward(&mut rec, &group, &BackwardParams::rows(rows, cfg.n_inner as u32));
                    }
                    Op::Attention => {
                        let groups = k.bind_attention_backward(
                            d,
                            &AttentionBackwardBuffers {
                                p: &state.probs,
                                ds: &state.dscores,
                                qkv: &kept[0],
                                dz: g(Slot::Z),
                                dqkv: g(Slot::Qkv),
                            },
                        );
                        let p = BackwardParams {
                            rows,
                            n_head: cfg.n_head as u32,
                            n_kv_head: cfg.n_kv_head as u32,
                            head_dim: cfg.head_dim as u32,
                            ..Default::default()
                        };
                        k.attention_backward(&mut rec, &groups, &p);
                        zero(&mut rec, Slot::Z);
                    }
                    Op::Rope => {
                        if let Some(rope) = cfg.rope() {
                            let group = k
                                .bind_rope(d, &RopeBuffers { qkv: g(Slot::Qkv), cos: &kv.cos, sin: &state.sin_neg, rows: &self.acts.meta });
                            let p = RopeParams {
                                rows,
                                heads: (cfg.n_head + cfg.n_kv_head) as u32,
                                head_dim: cfg.head_dim as u32,
                                qkv_width: cfg.qkv_width() as u32,
                                half: (rope.rotary_dim / 2) as u32,
                            };
                            k.rope(&mut rec, &group, &p);
                        }
                    }
                    Op::Norm { src, dst, param } => {
                        let weight = w(l, param.name())?;
                        let group = k.bind_norm_backward(d, &NormBackwardBuffers { dx: g(src), dy: g(dst), x: &kept[0], weight });
                        let rms = if cfg.norm.kind == NormKind::RmsNorm { BackwardParams::RMS } else { 0 };
                        let p = BackwardParams { flags: rms, eps: cfg.norm.eps, ..BackwardParams::rows(rows, c as u32) };
                        k.norm_backward(&mut rec, &group, &p);
                        zero(&mut rec, dst);
                    }
                    // the attention's backward already wrote the keys' and values' gradient
                    Op::KvWrite | Op::Hook(_) => {}
                }
            }
        }
        let bytes = (t * c * 4) as u64;
        rec.copy(g(Slot::X), 0, &state.staging, bytes);
        let staging = state.staging.clone();
        let scopes = Scopes::push(&self.device);
        rec.submit(&self.device, &self.queue, &self.kernels, &mut self.arena);
        scopes.pop("running MELBO's backward pass").await?;
        self.log.check("running MELBO's backward pass")?;
        Ok(bytemuck::pod_collect_to_vec(&map_read(&self.device, &staging, bytes).await?))
    }
}

/// MELBO's [`Differentiable`] on the GPU engine: each prompt's forward and backward through the
/// engine's tape. (Its unsteered activations come from [`tiller_core::melbo::prepare`] on the
/// same engine, so both sides of f's difference see the same f16 weights.)
pub struct GpuTape<'e> {
    engine: &'e mut GpuEngine,
    prompts: Vec<Vec<u32>>,
    source: usize,
    target: usize,
}

impl<'e> GpuTape<'e> {
    pub fn new(engine: &'e mut GpuEngine, prompts: Vec<Vec<u32>>, source: usize, target: usize) -> Self {
        Self { engine, prompts, source, target }
    }
}

impl Differentiable for GpuTape<'_> {
    fn width(&self) -> usize {
        self.engine.cfg.n_embd
    }

    async fn forward(&mut self, prompt: usize, theta: &[f32]) -> Result<Vec<f32>> {
        let tokens = self.prompts.get(prompt).ok_or_else(|| TillerError::input(format!("there is no prompt {prompt}")))?.clone();
        self.engine.tape_forward(&tokens, theta, self.source, self.target).await
    }

    async fn backward(&mut self, dh: &[f32]) -> Result<Vec<f32>> {
        self.engine.tape_backward(dh).await
    }
}
