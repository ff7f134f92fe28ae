//! Tiller's core: everything about the models and activation steering that needs neither a GPU
//! nor a browser. It owns the model description ([`arch`]: spec from config.json, each family's
//! weight map and block program), safetensors loading (one streaming path for native and web),
//! the tokenizer and chat templates, the CPU reference forward pass (the oracle for the GPU
//! kernels), ActAdd recipes and steering vectors, the seeded sampler, generation, decoded
//! vocabulary and sweeps, all written against the [`backend::Backend`] trait.
//!
//! It must not depend on wgpu, web-sys or any I/O beyond bytes handed to it.

pub mod arch;
pub mod backend;
pub mod contrast;
pub mod error;
pub mod fv;
pub mod generate;
pub mod gguf;
#[doc(hidden)]
pub mod golden;
pub mod inspect;
pub mod iti;
pub mod library;
pub mod melbo;
pub mod model;
pub mod ops;
pub mod pairs;
pub mod recipe;
pub mod sample;
pub mod steer;
pub mod sweep;
pub mod tape;
pub mod tokenizer;
pub mod vocab;
pub mod weights;

pub use arch::{Family, ModelSpec};
pub use backend::{Backend, Capture, Injection, LogitRows, Mode, RowSelect, SeqStep, Site, StepOutput, StepPlan, StepRequest};
pub use error::{Result, TillerError};
pub use model::CpuModel;
pub use recipe::{Positions, Recipe, Sampling, Term};
pub use tokenizer::Tokenizer;
pub use weights::CpuWeights;
