//! The WGSL kernels: one `include_str!` per shader file, one launcher per kernel, a `#[repr(C)]`
//! params struct per shader that mirrors its WGSL `Params` field for field.
//!
//! Every kernel binds its params at group 0 (one uniform arena, addressed by dynamic offset, so
//! a step writes all its params with one `write_buffer`) and its storage buffers at group 1, in
//! the argument order of its `tiller_core::ops` twin. Launchers do not touch the GPU: they
//! append a dispatch to a [`Recorder`], which encodes the step as one compute pass and submits
//! it once.

use bytemuck::{Pod, Zeroable};
use tiller_core::{Result, TillerError};

pub const EMBED_WGSL: &str = include_str!("../../../shaders/embed.wgsl");
pub const LAYERNORM_WGSL: &str = include_str!("../../../shaders/layernorm.wgsl");
pub const MATMUL_WGSL: &str = include_str!("../../../shaders/matmul.wgsl");
pub const ATTENTION_WGSL: &str = include_str!("../../../shaders/attention.wgsl");
pub const RESIDUAL_WGSL: &str = include_str!("../../../shaders/residual.wgsl");
pub const ROPE_WGSL: &str = include_str!("../../../shaders/rope.wgsl");
pub const HOOKS_WGSL: &str = include_str!("../../../shaders/hooks.wgsl");
pub const BACKWARD_WGSL: &str = include_str!("../../../shaders/backward.wgsl");

/// Every shader file by name, for validation.
pub const SHADERS: [(&str, &str); 8] = [
    ("embed.wgsl", EMBED_WGSL),
    ("layernorm.wgsl", LAYERNORM_WGSL),
    ("matmul.wgsl", MATMUL_WGSL),
    ("attention.wgsl", ATTENTION_WGSL),
    ("residual.wgsl", RESIDUAL_WGSL),
    ("rope.wgsl", ROPE_WGSL),
    ("hooks.wgsl", HOOKS_WGSL),
    ("backward.wgsl", BACKWARD_WGSL),
];

/// Invocations per workgroup along x in every kernel (the shaders' `WG`).
const WG: u32 = 64;
/// Bytes reserved per dispatch in the params arena; every params struct fits.
const PARAMS_SLOT: u64 = 256;
/// Register tiles the matmul and logits kernels are specialised for, (`TILE_ROWS`,
/// `TILE_WORDS`): one-word tiles keep a decode step's few rows spread over N / 8 invocations;
/// prompt passes take 16 rows × 16 columns per invocation (see matmul.wgsl).
const TILES: [(u32, u32); 5] = [(1, 1), (2, 1), (4, 1), (8, 1), (16, 2)];
/// `K_STEP` per tile, for (matmul, logits). Measured on lavapipe and SwiftShader (BENCHMARKS.md):
/// four channels a step sped up decode-shaped matmuls on both (10-25%); the LM head was
/// 20% slower with four on lavapipe and 20% faster on SwiftShader, two is even on one and
/// better on the other; the 16×2 prompt tile lost 40% on SwiftShader with 2 or 4 (gaining 10% on lavapipe), so it steps one channel at a time.
const K_STEPS: [(u32, u32); 5] = [(4, 2), (4, 2), (4, 2), (4, 2), (1, 1)];
/// Workgroup sizes (`WG` in matmul.wgsl): small groups for the Conv1D weights, whose N (768 for
/// c_proj) would otherwise make two or three workgroups for a 2-core adapter to share unevenly
/// (16 was as fast or faster than 32 and 64 at every GPT-2 shape on lavapipe); 64 for the LM
/// head, whose 50257 columns make plenty, and where SwiftShader preferred 64.
const MATMUL_WG: u32 = 16;
const LOGITS_WG: u32 = 64;
/// The attention kernel's largest head size: 8 channels per invocation of the 16-invocation
/// pipeline (attention.wgsl).
pub const MAX_HEAD_DIM: usize = 128;
/// Head sizes up to this take the 8-invocation attention pipeline; larger ones the 16.
const NARROW_HEAD_DIM: u32 = 64;

/// Mirrors `Params` in embed.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct EmbedParams {
    pub rows: u32,
    pub c: u32,
    pub vocab_start: u32,
    pub vocab_len: u32,
    /// 1: add the learned position table (GPT-2's wpe); 0: rotary models.
    pub learned: u32,
}

/// Mirrors `Params` in layernorm.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct LayernormParams {
    pub rows: u32,
    pub c: u32,
    pub eps: f32,
    /// 1: RMSNorm.
    pub rms: u32,
}

