//! Sizing the VRAM expert arena: one allocation of whole slots, shrunk step by step when
//! the device runs out of memory, refused with a clear error below a minimum.

use crate::error::{CudaError, Result};

/// Fraction of the free memory the arena may take on its first try: the rest is left for
/// the kernels' scratch buffers, the dense weights and the driver.
pub const FREE_FRACTION: f64 = 0.92;
/// Each failed allocation retries with this fraction of the previous slot count.
pub const SHRINK: f64 = 0.75;

/// What the arena asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaRequest {
    /// Bytes per slot (the largest expert).
    pub slot_bytes: usize,
    /// Slots wanted (from the VRAM budget).
    pub want_slots: usize,
    /// Fewest slots worth having (below it, refuse).
    pub min_slots: usize,
}

/// How the arena came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaOutcome<T> {
    /// The allocation.
    pub alloc: T,
    /// Slots it holds.
    pub slots: usize,
    /// Warnings to log (each shrink, with the reason).
    pub warnings: Vec<String>,
}

/// Slot counts to try, largest first: the budget clamped to the free memory, then
/// shrinking by [`SHRINK`] down to `min_slots`.
pub fn attempts(req: &ArenaRequest, free_bytes: usize) -> Vec<usize> {
    let slot = req.slot_bytes.max(1);
    let fit = ((free_bytes as f64 * FREE_FRACTION) as usize) / slot;
    let mut n = req.want_slots.min(fit.max(req.min_slots));
    let mut out = Vec::new();
    while n >= req.min_slots.max(1) {
        out.push(n);
        let next = ((n as f64) * SHRINK) as usize;
        if next >= n || next < req.min_slots {
            if n > req.min_slots && req.min_slots > 0 {
                out.push(req.min_slots);
            }
            break;
        }
        n = next;
    }
    out
}

/// Allocates the arena through `alloc(bytes)`, which returns `Ok(None)` for an
/// out-of-memory failure and `Err` for any other failure (not retried).
pub fn allocate<T>(
    req: &ArenaRequest,
    free_bytes: usize,
    total_bytes: usize,
    mut alloc: impl FnMut(usize) -> Result<Option<T>>,
) -> Result<ArenaOutcome<T>> {
    let mut warnings = Vec::new();
    let tries = attempts(req, free_bytes);
    if let Some(&first) = tries.first() {
        if first < req.want_slots {
            warnings.push(format!(
                "VRAM budget asks for {} expert slots ({} MiB) but only {} MiB are free: trying {} slots",
                req.want_slots,
                (req.want_slots * req.slot_bytes) >> 20,
                free_bytes >> 20,
                first
            ));
        }
    }
    let mut last = 0;
    for (i, &n) in tries.iter().enumerate() {
        last = n * req.slot_bytes;
        if let Some(a) = alloc(last)? {
            return Ok(ArenaOutcome {
                alloc: a,
                slots: n,
                warnings,
            });
        }
        if let Some(&next) = tries.get(i + 1) {
            warnings.push(format!(
                "out of GPU memory allocating {n} expert slots ({} MiB): shrinking the expert cache to {next} slots",
                last >> 20
            ));
        }
    }
    Err(CudaError::OutOfMemory {
        min_slots: req.min_slots,
        slot_bytes: req.slot_bytes,
        tried_bytes: last,
        free_bytes,
        total_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    #[test]
    fn budget_within_free_memory_is_taken_whole() {
        let req = ArenaRequest {
            slot_bytes: 3 * MB,
            want_slots: 100,
            min_slots: 8,
        };
        let out = allocate(&req, 10_000 * MB, 80_000 * MB, |b| Ok(Some(b))).unwrap();
        assert_eq!((out.slots, out.alloc), (100, 300 * MB));
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn out_of_memory_shrinks_with_warnings() {
        let req = ArenaRequest {
            slot_bytes: MB,
            want_slots: 1000,
            min_slots: 8,
        };
        // The device really has room for 400 slots though it claims 2000 MiB free.
        let out = allocate(&req, 2000 * MB, 4000 * MB, |b| {
            Ok((b <= 400 * MB).then_some(b))
        })
        .unwrap();
        assert!(out.slots <= 400 && out.slots >= 300, "{}", out.slots);
        assert!(out.warnings.iter().any(|w| w.contains("shrinking")));
    }

    #[test]
    fn budget_beyond_free_memory_is_clamped_first() {
        let req = ArenaRequest {
            slot_bytes: MB,
            want_slots: 1_000_000,
            min_slots: 8,
        };
        let tries = attempts(&req, 1000 * MB);
        assert_eq!(tries[0], 920);
        assert_eq!(*tries.last().unwrap(), 8);
        assert!(tries.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn refuses_below_the_minimum_with_the_numbers() {
        let req = ArenaRequest {
            slot_bytes: MB,
            want_slots: 64,
            min_slots: 8,
        };
        let err = allocate::<usize>(&req, 100 * MB, 100 * MB, |_| Ok(None)).unwrap_err();
        match err {
            CudaError::OutOfMemory {
                min_slots,
                tried_bytes,
                ..
            } => {
                assert_eq!((min_slots, tried_bytes), (8, 8 * MB));
            }
            e => panic!("{e}"),
        }
        // Other driver errors are not retried.
        let mut calls = 0;
        let r = allocate::<usize>(&req, 100 * MB, 100 * MB, |_| {
            calls += 1;
            Err(CudaError::NoDevice)
        });
        assert!(matches!(r, Err(CudaError::NoDevice)) && calls == 1);
    }
}
