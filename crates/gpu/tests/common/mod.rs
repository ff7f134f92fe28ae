//! Shared by the GPU tests: a device (or a skip notice; under CI a missing adapter fails),
//! seeded random data, f16 packing, and a small harness that runs single kernels.
#![allow(dead_code)] // each test binary uses a different subset

use half::f16;
use tiller_core::weights::{write_safetensors, Dtype};
use tiller_core::ModelSpec;
use tiller_gpu::kernels::{Kernels, ParamsArena, Recorder};

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
}

/// The native adapter, or `None` with a notice. With `CI` set, no adapter is a failure.
pub fn gpu() -> Option<Gpu> {
    match pollster::block_on(tiller_gpu::native_device()) {
        Ok((device, queue, info)) => Some(Gpu { device, queue, info }),
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but no GPU adapter is available ({e}); install mesa-vulkan-drivers (lavapipe)");
            }
            eprintln!("SKIPPED: no GPU adapter ({e})");
            None
        }
    }
}

/// xorshift64*: reproducible data without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
    /// Uniform in [-scale, scale).
    pub fn uniform(&mut self, scale: f32) -> f32 {
        (self.next_u32() as f32 / 4_294_967_296.0 * 2.0 - 1.0) * scale
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(scale)).collect()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        self.next_u32() % n
    }
}

/// Rounds to f16 and back: what the GPU's weights hold.
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

pub fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// Runs kernels one dispatch list at a time.
pub struct Harness {
    pub gpu: Gpu,
    pub kernels: Kernels,
    pub arena: ParamsArena,
}

impl Harness {
    pub fn new(gpu: Gpu) -> Self {
        let kernels = Kernels::new(&gpu.device).expect("pipelines build");
        let arena = ParamsArena::new(&gpu.device, &kernels);
        Self { gpu, kernels, arena }
    }

    pub fn bytes(&self, bytes: &[u8]) -> wgpu::Buffer {
        self.buffer(bytes)
    }
    fn buffer(&self, bytes: &[u8]) -> wgpu::Buffer {
        let size = (bytes.len() as u64).max(16).next_multiple_of(4);
        let b = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if !bytes.is_empty() {
            let mut padded = bytes.to_vec();
            padded.resize(padded.len().next_multiple_of(4), 0);
            self.gpu.queue.write_buffer(&b, 0, &padded);
        }
        b
    }
    pub fn f32s(&self, v: &[f32]) -> wgpu::Buffer {
        self.buffer(bytemuck::cast_slice(v))
    }
    pub fn u32s(&self, v: &[u32]) -> wgpu::Buffer {
        self.buffer(bytemuck::cast_slice(v))
    }
    /// f16 pairs packed in u32, in memory order.
    pub fn f16s(&self, v: &[f32]) -> wgpu::Buffer {
        self.buffer(&f16_bytes(v))
    }
    pub fn zeros(&self, n: usize) -> wgpu::Buffer {
        self.buffer(&vec![0u8; n * 4])
    }
    pub fn recorder(&self) -> Recorder {
        Recorder::new(&self.kernels)
    }
    pub fn submit(&mut self, rec: Recorder) {
        rec.submit(&self.gpu.device, &self.gpu.queue, &self.kernels, &mut self.arena);
    }
    pub fn read(&self, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
        pollster::block_on(tiller_gpu::readback::read_f32(&self.gpu.device, &self.gpu.queue, b, n)).expect("readback")
    }
}

/// `|got - want| <= atol + rtol * |want|`, panicking with the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    match tiller_core::golden::check_close(what, got, want, atol, rtol) {
        Ok(max) => eprintln!("{what}: ok, max |err| {max:.3e} (atol {atol}, rtol {rtol})"),
        Err(e) => panic!("{e}"),
    }
}

/// A random GPT-2 as safetensors; F16 so the CPU reference holds exactly the GPU's weights.
pub fn random_model(cfg: &ModelSpec, seed: u64, dtype: Dtype) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut tensors = Vec::new();
    for (name, shape) in tiller_core::arch::weights::file_tensors(cfg).into_iter().map(|t| (t.name, t.shape)) {
        let n: usize = shape.iter().product();
        let is_ln_weight = name.contains("ln_") && name.ends_with(".weight");
        let v: Vec<f32> = if is_ln_weight {
            (0..n).map(|_| 1.0 + rng.uniform(0.2)).collect()
        } else if name.starts_with("wte") || name.starts_with("wpe") {
            rng.vec(n, 0.5)
        } else {
            let fan_in = shape[0] as f32;
            rng.vec(n, if shape.len() == 2 { 1.7 / fan_in.sqrt() } else { 0.1 })
        };
        let bytes = match dtype {
            Dtype::F32 => f32_bytes(&v),
            _ => f16_bytes(&v),
        };
        let dt = if dtype == Dtype::F32 { Dtype::F32 } else { Dtype::F16 };
        tensors.push((name, dt, shape, bytes));
    }
    write_safetensors(&tensors)
}