/// Mirrors `Params` in matmul.wgsl for its `matmul` entry point (`out_stride` unused, zero).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct MatmulParams {
    pub rows: u32,
    pub k: u32,
    pub n: u32,
    /// [`MatmulParams::BIAS`] | [`MatmulParams::GELU`]
    pub flags: u32,
}

impl MatmulParams {
    pub const BIAS: u32 = 1;
    pub const GELU: u32 = 2;
    pub const GELU_ERF: u32 = 4;
    /// `out +=` the product instead of `out =` (MELBO's backward over a transposed weight).
    pub const ACCUMULATE: u32 = 8;
}

/// Mirrors `Params` in attention.wgsl (both `kv_write` and `attention`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct AttentionParams {
    pub rows: u32,
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    /// Cache length per slot.
    pub tm: u32,
}

/// Mirrors `Params` in rope.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RopeParams {
    pub rows: u32,
    /// NH + NKV
    pub heads: u32,
    pub head_dim: u32,
    pub qkv_width: u32,
    /// D/2
    pub half: u32,
}

/// Buffers of `rope(qkv, cos, sin, rows)`.
pub struct RopeBuffers<'a> {
    pub qkv: &'a wgpu::Buffer,
    pub cos: &'a wgpu::Buffer,
    pub sin: &'a wgpu::Buffer,
    pub rows: &'a wgpu::Buffer,
}

/// Mirrors `Params` in residual.wgsl (`residual_add` and `swiglu`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ResidualParams {
    pub rows: u32,
    pub c: u32,
    pub _pad: [u32; 2],
}

impl ResidualParams {
    pub fn new(rows: u32, c: u32) -> Self {
        Self { rows, c, _pad: [0; 2] }
    }
}

/// Mirrors `HookParams` in hooks.wgsl (`intervene`, `gather` and `project`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct HookParams {
    /// Rows of the step (intervene) or of the capture (gather).
    pub rows: u32,
    /// The slot's row width.
    pub stride: u32,
    pub col0: u32,
    pub width: u32,
    /// intervene: the table's offset in the arena; gather: the row list's.
    pub table_offset: u32,
    /// intervene: the row map's offset in the arena; gather: the capture's in the output.
    pub map_offset: u32,
    /// `intervene`: 0 add, 1 set, 2 scale; `project`: the vector's offset in the arena.
    pub mode: u32,
    pub _pad: u32,
}

impl HookParams {
    pub fn mode(m: tiller_core::Mode) -> u32 {
        match m {
            tiller_core::Mode::Add => 0,
            tiller_core::Mode::Set => 1,
            tiller_core::Mode::Scale => 2,
        }
    }
}

/// Mirrors `CopyParams` in hooks.wgsl: `len` cache rows of `kv` floats from element `src`
/// to element `dst` of one cache buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct CopyParams {
    pub kv: u32,
    pub len: u32,
    pub src: u32,
    pub dst: u32,
}

/// Mirrors `Params` in matmul.wgsl for its `logits` entry point: (rows, k, n,
/// flags_or_vocab_start, out_stride) = (rows, c, vocab_len, vocab_start, v).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct LogitsParams {
    pub rows: u32,
    pub c: u32,
    pub vocab_len: u32,
    pub vocab_start: u32,
    /// Row stride of the output: the full vocabulary.
    pub v: u32,
}

/// Mirrors `Params` in backward.wgsl (every entry point; each reads the fields it names).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
pub struct BackwardParams {
    /// Rows (T).
    pub rows: u32,
    /// A row's width; K for `transpose_f16` (the source is [K, N]).
    pub width: u32,
    /// N for `transpose_f16`.
    pub n: u32,
    /// [`BackwardParams::RMS`] for `norm_backward`; [`MatmulParams::GELU`] or
    /// [`MatmulParams::GELU_ERF`] for `gelu` and `gelu_backward`.
    pub flags: u32,
    pub eps: f32,
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    /// The attention's backward: the first row of the prompt it runs (a batch runs one pass
    /// per prompt, `rows` its tokens).
    pub row0: u32,
    pub _pad: [u32; 3],
}

impl BackwardParams {
    pub const RMS: u32 = 1;

    /// `rows` rows of `width` (elementwise kernels).
    pub fn rows(rows: u32, width: u32) -> Self {
        Self { rows, width, ..Default::default() }
    }
}

/// Buffers of `norm_backward(dx, dy, x, weight)`.
pub struct NormBackwardBuffers<'a> {
    pub dx: &'a wgpu::Buffer,
    pub dy: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
}

