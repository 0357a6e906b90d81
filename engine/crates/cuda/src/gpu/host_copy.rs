//! Large host copies between the engine's buffers and the pinned staging buffers, split
//! over threads. A prefill call of the dense path stages 4 MB in (the residual) and
//! 8.5 MB out (residual, normed state, router logits) per 512-row layer; one core copies
//! ~5 GB/s on the GPU machine (the profile's 0.8-0.9 ms `prepare` of a 4 MB upload), and
//! the GPU idles meanwhile. With the engine's CPU pool (idle while the dense path runs)
//! its parked workers take the parts; without one, scoped threads do (measured on the
//! GPU machine: 559 µs for 4 MB and 1049 µs for 8.5 MB on 8 fresh threads: starting
//! them costs about as much as the copy saves). Decode-sized copies stay on the calling
//! thread.

use hmoe_cpu::CpuPool;

/// Copies of fewer bytes stay on the calling thread (a thread costs ~10-20 µs to start).
const PAR_MIN_BYTES: usize = 1 << 20;
/// Bytes per thread at least.
const PAR_PART_BYTES: usize = 512 << 10;
/// Threads per copy at most (the caller's included): the copy is memory-bound and the
/// CPU expert pool is idle while the dense path waits for these buffers.
const PAR_MAX_THREADS: usize = 8;

/// A destination shared by the pool's workers, each writing its own part.
#[derive(Clone, Copy)]
struct Dst(*mut u8);
// SAFETY: the workers write disjoint ranges of one live `&mut [u8]` (see `pool_copy`).
unsafe impl Send for Dst {}
// SAFETY: as above.
unsafe impl Sync for Dst {}

impl Dst {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not its field).
    fn at(self, offset: usize) -> *mut u8 {
        self.0.wrapping_add(offset)
    }
}

/// `dst.copy_from_slice(src)`, on several threads for large copies: `pool`'s when given.
///
/// Panics (as `copy_from_slice`) when the lengths differ: the callers slice both sides
/// from one layout.
pub(crate) fn par_copy(pool: Option<&CpuPool>, dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "par_copy: length mismatch");
    let n = dst.len();
    if n < PAR_MIN_BYTES {
        dst.copy_from_slice(src);
        return;
    }
    if let Some(pool) = pool.filter(|p| p.threads() > 1) {
        if pool_copy(pool, dst, src) {
            return;
        }
    }
    let threads = threads_for(n);
    if threads < 2 {
        dst.copy_from_slice(src);
        return;
    }
    // Parts of whole cache lines, so no two threads write one line.
    let part = n.div_ceil(threads).next_multiple_of(64);
    std::thread::scope(|s| {
        let mut parts = dst.chunks_mut(part).zip(src.chunks(part));
        let mine = parts.next();
        for (d, from) in parts {
            s.spawn(move || d.copy_from_slice(from));
        }
        if let Some((d, from)) = mine {
            d.copy_from_slice(from);
        }
    });
}

/// Copies on `pool`'s threads, one part each (parts of whole cache lines). False when the
/// pool could not take the job (called from inside one of its jobs): nothing was copied.
fn pool_copy(pool: &CpuPool, dst: &mut [u8], src: &[u8]) -> bool {
    let n = dst.len();
    let parts = (n / PAR_PART_BYTES).clamp(1, pool.threads());
    let part = n.div_ceil(parts).next_multiple_of(64);
    let d = Dst(dst.as_mut_ptr());
    pool.broadcast(|i, _| {
        let lo = (i * part).min(n);
        let hi = ((i + 1) * part).min(n);
        if lo < hi {
            // SAFETY: [lo, hi) lies inside `dst` (n bytes), and the ranges of different
            // `i` are disjoint; `dst` is borrowed mutably for the whole broadcast, which
            // returns only after every worker finished.
            let out = unsafe { std::slice::from_raw_parts_mut(d.at(lo), hi - lo) };
            out.copy_from_slice(&src[lo..hi]);
        }
    })
    .is_ok()
}

/// Fills `out` from the little-endian f32 bytes at the start of `b` (which holds at
/// least `4 × out.len()` bytes), on `pool`'s threads when large.
pub(crate) fn floats_from(pool: Option<&CpuPool>, b: &[u8], out: &mut [f32]) {
    let len = std::mem::size_of_val(out);
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and no invalid bit patterns; the slice covers
        // exactly `out`'s memory.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, len) };
        par_copy(pool, dst, &b[..len]);
    }
    #[cfg(not(target_endian = "little"))]
    for (o, c) in out.iter_mut().zip(b[..len].chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Threads for a copy of `n` bytes (1: the calling thread alone).
fn threads_for(n: usize) -> usize {
    if n < PAR_MIN_BYTES {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    (n / PAR_PART_BYTES).clamp(1, PAR_MAX_THREADS.min(cores))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    #[test]
    fn copies_every_byte_at_sizes_around_the_thresholds() {
        for n in [
            0,
            1,
            63,
            PAR_MIN_BYTES - 1,
            PAR_MIN_BYTES,
            PAR_MIN_BYTES + 65,
            4 * PAR_MIN_BYTES + 3,
            (PAR_MAX_THREADS + 3) * PAR_PART_BYTES + 17,
        ] {
            let src = pattern(n, n as u32);
            let mut dst = vec![0xA5u8; n];
            par_copy(None, &mut dst, &src);
            assert!(dst == src, "{n} bytes");
        }
    }

    #[test]
    fn a_pool_copies_every_byte_and_a_busy_pool_falls_back() {
        for threads in [1usize, 3, 4] {
            let pool = CpuPool::with_threads(threads).expect("pool");
            for n in [
                PAR_MIN_BYTES,
                PAR_MIN_BYTES + 65,
                (threads + 5) * PAR_PART_BYTES + 17,
            ] {
                let src = pattern(n, 3 * n as u32);
                let mut dst = vec![0x5Au8; n];
                par_copy(Some(&pool), &mut dst, &src);
                assert!(dst == src, "{threads} threads, {n} bytes");
            }
        }
        // From inside a job of the pool, the pool cannot take another: the copy still
        // happens (on scoped threads).
        let pool = CpuPool::with_threads(2).expect("pool");
        let n = 2 * PAR_MIN_BYTES + 5;
        let src = pattern(n, 11);
        let ok = std::sync::atomic::AtomicBool::new(false);
        pool.broadcast(|i, _| {
            if i == 0 {
                let mut dst = vec![0u8; n];
                par_copy(Some(&pool), &mut dst, &src);
                ok.store(dst == src, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .expect("outer job");
        assert!(ok.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[test]
    fn small_copies_stay_on_the_calling_thread_and_large_ones_split() {
        assert_eq!(threads_for(PAR_MIN_BYTES - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        assert_eq!(threads_for(64 * PAR_PART_BYTES), PAR_MAX_THREADS.min(cores));
        assert!(threads_for(PAR_MIN_BYTES) <= 2);
    }

    #[test]
    fn floats_from_reads_little_endian_values_and_ignores_trailing_bytes() {
        let vals: Vec<f32> = (0..(PAR_MIN_BYTES / 4 + 7))
            .map(|i| i as f32 * 0.5 - 3.0)
            .collect();
        let mut b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        b.extend_from_slice(&[1, 2, 3, 4, 5]);
        let mut out = vec![0f32; vals.len()];
        floats_from(None, &b, &mut out);
        assert_eq!(out, vals);
    }

    #[test]
    #[should_panic(expected = "length mismatch")]
    fn a_length_mismatch_is_a_bug_not_a_silent_partial_copy() {
        par_copy(None, &mut [0u8; 4], &[0u8; 3]);
    }
}
