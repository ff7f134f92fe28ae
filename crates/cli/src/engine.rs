//! Opening a model folder on the engine the user asked for.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use tiller_core::weights::{StreamLoader, TensorSink};
use tiller_gpu::GpuEngine;
use tiller_core::{Backend, CpuModel, Gpt2Config, Gpt2Tokenizer, Gpt2Weights, StepOutput, StepRequest};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The f32 CPU reference.
    Cpu,
    /// The wgpu engine (Vulkan, Metal or DX12).
    Gpu,
}

/// The engine a command runs on.
pub enum Engine {
    Cpu(CpuModel),
    Gpu(Box<GpuEngine>),
}

impl Backend for Engine {
    fn config(&self) -> &Gpt2Config {
        match self {
            Engine::Cpu(m) => m.config(),
            Engine::Gpu(m) => m.config(),
        }
    }
    fn describe(&self) -> String {
        match self {
            Engine::Cpu(m) => m.describe(),
            Engine::Gpu(m) => m.describe(),
        }
    }
    fn reset(&mut self, slots: usize, max_len: usize) -> tiller_core::Result<()> {
        match self {
            Engine::Cpu(m) => m.reset(slots, max_len),
            Engine::Gpu(m) => m.reset(slots, max_len),
        }
    }
    fn slot_len(&self, slot: usize) -> usize {
        match self {
            Engine::Cpu(m) => m.slot_len(slot),
            Engine::Gpu(m) => m.slot_len(slot),
        }
    }
    async fn step(&mut self, req: &StepRequest) -> tiller_core::Result<StepOutput> {
        match self {
            Engine::Cpu(m) => m.step(req).await,
            Engine::Gpu(m) => m.step(req).await,
        }
    }
    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> tiller_core::Result<Vec<f32>> {
        match self {
            Engine::Cpu(m) => m.unembed(rows, apply_ln_f).await,
            Engine::Gpu(m) => m.unembed(rows, apply_ln_f).await,
        }
    }
}

/// Streams `model.safetensors` from disk into a sink, 16 MiB at a time: the same path the
/// browser takes, so a file never has to fit in memory twice.
pub fn stream_file(path: &Path, config_json: Option<&[u8]>, sink: &mut dyn TensorSink) -> Result<Gpt2Config> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let mut loader = StreamLoader::new(config_json, len);
    let mut buf = vec![0u8; 16 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        loader.feed(&buf[..n], sink).map_err(|e| located(e, path))?;
    }
    loader.finish().map_err(|e| located(e, path))
}

/// A loading error, prefixed with the file it is about: config.json (next to the weights) for
/// a configuration problem, else model.safetensors.
fn located(e: tiller_core::TillerError, weights: &Path) -> anyhow::Error {
    let file = match e {
        tiller_core::TillerError::Config(_) => weights.with_file_name("config.json"),
        _ => weights.to_path_buf(),
    };
    anyhow::Error::new(e).context(file.display().to_string())
}

/// Reads a Hugging Face model folder.
pub fn open_model(dir: &Path, device: Option<Device>) -> Result<(Engine, Gpt2Tokenizer)> {
    if !dir.is_dir() {
        bail!("{} is not a folder: --model takes a folder with model.safetensors and tokenizer.json", dir.display());
    }
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        bail!("{} has no model.safetensors (Tiller reads Hugging Face safetensors weights)", dir.display());
    }
    let tok_path = dir.join("tokenizer.json");
    let tok_json = std::fs::read(&tok_path)
        .with_context(|| format!("{} has no readable tokenizer.json", dir.display()))?;
    let tok = Gpt2Tokenizer::from_bytes(&tok_json).with_context(|| format!("{}", tok_path.display()))?;
    let config_json = std::fs::read(dir.join("config.json")).ok();

    let engine = match device {
        Some(Device::Cpu) => Engine::Cpu(open_cpu(&weights, config_json.as_deref())?),
        Some(Device::Gpu) => Engine::Gpu(Box::new(crate::engine::open_gpu(&weights, config_json.as_deref())?)),
        None => match crate::engine::open_gpu(&weights, config_json.as_deref()) {
            Ok(e) => Engine::Gpu(Box::new(e)),
            Err(e) if e.downcast_ref::<NoAdapter>().is_some() => Engine::Cpu(open_cpu(&weights, config_json.as_deref())?),
            Err(e) => return Err(e),
        },
    };
    Ok((engine, tok))
}

fn open_cpu(weights: &Path, config_json: Option<&[u8]>) -> Result<CpuModel> {
    let bytes = std::fs::read(weights).with_context(|| format!("reading {}", weights.display()))?;
    let w = Gpt2Weights::from_bytes(&bytes, config_json).map_err(|e| located(e, weights))?;
    Ok(CpuModel::new(w))
}

/// No GPU adapter is available (the CPU reference is used when --device is not given).
#[derive(Debug)]
pub struct NoAdapter(pub String);

impl std::fmt::Display for NoAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; use --device cpu", self.0)
    }
}

impl std::error::Error for NoAdapter {}

/// Streams the weights straight into GPU buffers, tensor by tensor (the page's path).
fn open_gpu(weights: &Path, config_json: Option<&[u8]>) -> Result<GpuEngine> {
    let (device, queue, info) = pollster::block_on(tiller_gpu::native_device()).map_err(|e| NoAdapter(e.to_string()))?;
    let mut sink = GpuEngine::loader(&device);
    stream_file(weights, config_json, &mut sink)?;
    let w = pollster::block_on(sink.finish()).with_context(|| format!("uploading {}", weights.display()))?;
    Ok(pollster::block_on(GpuEngine::new(device, queue, info, w))?)
}
