//! Tiller's playground: the page (a Leptos client-side app, [`app`]) and the engine worker
//! ([`worker`]) that downloads the model and runs it off the page's thread.
//!
//! The two are separate wasm binaries built from this one crate by `cargo xtask page`; they talk through
//! [`protocol`] (serde JSON over `postMessage`). The page owns the UI state and share links
//! ([`share`], [`form`], [`history`], [`presets`], [`sweep`], [`chart`], [`vectors`]); the worker owns the model, the tokenizer and the
//! browser cache of model files. Nothing here computes GPT-2: that is `tiller-core` (and the
//! GPU engine, `tiller-gpu`).

pub mod app;
pub mod chart;
pub mod discover;
pub mod fmt;
pub mod form;
pub mod heads;
pub mod history;
pub mod inspect;
pub mod numbers;
pub mod presets;
pub mod protocol;
pub mod share;
pub mod sweep;
pub mod vectors;
pub mod worker;
