//! GPU errors as `TillerError::Gpu` sentences instead of wgpu's default (a panic natively, a
//! console line in the browser). Async paths wrap their work in error scopes; an uncaptured
//! error handler on the device catches the rest and the next call reports it.

use std::sync::{Arc, Mutex};

use tiller_core::{Result, TillerError};

pub(crate) const OOM_ADVICE: &str = "out of GPU memory: try a smaller model, fewer cache slots or a shorter max length";

pub(crate) fn describe(e: &wgpu::Error) -> String {
    match e {
        wgpu::Error::OutOfMemory { .. } => OOM_ADVICE.to_string(),
        wgpu::Error::Validation { description, .. } => description.clone(),
        wgpu::Error::Internal { description, .. } => description.clone(),
    }
}

/// Errors the device reported outside any scope.
#[derive(Clone, Default)]
pub(crate) struct ErrorLog(Arc<Mutex<Vec<String>>>);

impl ErrorLog {
    /// Installs this log as the device's uncaptured-error handler (replacing any other).
    pub fn install(device: &wgpu::Device) -> Self {
        let log = Self::default();
        let sink = log.0.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(describe(&e));
            }
        }));
        log
    }

    /// Errs with everything logged so far (and clears it).
    pub fn check(&self, what: &str) -> Result<()> {
        let errors = match self.0.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        };
        match errors.first() {
            None => Ok(()),
            Some(first) => Err(TillerError::Gpu(format!("{what}: {first}"))),
        }
    }
}

/// Out-of-memory and validation scopes around one piece of work.
/// Fields drop in declaration order, and scopes must pop innermost first: `validation` (pushed
/// last) is declared first so an early return unwinds them correctly.
pub(crate) struct Scopes {
    validation: wgpu::ErrorScopeGuard,
    oom: wgpu::ErrorScopeGuard,
}

impl Scopes {
    pub fn push(device: &wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        Self { validation, oom }
    }

    pub async fn pop(self, what: &str) -> Result<()> {
        let Self { oom, validation } = self;
        let invalid = validation.pop().await;
        let oom = oom.pop().await;
        match (oom, invalid) {
            (Some(e), _) | (None, Some(e)) => Err(TillerError::Gpu(format!("{what}: {}", describe(&e)))),
            (None, None) => Ok(()),
        }
    }
}
