//! Tiller's engine on wgpu (GPT-2-architecture models so far; `unsupported` says why another
//! model runs on the CPU reference instead): handwritten WGSL kernels (`shaders/`, each the twin of a
//! `tiller_core::ops` function), GPU weight upload as a streaming
//! [`tiller_core::weights::TensorSink`], and [`GpuEngine`], which implements
//! [`tiller_core::Backend`] with exactly the semantics of the CPU reference `CpuModel`
//! (batched steps over per-slot KV caches, ActAdd injections and captures at resid_pre,
//! attn_out and mlp_out, logits of the last or every row, unembed with optional ln_f).
//!
//! It owns the GPU side only: device requests with the adapter's limits, buffers, pipelines,
//! the forward pass and async readback (never blocking, so the same code runs in the
//! browser). It does not tokenize, sample, build recipes or read files: those live in
//! `tiller-core`, written against `Backend`. The caller brings the device ([`request_device`],
//! or [`native_device`] off the web), so tests, the CLI and the web page each choose theirs.
//!
//! Numerics: activations are f32; weight matrices are f16 (two per u32, `unpack2x16float`)
//! with f32 accumulation; norm parameters and biases are f32.

mod device;
mod engine;
mod errors;
pub mod kernels;
pub mod readback;
mod weights;

#[cfg(not(target_arch = "wasm32"))]
pub use device::native_device;
pub use device::{describe_adapter, request_device, wanted_features};
pub use engine::{unsupported, GpuEngine, GpuTape};
pub use weights::{GpuWeights, GpuWeightsSink, WteChunk};
