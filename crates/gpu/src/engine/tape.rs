//! MELBO's tape on the GPU, the twin of `tiller_core::tape`: one forward step of all the
//! prompts (one cache slot each, their rows one batch) with θ added before block `source`
//! keeps, for blocks `source..target`, what each op's backward needs (norm inputs, the GELU
//! projection's output before the GELU, qkv after rotary, SwiGLU's gate and up) by copies
//! recorded into the same submission; the backward then runs the block program in reverse
//! through backward.wgsl's kernels over one gradient buffer per program slot, in one
//! submission (the attention's backward once per prompt, at its rows), and reads back the
//! gradient before block `source`.
//!
//! The residual stream before block `source` does not depend on θ: the first forward of a
//! batch of prompts keeps it (`prefix`), and the next forwards of the same prompts start from
//! it at block `source`, skipping the embedding and blocks `0..source`.

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

/// The tape of one batch of prompts' forward.
pub(super) struct TapeState {
    source: usize,
    target: usize,
    /// Rows of the last forward: all its prompts' tokens.
    t: usize,
    /// Each prompt's tokens of the last forward, in row order.
    lens: Vec<usize>,
    /// Rows the buffers hold: the most so far, so batches of different lengths share one tape
    /// instead of reallocating it at every forward.
    cap: usize,
    /// The longest prompt the attention's scratch holds.
    cap_len: usize,
    /// The residual stream before block `source` of `prefix_of`'s rows, without θ.
    prefix: wgpu::Buffer,
    /// The prompts whose residual `prefix` holds (None: not filled).
    prefix_of: Option<Vec<Vec<u32>>>,
    /// Whether the forward being recorded starts from `prefix` (else it fills it).
    resume: bool,
    /// Whether the step being recorded is the tape's forward (other steps of the engine, such
    /// as completions between two vectors, neither keep nor skip anything).
    recording: bool,
    /// Per block source..target, per op of the block: the buffers it keeps (empty: none).
    saved: Vec<Vec<Vec<wgpu::Buffer>>>,
    /// One gradient buffer per program slot, [T, width].
    grads: HashMap<Slot, wgpu::Buffer>,
    /// [NH, T, T] scratch of the attention's backward (one prompt at a time).
    probs: wgpu::Buffer,
    dscores: wgpu::Buffer,
    /// The rotary sine table negated [positions, D/2]: `rope` with it rotates back.
    sin_neg: wgpu::Buffer,
    /// Readback of the gradient before block `source`.
    staging: wgpu::Buffer,
    /// Whether a forward filled the tape (a backward needs one).
    filled: bool,
}

impl TapeState {
    /// What op `oi` of block `l` keeps, when the tape covers that block and the op keeps any.
    pub(super) fn saved(&self, l: usize, oi: usize) -> Option<&[wgpu::Buffer]> {
        if !self.recording || l < self.source || l >= self.target {
            return None;
        }
        self.saved.get(l - self.source).and_then(|ops| ops.get(oi)).filter(|b| !b.is_empty()).map(Vec::as_slice)
    }