/// Buffers of `attention_probs_backward(p, ds, qkv, dz)` and `attention_qkv_backward(dqkv, p,
/// ds, qkv, dz)`.
pub struct AttentionBackwardBuffers<'a> {
    /// [NH, T, T] scratch: the probabilities.
    pub p: &'a wgpu::Buffer,
    /// [NH, T, T] scratch: the scores' gradient.
    pub ds: &'a wgpu::Buffer,
    pub qkv: &'a wgpu::Buffer,
    pub dz: &'a wgpu::Buffer,
    pub dqkv: &'a wgpu::Buffer,
}

/// Buffers of `embed(out, tokens, positions, wte, wpe)`.
pub struct EmbedBuffers<'a> {
    pub out: &'a wgpu::Buffer,
    pub tokens: &'a wgpu::Buffer,
    pub positions: &'a wgpu::Buffer,
    /// One vocab chunk of wte, see [`pack_wte_chunk`].
    pub wte: &'a wgpu::Buffer,
    /// [P, C] f16, unpadded.
    pub wpe: &'a wgpu::Buffer,
}

/// Buffers of `layernorm(out, inp, weight, bias)`.
pub struct LayernormBuffers<'a> {
    pub out: &'a wgpu::Buffer,
    pub inp: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
}

/// u32 words per row of a weight matrix as the kernels read it (matmul weights [K, N] and wte
/// [V, C]): the row's f16 rounded up to whole 16-byte words of eight.
pub fn f16_row_words(n: usize) -> usize {
    n.div_ceil(8) * 4
}

/// A `[K, N]` matrix in the kernels' layout: f16, rows zero-padded to [`f16_row_words`].
/// For N a multiple of 8 (every GPT-2 width) this is the file's own layout.
pub fn pack_f16_rows(w: &[f32], k: usize, n: usize) -> Vec<u8> {
    let row_bytes = f16_row_words(n) * 4;
    let mut out = vec![0u8; k * row_bytes];
    for (src, dst) in w.chunks_exact(n).zip(out.chunks_exact_mut(row_bytes)) {
        for (x, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
            d.copy_from_slice(&half::f16::from_f32(*x).to_le_bytes());
        }
    }
    out
}

/// Vocabulary rows `[len, C]` of wte in the kernels' layout: transposed to `[C, len]` and packed
/// by [`pack_f16_rows`], so the tied LM head is the same product as a Conv1D weight `[in, out]`
/// (matmul.wgsl) and a decode step's logits read wte lane-consecutively.
pub fn pack_wte_chunk(rows: &[f32], len: usize, c: usize) -> Vec<u8> {
    let mut t = vec![0.0; len * c];
    for (v, row) in rows.chunks_exact(c).enumerate() {
        for (ch, x) in row.iter().enumerate() {
            t[ch * len + v] = *x;
        }
    }
    pack_f16_rows(&t, c, len)
}

/// Buffers of `matmul(out, inp, weight, bias)`; a bias buffer is bound even when unused.
pub struct MatmulBuffers<'a> {
    pub out: &'a wgpu::Buffer,
    pub inp: &'a wgpu::Buffer,
    /// [K, N] f16, see [`pack_f16_rows`].
    pub weight: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
}

/// Buffers of `kv_write(k_cache, v_cache, qkv, rows)`.
pub struct KvWriteBuffers<'a> {
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    pub qkv: &'a wgpu::Buffer,
    /// [R] of (slot, pos).
    pub rows: &'a wgpu::Buffer,
}

/// Buffers of `attention(out, qkv, k_cache, v_cache, rows)`.
pub struct AttentionBuffers<'a> {
    pub out: &'a wgpu::Buffer,
    pub qkv: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    pub rows: &'a wgpu::Buffer,
}

/// Buffers of `residual_add(x, y)`.
pub struct ResidualBuffers<'a> {
    pub x: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
}

/// Buffers of `intervene(x, table, row_map)`: table and map usually live in the same arena.
pub struct InterveneBuffers<'a> {
    pub x: &'a wgpu::Buffer,
    pub table: &'a wgpu::Buffer,
    pub row_map: &'a wgpu::Buffer,
}

/// Buffers of `gather(captured, src, rows)`.
pub struct GatherBuffers<'a> {
    pub captured: &'a wgpu::Buffer,
    pub src: &'a wgpu::Buffer,
    /// The arena holding the row lists.
    pub rows: &'a wgpu::Buffer,
}

/// Buffers of `logits(out, inp, row_index, wte)`.
pub struct LogitsBuffers<'a> {
    pub out: &'a wgpu::Buffer,
    pub inp: &'a wgpu::Buffer,
    pub row_index: &'a wgpu::Buffer,
    /// One vocab chunk of wte, see [`pack_wte_chunk`].
    pub wte: &'a wgpu::Buffer,
}

/// A pipeline and the layout of its storage bind group.
struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// The entry point, for [`profile`].
    name: &'static str,
}

