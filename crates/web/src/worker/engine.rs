//! The engines the worker can build, one streaming path into each, and the wrapper that makes
//! any engine give the worker's event loop a turn between steps (so Stop can arrive).

use std::sync::atomic::{AtomicU64, Ordering};

use tiller_core::weights::{F32Sink, TensorSink};
use tiller_core::{Backend, CpuModel, ModelSpec, StepOutput, StepRequest, TillerError};

use tiller_gpu::{GpuEngine, GpuWeightsSink};

use crate::protocol::{ErrorKind, UserError};

/// The CPU fallback holds every weight in wasm memory as f32: fine for tiny models and
/// distilgpt2/gpt2, impossible past wasm32's 4 GiB.
pub const CPU_MAX_PARAMS: u64 = 200_000_000;

/// A built engine. Only one exists at a time, so the GPU variant's size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Engine {
    Cpu(CpuModel),
    Gpu(GpuEngine),
}

impl Engine {
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu(m) => m.describe(),
            // Browsers often hide the adapter's name; say at least that it is WebGPU.
            Engine::Gpu(g) => match g.adapter_info().name.trim() {
                "" => "WebGPU".to_string(),
                name => format!("WebGPU ({name})"),
            },
        }
    }
}

/// Runs `$body` with `$b` bound to the engine's backend, whatever its type.
macro_rules! with_backend {
    ($engine:expr, |$b:ident| $body:expr) => {
        match $engine {
            $crate::worker::engine::Engine::Cpu($b) => $body,
            $crate::worker::engine::Engine::Gpu($b) => $body,
        }
    };
}

/// A WebGPU device with what describes it.
pub struct GpuDevice {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Which device this is, for [`set_live_device`].
    pub id: u64,
}

static NEXT_DEVICE: AtomicU64 = AtomicU64::new(1);
/// The device the installed engine runs on (0: none, or the CPU engine). A lost device tells
/// the page only while it is this one, whatever the browser gives as the reason: one dropped on
/// purpose (a model replaced, a load abandoned) stays quiet, and so does one never installed,
/// while `device.destroy()` from elsewhere (a test, an extension) is a loss like a driver reset.
static LIVE_DEVICE: AtomicU64 = AtomicU64::new(0);

/// Marks device `id` as the one the installed engine runs on (0 when no engine is).
pub fn set_live_device(id: u64) {
    LIVE_DEVICE.store(id, Ordering::SeqCst);
}

/// Asks the browser for a WebGPU adapter and a device with the adapter's full limits.
/// `Ok(None)` when the browser has no WebGPU adapter.
pub async fn request_gpu() -> Result<Option<GpuDevice>, UserError> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::BROWSER_WEBGPU;
    let instance = wgpu::Instance::new(desc);
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
        apply_limit_buckets: false,
    };
    let Ok(adapter) = instance.request_adapter(&options).await else { return Ok(None) };
    let info = adapter.get_info();
    let (device, queue) = tiller_gpu::request_device(&adapter)
        .await
        .map_err(|e| UserError::new(ErrorKind::AdapterLimits, format!("{e}. Try a smaller model, or the CPU engine for tiny ones.")))?;
    // A lost device (driver reset, GPU process crash, tab in the background too long) cannot
    // be used again: tell the page, which offers to rebuild the engine.
    let id = NEXT_DEVICE.fetch_add(1, Ordering::SeqCst);
    device.set_device_lost_callback(move |_reason, message| {
        if LIVE_DEVICE.load(Ordering::SeqCst) != id {
            return; // not the installed engine's device: dropped on purpose, or never used
        }
        LIVE_DEVICE.store(0, Ordering::SeqCst);
        super::post(&crate::protocol::FromWorker::Fatal {
            error: UserError::new(
                ErrorKind::DeviceLost,
                format!("the GPU device was lost ({message}). Reload the model to rebuild the engine; your recipe and results stay."),
            ),
        });
    });
    Ok(Some(GpuDevice { device, queue, info, id }))
}

/// Where the tensors of `model.safetensors` go while it streams (one at a time).
#[allow(clippy::large_enum_variant)]
pub enum Builder {
    Cpu(F32Sink),
    Gpu { sink: GpuWeightsSink, gpu: GpuDevice },
}

impl Builder {
    pub fn sink(&mut self) -> &mut dyn TensorSink {
        match self {
            Builder::Cpu(s) => s,
            Builder::Gpu { sink, .. } => sink,
        }
    }

    /// The id of the device the engine will run on (0 for the CPU).
    pub fn device_id(&self) -> u64 {
        match self {
            Builder::Cpu(_) => 0,
            Builder::Gpu { gpu, .. } => gpu.id,
        }
    }

