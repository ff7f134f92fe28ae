//! Opening a model folder on the engine the user asked for.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use tiller_core::weights::{F32Sink, StreamLoader, TensorSink};
use tiller_core::{Backend, CpuModel, ModelSpec, StepOutput, StepRequest, Tokenizer};
use tiller_gpu::GpuEngine;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The f32 CPU reference.
    Cpu,
    /// The wgpu engine (Vulkan, Metal or DX12).
    Gpu,
}

/// The engine a command runs on.
pub enum Engine {
    Cpu(Box<CpuModel>),
    Gpu(Box<GpuEngine>),
}

impl Backend for Engine {
    fn config(&self) -> &ModelSpec {
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
    fn fork_slot(&mut self, src: usize, dst: usize) -> tiller_core::Result<()> {
        match self {
            Engine::Cpu(m) => m.fork_slot(src, dst),
            Engine::Gpu(m) => m.fork_slot(src, dst),
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

/// A model folder's files.
pub struct ModelFiles {
    /// `model.safetensors`, or the shards named by `model.safetensors.index.json` in order.
    pub weights: Vec<PathBuf>,
    /// `model.safetensors.index.json` when the checkpoint is sharded.
    pub index_json: Option<Vec<u8>>,
    pub config_json: Option<Vec<u8>>,
    pub tokenizer_json: Vec<u8>,
    pub tokenizer_config_json: Option<Vec<u8>>,
    dir: PathBuf,
    /// Load tensors holding NaN or infinities, with a warning each (--allow-non-finite).
    pub allow_non_finite: bool,
}

/// Reads an optional file: absent is None, present but unreadable is an error.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display()))),
    }
}

impl ModelFiles {
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{} is not a folder: --model takes a folder with model.safetensors and tokenizer.json", dir.display());
        }
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let config_json = read_optional(&dir.join("config.json"))?;
        let (weights, index_json) = if single.exists() {
            if !single.is_file() {
                bail!("{} is not a regular file (Tiller reads Hugging Face safetensors weights)", single.display());
            }
            (vec![single], None)
        } else if let Some(index) = read_optional(&index_path)? {
            let files = tiller_core::weights::shard_files(&index).with_context(|| index_path.display().to_string())?;
            let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
            if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
                bail!("{} names the shard {}, which is missing", index_path.display(), missing.display());
            }
            if config_json.is_none() {
                bail!("{} is sharded but has no config.json beside it", dir.display());
            }
            (paths, Some(index))
        } else {
            bail!(
                "{} has no model.safetensors or model.safetensors.index.json (Tiller reads Hugging Face safetensors weights)",
                dir.display()
            );
        };
        let tok_path = dir.join("tokenizer.json");
        let tokenizer_json = std::fs::read(&tok_path).with_context(|| format!("{} has no readable tokenizer.json", dir.display()))?;
        let tokenizer_config_json = read_optional(&dir.join("tokenizer_config.json"))?;
        Ok(Self {
            weights,
            index_json,
            config_json,
            tokenizer_json,
            tokenizer_config_json,
            dir: dir.to_path_buf(),
            allow_non_finite: false,
        })
    }

    /// The tokenizer, with the model's BOS/EOS ids and the chat template.
    pub fn tokenizer(&self, spec: &ModelSpec) -> Result<Tokenizer> {
        Tokenizer::from_files(&self.tokenizer_json, self.tokenizer_config_json.as_deref(), Some(spec))
            .with_context(|| self.dir.join("tokenizer.json").display().to_string())
    }

    /// The spec config.json describes, when it describes one on its own (a GPT-2 config may
    /// leave shapes to the tensors).
    fn declared_spec(&self) -> Option<ModelSpec> {
        self.config_json.as_deref().and_then(|j| tiller_core::arch::config::from_json(j, None).ok())
    }

    /// Streams the weights from disk into a sink, 16 MiB at a time: the same path the browser
    /// takes, so a file never has to fit in memory.
    pub fn stream(&self, sink: &mut dyn TensorSink) -> Result<ModelSpec> {
        let mut buf = vec![0u8; 16 << 20];
        let mut loader = match &self.index_json {
            None => StreamLoader::new(self.config_json.as_deref(), None),
            Some(index) => StreamLoader::sharded(self.config_json.as_deref().unwrap_or_default(), index)?.0,
        };
        if self.allow_non_finite {
            loader = loader.allow_non_finite();
        }
        for path in &self.weights {
            let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let len = file.metadata().map(|m| m.len()).ok();
            loader.start_file(len).map_err(|e| located(e, path))?;
            loop {
                let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                loader.feed(&buf[..n], sink).map_err(|e| located(e, path))?;
            }
            loader.end_file().map_err(|e| located(e, path))?;
        }
        for w in loader.warnings() {
            eprintln!("warning: {w}");
        }
        loader.finish().map_err(|e| located(e, &self.weights[0]))
    }
}

/// A loading error, prefixed with the file it is about: config.json (next to the weights) for
/// a configuration problem, else the weights file.
fn located(e: tiller_core::TillerError, weights: &Path) -> anyhow::Error {
    let file = match e {
        tiller_core::TillerError::Config(_) => weights.with_file_name("config.json"),
        _ => weights.to_path_buf(),
    };
    anyhow::Error::new(e).context(file.display().to_string())
}

/// Reads a Hugging Face model folder onto the engine asked for (`None`: the GPU when there is
/// one that runs this model, else the CPU reference, with a note on stderr).
pub fn open_model(m: &crate::ModelArgs) -> Result<(Engine, Tokenizer)> {
    let mut files = ModelFiles::read(&m.model)?;
    files.allow_non_finite = m.allow_non_finite;
    let device = m.device;
    let gpu_refusal = files.declared_spec().and_then(|s| tiller_gpu::unsupported(&s));
    let engine = match device {
        Some(Device::Cpu) => Engine::Cpu(Box::new(open_cpu(&files)?)),
        Some(Device::Gpu) => {
            if let Some(why) = gpu_refusal {
                bail!("{why}; use --device cpu");
            }
            Engine::Gpu(Box::new(open_gpu(&files)?))
        }
        None => match gpu_refusal {
            Some(why) => {
                eprintln!("note: {why}, so this runs on the CPU reference (--device cpu)");
                Engine::Cpu(Box::new(open_cpu(&files)?))
            }
            None => match open_gpu(&files) {
                Ok(e) => Engine::Gpu(Box::new(e)),
                Err(e) if e.downcast_ref::<NoAdapter>().is_some() => Engine::Cpu(Box::new(open_cpu(&files)?)),
                Err(e) => return Err(e),
            },
        },
    };
    let tok = files.tokenizer(engine.config())?;
    Ok((engine, tok))
}

fn open_cpu(files: &ModelFiles) -> Result<CpuModel> {
    let mut sink = F32Sink::default();
    files.stream(&mut sink)?;
    Ok(CpuModel::new(sink.into_weights()?))
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
fn open_gpu(files: &ModelFiles) -> Result<GpuEngine> {
    let (device, queue, info) = pollster::block_on(tiller_gpu::native_device()).map_err(|e| NoAdapter(e.to_string()))?;
    let mut sink = GpuEngine::loader(&device);
    files.stream(&mut sink)?;
    let w = pollster::block_on(sink.finish()).with_context(|| format!("uploading {}", files.weights[0].display()))?;
    Ok(pollster::block_on(GpuEngine::new(device, queue, info, w))?)
}