/// A pipeline of `entry` in `m` whose storage bindings are `read_only` per binding, in order.
fn build_kernel(
    device: &wgpu::Device,
    params_layout: &wgpu::BindGroupLayout,
    m: &wgpu::ShaderModule,
    entry: &'static str,
    storage: &[bool],
    constants: &[(&str, f64)],
) -> Kernel {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = storage
        .iter()
        .enumerate()
        .map(|(i, &read_only)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(entry), entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(params_layout), Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&pipeline_layout),
        module: m,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
        cache: None,
    });
    Kernel { pipeline, layout, name: entry }
}

/// MELBO's backward pipelines (backward.wgsl), built the first time one is used: a model load
/// does not pay for compiling them (on SwiftShader that is seconds per pipeline).
struct BackwardKernels {
    norm_backward: Kernel,
    transpose_f16: Kernel,
    gelu: Kernel,
    gelu_backward: Kernel,
    fill_zero: Kernel,
    swiglu_backward: Kernel,
    attention_probs_backward: Kernel,
    attention_qkv_backward: Kernel,
}

impl BackwardKernels {
    fn new(device: &wgpu::Device, params_layout: &wgpu::BindGroupLayout) -> Self {
        let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("backward.wgsl"),
            source: wgpu::ShaderSource::Wgsl(BACKWARD_WGSL.into()),
        });
        let k = |entry: &'static str, storage: &[bool]| build_kernel(device, params_layout, &m, entry, storage, &[]);
        let (w, r) = (false, true);
        Self {
            norm_backward: k("norm_backward", &[w, r, r, r]),
            transpose_f16: k("transpose_f16", &[w, r]),
            gelu: k("gelu", &[w]),
            gelu_backward: k("gelu_backward", &[w, r]),
            fill_zero: k("fill_zero", &[w]),
            swiglu_backward: k("swiglu_backward", &[w, w, r, r]),
            attention_probs_backward: k("attention_probs_backward", &[w, w, r, r]),
            attention_qkv_backward: k("attention_qkv_backward", &[w, r, r, r, r]),
        }
    }
}

/// Every pipeline, built once per device.
pub struct Kernels {
    params_layout: wgpu::BindGroupLayout,
    embed: Kernel,
    layernorm: Kernel,
    /// By index into [`TILES`].
    matmul: Vec<Kernel>,
    logits: Vec<Kernel>,
    kv_write: Kernel,
    attention: Kernel,
    /// 16 invocations, for head sizes past [`NARROW_HEAD_DIM`].
    attention_wide: Kernel,
    residual_add: Kernel,
    swiglu: Kernel,
    intervene: Kernel,
    gather: Kernel,
    /// `gather`'s layout (and bind groups), one row's `(x · v, ‖x‖)` per invocation.
    project: Kernel,
    copy_slot: Kernel,
    rope: Kernel,
    /// MELBO's, built on first use.
    backward: std::sync::OnceLock<BackwardKernels>,
    device: wgpu::Device,
    params_align: u64,
}

/// The shortest tile that holds every row (a decode row gets a one-row tile), else the tallest.
fn tile_index(rows: u32) -> usize {
    TILES.iter().position(|&(t, _)| t >= rows).unwrap_or(TILES.len() - 1)
}