    /// Where the forward being recorded meets the prefix: block `source`, the buffer, its bytes,
    /// and whether the forward starts there from the buffer (true) or writes the buffer there.
    pub(super) fn prefix(&self, c: usize) -> Option<(usize, &wgpu::Buffer, u64, bool)> {
        self.recording.then_some((self.source, &self.prefix, (self.t * c * 4) as u64, self.resume))
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

    /// A tape for batches of up to `t` rows and prompts of up to `len` tokens.
    fn make_tape(&self, t: usize, len: usize, source: usize, target: usize) -> Result<TapeState> {
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
        let scratch = (cfg.n_head * len * len * 4) as u64;
        let sin_neg = match cfg.rope() {
            Some(rope) => {
                let (_, sin) = rope.tables(len);
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
            lens: Vec::new(),
            cap: t,
            cap_len: len,
            prefix: storage(&self.device, "tape prefix", bytes(Slot::X), U::COPY_SRC | U::COPY_DST),
            prefix_of: None,
            resume: false,
            recording: false,
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

    /// The forward of a batch of prompts (each in its own cache slot, positions 0..T_i, from
    /// a fresh cache) with `theta` added to the residual stream before block `source` at every
    /// position; returns each prompt's residual stream before block `target` [T_i, C] and keeps
    /// the tape for [`GpuEngine::tape_backward`]. The same prompts again start at block
    /// `source` from the residual the first forward kept.
    pub async fn tape_forward(&mut self, prompts: &[Vec<u32>], theta: &[f32], source: usize, target: usize) -> Result<Vec<Vec<f32>>> {
        let cfg = self.cfg;
        let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
        let (t, len) = (lens.iter().sum::<usize>(), lens.iter().copied().max().unwrap_or(0));
        if !(source < target && target < cfg.n_layer) || lens.contains(&0) || t == 0 || theta.len() != cfg.n_embd {
            return Err(TillerError::input(format!(
                "a tape needs source < target < {}, prompts of at least one token and θ of {} channels; got {source}..{target}, \
                 prompts of {lens:?} tokens, θ of {}",
                cfg.n_layer,
                cfg.n_embd,
                theta.len()
            )));
        }
        let same = self.tape.as_ref().filter(|s| s.source == source && s.target == target).map(|s| (s.cap, s.cap_len));
        if same.is_none_or(|(cap, cap_len)| cap < t || cap_len < len) {
            let (cap, cap_len) = same.unwrap_or((0, 0));
            self.tape = None;
            let state = self.make_tape(cap.max(t), cap_len.max(len), source, target)?;
            self.tape = Some(state);
        }
        if let Some(s) = &mut self.tape {
            s.t = t;
            s.resume = s.prefix_of.as_deref() == Some(prompts);
            if !s.resume {
                s.prefix_of = None;
            }
            s.lens = lens.clone();
            s.filled = false;
            s.recording = true;
        }
        use tiller_core::Backend;
        self.reset(prompts.len(), len)?;
        let req = StepRequest {
            seqs: prompts.iter().enumerate().map(|(slot, p)| SeqStep { slot, tokens: p.clone() }).collect(),
            injections: vec![Injection::add(source, Site::ResidPre, theta.to_vec(), vec![0; t])],
            captures: vec![Capture::all(target, Site::ResidPre)],
            logits: LogitRows::None,
        };
        let out = self.step(&req).await;
        if let Some(s) = &mut self.tape {
            s.recording = false;
        }
        let mut out = match out {
            Ok(o) => o,
            Err(e) => {
                self.tape = None;
                return Err(e);
            }
        };
        if let Some(s) = &mut self.tape {
            s.filled = true;
            s.prefix_of = Some(prompts.to_vec());
        }
        let h = out.captured.pop().unwrap_or_default();
        let c = cfg.n_embd;
        let mut rest = h.as_slice();
        Ok(lens
            .iter()
            .map(|&n| {
                let (a, b) = rest.split_at((n * c).min(rest.len()));
                rest = b;
                a.to_vec()
            })
            .collect())
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

    /// The gradient with respect to the residual stream before block `source` (after θ) of
    /// every row of the last [`GpuEngine::tape_forward`] [ΣT_i, C], from `dh`, each prompt's
    /// gradient with respect to the stream before block `target` [T_i, C].
    pub async fn tape_backward(&mut self, dh: &[Vec<f32>]) -> Result<Vec<f32>> {
        let cfg = self.cfg;
        let c = cfg.n_embd;
        if let Some((source, target)) = self.tape.as_ref().map(|s| (s.source, s.target)) {
            self.ensure_transposed(source, target).await?;
        }
        let transposed = &self.tape_weights.as_ref().ok_or_else(|| TillerError::input("a tape backward needs a tape forward first"))?.1;
        let state =
            self.tape.as_ref().filter(|s| s.filled).ok_or_else(|| TillerError::input("a tape backward needs a tape forward first"))?;
        let t = state.t;
        let given: Vec<usize> = dh.iter().map(Vec::len).collect();
        let want: Vec<usize> = state.lens.iter().map(|n| n * c).collect();
        if given != want {
            return Err(TillerError::input(format!("the gradients have {given:?} values for a tape of prompts of {want:?}")));
        }
        let (d, k) = (&self.device, &self.kernels);
        for (slot, b) in &state.grads {
            if slot.used(&cfg) {
                let data = if *slot == Slot::X { dh.concat() } else { vec![0.0f32; t * slot.width(&cfg)] };
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
                        // each prompt attends within its own rows: one pass per prompt
                        let mut row0 = 0u32;
                        for &n in &state.lens {
                            let p = BackwardParams {
                                rows: n as u32,
                                row0,
                                n_head: cfg.n_head as u32,
                                n_kv_head: cfg.n_kv_head as u32,
                                head_dim: cfg.head_dim as u32,
                                ..Default::default()
                            };
                            k.attention_backward(&mut rec, &groups, &p);
                            row0 += n as u32;
                        }
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

/// MELBO's [`Differentiable`] on the GPU engine: all prompts' forward and backward through
/// the engine's tape, as one batch. (Its unsteered activations come from
/// [`tiller_core::melbo::prepare`] on the same engine, so both sides of f's difference see the
/// same f16 weights.)
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

    async fn forward(&mut self, theta: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.engine.tape_forward(&self.prompts, theta, self.source, self.target).await
    }

    async fn backward(&mut self, dh: &[Vec<f32>]) -> Result<Vec<f32>> {
        self.engine.tape_backward(dh).await
    }
}
