//! Tiller's core: everything about GPT-2 and activation steering that needs neither a GPU nor
//! a browser. It owns the model configuration, safetensors loading (one streaming path for
//! native and web), the tokenizer, the CPU reference forward pass (the oracle for the GPU
//! kernels), ActAdd recipes and steering vectors, the seeded sampler, generation, decoded
//! vocabulary and sweeps, all written against the [`backend::Backend`] trait.
//!
//! It must not depend on wgpu, web-sys or any I/O beyond bytes handed to it.

pub mod backend;
pub mod config;
pub mod error;
pub mod generate;
#[doc(hidden)]
pub mod golden;
pub mod model;
pub mod ops;
pub mod recipe;
pub mod sample;
pub mod steer;
pub mod sweep;
pub mod tokenizer;
pub mod vocab;
pub mod weights;

pub use backend::{Backend, Injection, LogitRows, SeqStep, Site, StepOutput, StepRequest};
pub use config::Gpt2Config;
pub use error::{Result, TillerError};
pub use model::CpuModel;
pub use recipe::{Positions, Recipe, Sampling, Term};
pub use tokenizer::Gpt2Tokenizer;
pub use weights::Gpt2Weights;
