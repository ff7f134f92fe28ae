//! Reading GPU buffers back without blocking the browser: `map_async`'s callback completes a
//! small oneshot future. Natively the device is polled to completion first, so the future is
//! ready when awaited; on wasm the browser runs the callback and the await yields until then.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tiller_core::{Result, TillerError};

struct Slot<T> {
    value: Option<T>,
    closed: bool,
    waker: Option<Waker>,
}

struct Sender<T>(Arc<Mutex<Slot<T>>>);
struct Receiver<T>(Arc<Mutex<Slot<T>>>);

fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot { value: None, closed: false, waker: None }));
    (Sender(slot.clone()), Receiver(slot))
}

impl<T> Sender<T> {
    fn send(self, value: T) {
        if let Ok(mut s) = self.0.lock() {
            s.value = Some(value);
        }
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = match self.0.lock() {
            Ok(mut s) => {
                s.closed = true;
                s.waker.take()
            }
            Err(_) => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    /// `None` when the sender went away without sending (the device was lost).
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Ok(mut s) = self.0.lock() else { return Poll::Ready(None) };
        if let Some(v) = s.value.take() {
            return Poll::Ready(Some(v));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Maps the first `size` bytes of a `MAP_READ` buffer, copies them out and unmaps it.
pub async fn map_read(device: &wgpu::Device, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
    if size == 0 {
        return Ok(Vec::new());
    }
    let (tx, rx) = oneshot();
    buffer.map_async(wgpu::MapMode::Read, ..size, move |r| tx.send(r));
    #[cfg(not(target_arch = "wasm32"))]
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| TillerError::Gpu(format!("waiting for the GPU failed: {e}")))?;
    #[cfg(target_arch = "wasm32")]
    let _ = device;
    match rx.await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(TillerError::Gpu(format!("reading results back failed: {e}"))),
        None => return Err(TillerError::Gpu("reading results back failed: the GPU device was lost".into())),
    }
    let bytes = buffer.get_mapped_range(..size).map_err(|e| TillerError::Gpu(format!("reading results back failed: {e}")))?.to_vec();
    buffer.unmap();
    Ok(bytes)
}

/// Copies `size` bytes of a `COPY_SRC` buffer to a fresh staging buffer and reads them.
/// For tests and occasional reads; the engine reuses its own staging buffers.
pub async fn read_buffer(device: &wgpu::Device, queue: &wgpu::Queue, src: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("tiller readback"),
        size: size.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tiller readback") });
    encoder.copy_buffer_to_buffer(src, 0, &staging, 0, size);
    queue.submit([encoder.finish()]);
    map_read(device, &staging, size).await
}

/// [`read_buffer`] as f32s.
pub async fn read_f32(device: &wgpu::Device, queue: &wgpu::Queue, src: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    let bytes = read_buffer(device, queue, src, len as u64 * 4).await?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}