/// Workgroups of a matmul-shaped dispatch: `words` column words of `rows` rows.
fn tile_groups(t: usize, wg: u32, words: u32, rows: u32) -> [u32; 3] {
    let (tile_rows, tile_words) = TILES[t];
    [words.div_ceil(wg * tile_words), rows.div_ceil(tile_rows), 1]
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Result<Self> {
        let params_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("tiller params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: true, min_binding_size: None },
                count: None,
            }],
        });
        let module = |label: &str, src: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(src.into()) })
        };
        let embed_m = module("embed.wgsl", EMBED_WGSL);
        let layernorm_m = module("layernorm.wgsl", LAYERNORM_WGSL);
        let matmul_m = module("matmul.wgsl", MATMUL_WGSL);
        let attention_m = module("attention.wgsl", ATTENTION_WGSL);
        let residual_m = module("residual.wgsl", RESIDUAL_WGSL);
        let rope_m = module("rope.wgsl", ROPE_WGSL);
        let hooks_m = module("hooks.wgsl", HOOKS_WGSL);

        // `read_only` per storage binding, in binding order.
        let kernel = |m: &wgpu::ShaderModule, entry: &'static str, storage: &[bool], constants: &[(&str, f64)]| {
            build_kernel(device, &params_layout, m, entry, storage, constants)
        };
        let (w, r) = (false, true);
        let tiled = |m: &wgpu::ShaderModule, entry: &'static str, wg: u32| -> Vec<Kernel> {
            TILES
                .iter()
                .zip(K_STEPS)
                .map(|(&(rows, words), (matmul_step, logits_step))| {
                    let k_step = if entry == "logits" { logits_step } else { matmul_step };
                    let constants =
                        [("TILE_ROWS", rows as f64), ("TILE_WORDS", words as f64), ("WG", wg as f64), ("K_STEP", k_step as f64)];
                    kernel(m, entry, &[w, r, r, r], &constants)
                })
                .collect()
        };
        let params_align = (device.limits().min_uniform_buffer_offset_alignment as u64).max(PARAMS_SLOT);
        Ok(Self {
            embed: kernel(&embed_m, "embed", &[w, r, r, r, r], &[]),
            layernorm: kernel(&layernorm_m, "layernorm", &[w, r, r, r], &[]),
            matmul: tiled(&matmul_m, "matmul", MATMUL_WG),
            logits: tiled(&matmul_m, "logits", LOGITS_WG),
            kv_write: kernel(&attention_m, "kv_write", &[w, w, r, r], &[("WG_KV", WG as f64)]),
            attention: kernel(&attention_m, "attention", &[w, r, r, r, r], &[]),
            attention_wide: kernel(&attention_m, "attention", &[w, r, r, r, r], &[("WG", 16.0)]),
            residual_add: kernel(&residual_m, "residual_add", &[w, r], &[]),
            swiglu: kernel(&residual_m, "swiglu", &[w, r], &[]),
            rope: kernel(&rope_m, "rope", &[w, r, r, r], &[("WG", WG as f64)]),
            intervene: kernel(&hooks_m, "intervene", &[w, r, r], &[]),
            gather: kernel(&hooks_m, "gather", &[w, r, r], &[]),
            project: kernel(&hooks_m, "project", &[w, r, r], &[]),
            copy_slot: kernel(&hooks_m, "copy_slot", &[w], &[]),
            backward: std::sync::OnceLock::new(),
            device: device.clone(),
            params_layout,
            params_align,
        })
    }

    fn bwd(&self) -> &BackwardKernels {
        self.backward.get_or_init(|| BackwardKernels::new(&self.device, &self.params_layout))
    }

    fn bind(device: &wgpu::Device, k: &Kernel, label: &str, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> =
            buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout: &k.layout, entries: &entries })
    }

    pub fn bind_embed(&self, device: &wgpu::Device, b: &EmbedBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.embed, "embed", &[b.out, b.tokens, b.positions, b.wte, b.wpe])
    }
    pub fn bind_layernorm(&self, device: &wgpu::Device, b: &LayernormBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.layernorm, "layernorm", &[b.out, b.inp, b.weight, b.bias])
    }
    /// Every row tile shares one layout, so one bind group serves them all.
    pub fn bind_matmul(&self, device: &wgpu::Device, b: &MatmulBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.matmul[0], "matmul", &[b.out, b.inp, b.weight, b.bias])
    }
    pub fn bind_kv_write(&self, device: &wgpu::Device, b: &KvWriteBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.kv_write, "kv_write", &[b.k_cache, b.v_cache, b.qkv, b.rows])
    }
    pub fn bind_attention(&self, device: &wgpu::Device, b: &AttentionBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.attention, "attention", &[b.out, b.qkv, b.k_cache, b.v_cache, b.rows])
    }
    pub fn bind_residual_add(&self, device: &wgpu::Device, b: &ResidualBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.residual_add, "residual_add", &[b.x, b.y])
    }
    /// `swiglu(x = up, y = gate)` shares residual_add's layout.
    pub fn bind_swiglu(&self, device: &wgpu::Device, b: &ResidualBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.swiglu, "swiglu", &[b.x, b.y])
    }
    pub fn bind_rope(&self, device: &wgpu::Device, b: &RopeBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.rope, "rope", &[b.qkv, b.cos, b.sin, b.rows])
    }
    pub fn bind_intervene(&self, device: &wgpu::Device, b: &InterveneBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.intervene, "intervene", &[b.x, b.table, b.row_map])
    }
    pub fn bind_gather(&self, device: &wgpu::Device, b: &GatherBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.gather, "gather", &[b.captured, b.src, b.rows])
    }
    /// One cache buffer, copied within itself.
    pub fn bind_copy_slot(&self, device: &wgpu::Device, cache: &wgpu::Buffer) -> wgpu::BindGroup {
        Self::bind(device, &self.copy_slot, "copy_slot", &[cache])
    }
    pub fn bind_logits(&self, device: &wgpu::Device, b: &LogitsBuffers) -> wgpu::BindGroup {
        // The weight sits at the same binding as in `matmul`, which shares its code.
        Self::bind(device, &self.logits[0], "logits", &[b.out, b.inp, b.wte, b.row_index])
    }

    pub fn bind_norm_backward(&self, device: &wgpu::Device, b: &NormBackwardBuffers) -> wgpu::BindGroup {
        Self::bind(device, &self.bwd().norm_backward, "norm_backward", &[b.dx, b.dy, b.x, b.weight])
    }
    /// `transpose_f16(dst, src)`: src [K, N] f16 as `matmul` binds it, dst [N, K] in the same
    /// layout ([`f16_row_words`]`(K)` words a row).
    pub fn bind_transpose_f16(&self, device: &wgpu::Device, dst: &wgpu::Buffer, src: &wgpu::Buffer) -> wgpu::BindGroup {
        Self::bind(device, &self.bwd().transpose_f16, "transpose_f16", &[dst, src])
    }
    pub fn bind_gelu(&self, device: &wgpu::Device, x: &wgpu::Buffer) -> wgpu::BindGroup {
        Self::bind(device, &self.bwd().gelu, "gelu", &[x])
    }
    /// `gelu_backward(d, pre)`: d ·= gelu′(pre).
    pub fn bind_gelu_backward(&self, device: &wgpu::Device, d: &wgpu::Buffer, pre: &wgpu::Buffer) -> wgpu::BindGroup {
        Self::bind(device, &self.bwd().gelu_backward, "gelu_backward", &[d, pre])
    }
    pub fn bind_fill_zero(&self, device: &wgpu::Device, x: &wgpu::Buffer) -> wgpu::BindGroup {
        Self::bind(device, &self.bwd().fill_zero, "fill_zero", &[x])
    }
    /// `swiglu_backward(dout, dgate, gate, up)`.
    pub fn bind_swiglu_backward(
        &self,
        device: &wgpu::Device,
        dout: &wgpu::Buffer,
        dgate: &wgpu::Buffer,
        gate: &wgpu::Buffer,
        up: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        Self::bind(device, &self.bwd().swiglu_backward, "swiglu_backward", &[dout, dgate, gate, up])
    }
    /// Both attention backward passes: (probs, qkv gradient).
    pub fn bind_attention_backward(&self, device: &wgpu::Device, b: &AttentionBackwardBuffers) -> [wgpu::BindGroup; 2] {
        [
            Self::bind(device, &self.bwd().attention_probs_backward, "attention_probs_backward", &[b.p, b.ds, b.qkv, b.dz]),
            Self::bind(device, &self.bwd().attention_qkv_backward, "attention_qkv_backward", &[b.dqkv, b.p, b.ds, b.qkv, b.dz]),
        ]
    }

    /// One workgroup per row.
    pub fn norm_backward(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &BackwardParams) {
        rec.dispatch(&self.bwd().norm_backward, group, bytemuck::bytes_of(p), [p.rows, 1, 1]);
    }
    /// `p.width` = K, `p.n` = N of the source [K, N].
    pub fn transpose_f16(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &BackwardParams) {
        rec.dispatch(
            &self.bwd().transpose_f16,
            group,
            bytemuck::bytes_of(p),
            [(f16_row_words(p.width as usize) as u32).div_ceil(WG), p.n, 1],
        );
    }
    pub fn gelu(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &BackwardParams) {
        rec.dispatch(&self.bwd().gelu, group, bytemuck::bytes_of(p), [p.width.div_ceil(WG), p.rows, 1]);
    }
    pub fn gelu_backward(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &BackwardParams) {
        rec.dispatch(&self.bwd().gelu_backward, group, bytemuck::bytes_of(p), [p.width.div_ceil(WG), p.rows, 1]);
    }
    pub fn fill_zero(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &BackwardParams) {
        rec.dispatch(&self.bwd().fill_zero, group, bytemuck::bytes_of(p), [p.width.div_ceil(WG), p.rows, 1]);
    }
    pub fn swiglu_backward(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &BackwardParams) {
        rec.dispatch(&self.bwd().swiglu_backward, group, bytemuck::bytes_of(p), [p.width.div_ceil(WG), p.rows, 1]);
    }
    /// Both passes, with the groups of [`Kernels::bind_attention_backward`]; `p.rows` = T and
    /// the head fields set.
    pub fn attention_backward(&self, rec: &mut Recorder, groups: &[wgpu::BindGroup; 2], p: &BackwardParams) {
        let qkv = (p.n_head + 2 * p.n_kv_head) * p.head_dim;
        rec.dispatch(&self.bwd().attention_probs_backward, &groups[0], bytemuck::bytes_of(p), [p.rows.div_ceil(WG), p.n_head, 1]);
        rec.dispatch(&self.bwd().attention_qkv_backward, &groups[1], bytemuck::bytes_of(p), [qkv.div_ceil(WG), p.rows, 1]);
    }

    pub fn embed(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &EmbedParams) {
        rec.dispatch(&self.embed, group, bytemuck::bytes_of(p), [(p.c / 2).div_ceil(WG), p.rows, 1]);
    }
    pub fn layernorm(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &LayernormParams) {
        rec.dispatch(&self.layernorm, group, bytemuck::bytes_of(p), [p.rows, 1, 1]);
    }
    pub fn matmul(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &MatmulParams) {
        let t = tile_index(p.rows);
        let groups = tile_groups(t, MATMUL_WG, p.n.div_ceil(8), p.rows);
        rec.dispatch(&self.matmul[t], group, bytemuck::bytes_of(p), groups);
    }
    pub fn kv_write(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &AttentionParams) {
        rec.dispatch(&self.kv_write, group, bytemuck::bytes_of(p), [(p.n_kv_head * p.head_dim).div_ceil(WG), p.rows, 1]);
    }
    pub fn rope(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &RopeParams) {
        rec.dispatch(&self.rope, group, bytemuck::bytes_of(p), [p.half.div_ceil(WG), p.rows, p.heads]);
    }
    /// `p.rows` rows of `p.c` elements.
    pub fn swiglu(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &ResidualParams) {
        rec.dispatch(&self.swiglu, group, bytemuck::bytes_of(p), [p.c.div_ceil(WG), p.rows, 1]);
    }
    /// Both attention pipelines share one layout, so one bind group serves either.
    pub fn attention(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &AttentionParams) {
        let k = if p.head_dim > NARROW_HEAD_DIM { &self.attention_wide } else { &self.attention };
        rec.dispatch(k, group, bytemuck::bytes_of(p), [p.n_head, p.rows, 1]);
    }
    pub fn residual_add(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &ResidualParams) {
        rec.dispatch(&self.residual_add, group, bytemuck::bytes_of(p), [(p.c).div_ceil(WG), p.rows, 1]);
    }
    pub fn intervene(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &HookParams) {
        rec.dispatch(&self.intervene, group, bytemuck::bytes_of(p), [p.width.div_ceil(WG), p.rows, 1]);
    }
    pub fn gather(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &HookParams) {
        rec.dispatch(&self.gather, group, bytemuck::bytes_of(p), [p.width.div_ceil(WG), p.rows, 1]);
    }
    /// With `gather`'s bind group; `p.mode` is the vector's offset in the arena.
    pub fn project(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &HookParams) {
        rec.dispatch(&self.project, group, bytemuck::bytes_of(p), [p.rows.div_ceil(WG), 1, 1]);
    }
    pub fn copy_slot(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &CopyParams) {
        rec.dispatch(&self.copy_slot, group, bytemuck::bytes_of(p), [p.kv.div_ceil(WG), p.len, 1]);
    }
    pub fn logits(&self, rec: &mut Recorder, group: &wgpu::BindGroup, p: &LogitsParams) {
        let t = tile_index(p.rows);
        let groups = tile_groups(t, LOGITS_WG, p.vocab_len.div_ceil(8), p.rows);
        rec.dispatch(&self.logits[t], group, bytemuck::bytes_of(p), groups);
    }
}