    /// Drops a builder whose load failed or was cancelled.
    pub fn abandon(self) {
        match self {
            Builder::Cpu(_) => {}
            // The GPU sink holds wgpu error-scope guards that, dropped unfinished, pop in
            // push order and make wgpu's web backend panic ("Mismatched pop_error_scope"):
            // leak them instead (the failed device's memory goes with its last handle anyway).
            Builder::Gpu { sink, gpu } => {
                std::mem::forget(sink);
                drop(gpu);
            }
        }
    }

    /// The engine, once every tensor has arrived.
    pub async fn build(self) -> tiller_core::Result<Engine> {
        match self {
            Builder::Cpu(s) => cpu_engine(s),
            Builder::Gpu { sink, gpu } => {
                let weights = sink.finish().await?;
                Ok(Engine::Gpu(GpuEngine::new(gpu.device, gpu.queue, gpu.info, weights).await?))
            }
        }
    }
}
pub(crate) use with_backend;

/// Collects tensors as f32 for the CPU reference (core's sink, with the fallback's size cap).
pub fn cpu_sink() -> F32Sink {
    F32Sink::with_limit(CPU_MAX_PARAMS)
}

/// The CPU engine, once every tensor has arrived.
pub fn cpu_engine(sink: F32Sink) -> tiller_core::Result<Engine> {
    Ok(Engine::Cpu(CpuModel::new(sink.into_weights()?)))
}

/// Parameters of a model of this shape (weights only).
pub fn parameter_count(cfg: &ModelSpec) -> u64 {
    cfg.parameter_count()
}

/// Lets the worker's event loop run (a zero-delay timeout), so messages such as Stop are
/// delivered between steps even when the engine itself never awaits anything.
pub async fn yield_now() {
    sleep_ms(0).await;
}

/// Waits `ms` milliseconds without blocking the worker's event loop.
pub async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let _ = super::scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// An engine that yields before each step.
pub struct Yielding<'a, B: Backend>(pub &'a mut B);

impl<B: Backend> Backend for Yielding<'_, B> {
    fn config(&self) -> &ModelSpec {
        self.0.config()
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn reset(&mut self, slots: usize, max_len: usize) -> tiller_core::Result<()> {
        self.0.reset(slots, max_len)
    }
    fn slot_len(&self, slot: usize) -> usize {
        self.0.slot_len(slot)
    }
    fn fork_slot(&mut self, src: usize, dst: usize) -> tiller_core::Result<()> {
        self.0.fork_slot(src, dst)
    }
    async fn step(&mut self, req: &StepRequest) -> tiller_core::Result<StepOutput> {
        yield_now().await;
        self.0.step(req).await
    }
    async fn unembed(&mut self, rows: &[f32], apply_ln_f: bool) -> tiller_core::Result<Vec<f32>> {
        yield_now().await;
        self.0.unembed(rows, apply_ln_f).await
    }
}

/// A core error as the page shows it; `file` names the file being read, if any.
pub fn user_error(e: &TillerError) -> UserError {
    let kind = match e {
        TillerError::Safetensors(_)
        | TillerError::ShapeMismatch { .. }
        | TillerError::MissingTensor(_)
        | TillerError::UnsupportedDtype { .. }
        | TillerError::Config(_)
        | TillerError::Tokenizer(_)
        | TillerError::TokenizerMismatch(_) => ErrorKind::BadFile,
        TillerError::Recipe(_) => ErrorKind::Recipe,
        TillerError::Gpu(m) => gpu_kind(m),
        TillerError::Input(_) => ErrorKind::Recipe,
    };
    UserError::new(kind, e.to_string())
}

fn gpu_kind(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    if m.contains("lost") {
        ErrorKind::DeviceLost
    } else if m.contains("out of memory") || m.contains("out of gpu memory") || m.contains("allocation") {
        ErrorKind::OutOfMemory
    } else if m.contains("limit") || m.contains("this gpu allows") || m.contains("smaller model") {
        ErrorKind::AdapterLimits
    } else if m.contains("no webgpu") || m.contains("no adapter") || m.contains("navigator.gpu") {
        ErrorKind::NoWebGpu
    } else {
        ErrorKind::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_errors_are_classified() {
        assert_eq!(gpu_kind("out of GPU memory: try a smaller model"), ErrorKind::OutOfMemory);
        assert_eq!(
            gpu_kind("tensor `wte.weight` needs 160.8 MB in one buffer binding but this GPU allows 134.2 MB; try a smaller model"),
            ErrorKind::AdapterLimits
        );
        assert_eq!(gpu_kind("the device was lost"), ErrorKind::DeviceLost);
        assert_eq!(gpu_kind("something else"), ErrorKind::Internal);
    }

    #[test]
    fn parameter_counts_match_the_released_models() {
        let gpt2 = ModelSpec::gpt2_preset("gpt2").unwrap();
        assert_eq!(parameter_count(&gpt2), 124_439_808);
        let xl = ModelSpec::gpt2_preset("gpt2-xl").unwrap();
        assert_eq!(parameter_count(&xl), 1_557_611_200);
    }
}
