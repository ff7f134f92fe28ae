//! What the benchmarks share: random weights of a model's shapes, streamed into either engine.
#![allow(dead_code)] // each benchmark uses its own part

use half::f16;
use pollster::block_on;
use tiller_core::arch::weights::engine_tensors;
use tiller_core::weights::{Dtype, F32Sink, TensorSink, TensorView};
use tiller_core::{CpuModel, ModelSpec};
use tiller_gpu::{describe_adapter, GpuEngine};

pub type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// xorshift64*, uniform in [-scale, scale).
pub struct Rng(pub u64);
impl Rng {
    pub fn uniform(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        (u * 2.0 - 1.0) * scale
    }
}

/// Every tensor of `cfg`'s shapes, random (norm weights 1), as f16 bytes, one at a time.
pub fn random_tensors(cfg: &ModelSpec, sink: &mut dyn TensorSink) -> BoxResult<()> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for (name, shape) in engine_tensors(cfg) {
        let n: usize = shape.iter().product();
        let norm = (name.contains("ln_") || name.contains("norm")) && name.ends_with("weight");
        let bytes: Vec<u8> = (0..n).flat_map(|_| f16::from_f32(if norm { 1.0 } else { rng.uniform(0.05) }).to_le_bytes()).collect();
        sink.tensor(TensorView { name: &name, shape: &shape, dtype: Dtype::F16, bytes: &bytes })?;
    }
    Ok(())
}

/// The GPU engine on `device` with random weights.
pub fn gpu_engine_on(cfg: &ModelSpec, device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> BoxResult<GpuEngine> {
    let mut sink = GpuEngine::loader(&device);
    sink.begin(cfg)?;
    random_tensors(cfg, &mut sink)?;
    let weights = block_on(sink.finish())?;
    Ok(block_on(GpuEngine::new(device, queue, info, weights))?)
}

/// The GPU engine on this machine's adapter with random weights, and the adapter's name.
pub fn gpu_engine(cfg: &ModelSpec) -> BoxResult<(GpuEngine, String)> {
    let (device, queue, info) = block_on(tiller_gpu::native_device())?;
    let adapter = describe_adapter(&info);
    Ok((gpu_engine_on(cfg, device, queue, info)?, adapter))
}

/// The CPU reference with the same random weights.
pub fn cpu_engine(cfg: &ModelSpec) -> BoxResult<CpuModel> {
    let mut sink = F32Sink::default();
    sink.begin(cfg)?;
    random_tensors(cfg, &mut sink)?;
    Ok(CpuModel::new(sink.into_weights()?))
}

/// A released model's shapes by name (`gpt2`, `gpt2-medium`, …, `llama-3.2-1b`).
pub fn model_shapes(name: &str) -> BoxResult<ModelSpec> {
    match name {
        "llama-3.2-1b" => Ok(ModelSpec::llama32_1b()),
        name => Ok(ModelSpec::gpt2_preset(name).ok_or_else(|| format!("unknown model {name}"))?),
    }
}