/// The uniform buffer every dispatch's params live in, one aligned slot each. It grows as
/// needed; its bind group is rebuilt then.
pub struct ParamsArena {
    buffer: wgpu::Buffer,
    group: wgpu::BindGroup,
    capacity: u64,
}

impl ParamsArena {
    pub fn new(device: &wgpu::Device, kernels: &Kernels) -> Self {
        Self::with_capacity(device, kernels, 64 * kernels.params_align)
    }

    fn with_capacity(device: &wgpu::Device, kernels: &Kernels, capacity: u64) -> Self {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tiller params"),
            size: capacity,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("tiller params"),
            layout: &kernels.params_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(PARAMS_SLOT),
                }),
            }],
        });
        Self { buffer, group, capacity }
    }

    fn ensure(&mut self, device: &wgpu::Device, kernels: &Kernels, bytes: u64) {
        if bytes > self.capacity {
            *self = Self::with_capacity(device, kernels, bytes.next_power_of_two());
        }
    }
}

enum Command {
    Dispatch {
        /// For [`profile`], which is native only.
        #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
        name: &'static str,
        pipeline: wgpu::ComputePipeline,
        group: wgpu::BindGroup,
        params_offset: u32,
        workgroups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        size: u64,
    },
}

/// A step's GPU work, recorded in order and encoded at submit time: dispatches go into one
/// compute pass, broken only where a buffer copy (a capture or a readback) must sit between.
pub struct Recorder {
    commands: Vec<Command>,
    params: Vec<u8>,
    align: u64,
}

