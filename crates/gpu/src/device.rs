//! Getting a device is separate from using it: the CLI, the web page and the tests each bring
//! their own and hand it to [`crate::GpuEngine`]. These helpers ask for everything the adapter
//! offers that the engine can use: its full limits (storage bindings well above WebGPU's 128 MiB
//! default where available) and the optional features SHADER_F16, SUBGROUP and TIMESTAMP_QUERY.

use tiller_core::{Result, TillerError};

/// Optional features requested when the adapter has them.
pub fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY
}

/// Requests a device with the adapter's own limits and the optional features it offers.
pub async fn request_device(adapter: &wgpu::Adapter) -> Result<(wgpu::Device, wgpu::Queue)> {
    let desc = wgpu::DeviceDescriptor {
        label: Some("tiller"),
        required_features: adapter.features() & wanted_features(),
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    };
    adapter.request_device(&desc).await.map_err(|e| TillerError::Gpu(format!("the GPU adapter refused a device: {e}")))
}

/// A device on this machine's best adapter (any backend wgpu was built with; `WGPU_BACKEND`
/// and `WGPU_ADAPTER_NAME` are honoured). Errors when there is none.
#[cfg(not(target_arch = "wasm32"))]
pub async fn native_device() -> Result<(wgpu::Device, wgpu::Queue, wgpu::AdapterInfo)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = match wgpu::util::initialize_adapter_from_env(&instance, None).await {
        Ok(a) => a,
        Err(_) => instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| TillerError::Gpu(format!("no GPU adapter was found ({e})")))?,
    };
    let info = adapter.get_info();
    let (device, queue) = request_device(&adapter).await?;
    Ok((device, queue, info))
}

/// "llvmpipe (LLVM 19.1.7, 256 bits) via Vulkan"
pub fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    let mut s = info.name.clone();
    if !info.driver_info.is_empty() && !s.contains(&info.driver_info) {
        s = format!("{s} ({})", info.driver_info);
    }
    format!("{s} via {:?}", info.backend)
}
