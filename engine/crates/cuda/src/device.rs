//! Finding a usable GPU. Every failure is a [`CudaError`] with the reason; nothing here
//! panics (the bindings' own panics, e.g. a missing driver symbol, are caught).

use crate::error::{CudaError, Result};
use serde::Serialize;

/// What the engine needs to know about the GPU it will use.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name (e.g. "NVIDIA H100 80GB HBM3").
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Total device memory in bytes.
    pub total_bytes: usize,
    /// Free device memory in bytes at probe time.
    pub free_bytes: usize,
    /// Streaming multiprocessors.
    pub sm_count: i32,
    /// Driver API version (e.g. 13000).
    pub driver_version: i32,
}

/// Runs `f`, turning a panic into [`CudaError::Panicked`].
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(CudaError::Panicked(format!("{what}: {msg}")))
        }
    }
}

/// Probes device `ordinal`: loads the driver, checks NVRTC, reads the device's
/// properties. Without the `cuda` feature: [`CudaError::NotBuilt`].
pub fn probe(ordinal: usize) -> Result<DeviceInfo> {
    #[cfg(feature = "cuda")]
    {
        no_panic("probe", || crate::gpu::probe(ordinal))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(CudaError::NotBuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors() {
        let r: Result<()> = no_panic("x", || panic!("missing symbol cuFoo"));
        assert!(matches!(r, Err(CudaError::Panicked(m)) if m.contains("cuFoo")));
        assert_eq!(no_panic("y", || Ok(3)).unwrap(), 3);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_the_reason_is_the_build() {
        assert!(matches!(probe(0), Err(CudaError::NotBuilt)));
    }
}