impl Recorder {
    pub fn new(kernels: &Kernels) -> Self {
        Self { commands: Vec::new(), params: Vec::new(), align: kernels.params_align }
    }

    fn dispatch(&mut self, kernel: &Kernel, group: &wgpu::BindGroup, params: &[u8], workgroups: [u32; 3]) {
        if workgroups.contains(&0) {
            return;
        }
        let offset = self.params.len();
        self.params.extend_from_slice(params);
        self.params.resize(offset + self.align as usize, 0);
        self.commands.push(Command::Dispatch {
            name: kernel.name,
            pipeline: kernel.pipeline.clone(),
            group: group.clone(),
            params_offset: offset as u32,
            workgroups,
        });
    }

    /// Copies `size` bytes from `src` (at `src_offset`) to the start of `dst`.
    pub fn copy(&mut self, src: &wgpu::Buffer, src_offset: u64, dst: &wgpu::Buffer, size: u64) {
        if size > 0 {
            self.commands.push(Command::Copy { src: src.clone(), src_offset, dst: dst.clone(), size });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Writes the params, encodes everything and submits it once.
    pub fn submit(self, device: &wgpu::Device, queue: &wgpu::Queue, kernels: &Kernels, arena: &mut ParamsArena) {
        arena.ensure(device, kernels, self.params.len() as u64);
        if !self.params.is_empty() {
            queue.write_buffer(&arena.buffer, 0, &self.params);
        }
        #[cfg(not(target_arch = "wasm32"))]
        if profile::enabled() {
            return profile::submit_each(&self.commands, device, queue, arena);
        }
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tiller step") });
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        for cmd in &self.commands {
            match cmd {
                Command::Dispatch { pipeline, group, params_offset, workgroups, .. } => {
                    let p = pass.get_or_insert_with(|| {
                        encoder
                            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("tiller forward"), timestamp_writes: None })
                            .forget_lifetime()
                    });
                    p.set_pipeline(pipeline);
                    p.set_bind_group(0, &arena.group, &[*params_offset]);
                    p.set_bind_group(1, group, &[]);
                    p.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                }
                Command::Copy { src, src_offset, dst, size } => {
                    pass = None;
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, 0, *size);
                }
            }
        }
        drop(pass);
        queue.submit([encoder.finish()]);
    }
}

/// Per-kernel timing for the benchmark (native only): while enabled, every recorded dispatch is
/// submitted on its own and waited for, and its wall-clock time is added to its entry point's
/// total. Steps get slower (one submit and wait per dispatch); the shares are what it is for.
#[cfg(not(target_arch = "wasm32"))]
pub mod profile {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    use super::{Command, ParamsArena};

    static ENABLED: AtomicBool = AtomicBool::new(false);
    /// (entry point, dispatches, seconds)
    static TOTALS: Mutex<Vec<(&'static str, usize, f64)>> = Mutex::new(Vec::new());

    pub fn enable(on: bool) {
        ENABLED.store(on, Ordering::Relaxed);
    }

    pub fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// The totals since the last call, in first-seen order; clears them.
    pub fn take() -> Vec<(&'static str, usize, f64)> {
        std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn submit_each(commands: &[Command], device: &wgpu::Device, queue: &wgpu::Queue, arena: &ParamsArena) {
        for cmd in commands {
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tiller profile") });
            let name = match cmd {
                Command::Dispatch { name, pipeline, group, params_offset, workgroups } => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(name), timestamp_writes: None });
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, &arena.group, &[*params_offset]);
                    pass.set_bind_group(1, group, &[]);
                    pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                    *name
                }
                Command::Copy { src, src_offset, dst, size } => {
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, 0, *size);
                    "copy"
                }
            };
            let t = Instant::now();
            queue.submit([encoder.finish()]);
            let _ = device.poll(wgpu::PollType::wait_indefinitely());
            let secs = t.elapsed().as_secs_f64();
            let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            match totals.iter_mut().find(|(n, ..)| *n == name) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += secs;
                }
                None => totals.push((name, 1, secs)),
            }
        }
    }
}

/// Checks that a dispatch dimension fits the device.
pub fn check_workgroups(device: &wgpu::Device, what: &str, count: usize) -> Result<()> {
    let max = device.limits().max_compute_workgroups_per_dimension as usize;
    if count > max {
        return Err(TillerError::Gpu(format!(
            "{what} needs {count} workgroups in one dimension but the adapter allows {max}; use fewer tokens per step"
        )));
    }
    Ok(())
}
