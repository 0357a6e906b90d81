//! AMX-INT8 GEMM for Q8_0 weights × Q8_0 activations (many tokens), and the prefill
//! dispatch ([`DotKernel::gemm_prefill_unchecked`]) that picks it only where it can
//! run: AMX-INT8 usable by this process (CPUID, XCR0, Linux permission and a forked
//! probe, see `amx_detect`), not switched off (`HMOE_AMX=0`), Q8_0 weights, an
//! AVX-512 kernel level and at least [`amx_min_tokens`] tokens. Everything else takes
//! the AVX-512/AVX2 kernels ([`DotKernel::gemm_unchecked`]).
//!
//! Layout (one `tdpbssd` = one Q8_0 block of 16 tokens × 16 weight rows):
//! - A (16 rows × 32 B): the block's int8 values of 16 tokens, straight from the
//!   activation rows when they lie at one stride, else from a staging copy.
//! - B (8 rows × 64 B, VNNI): `B[k][4n + j] = w_n[4k + j]`, the block's values of 16
//!   weight rows, packed once per call and slab of 64 blocks (`amx_kernel::SLAB`).
//! - C (16 × 16 int32) = `Σ_k x_t[k]·w_n[k]`, exact; stored, converted to f32 and
//!   accumulated as `acc[t][n] += C[t][n] · d_w[n] · d_x[t]` (AVX-512).
//!
//! Padding: a short token group (< 16) is staged with its missing rows, a short row
//! group (< 16 weight rows) packed with zero columns; their results are not written.

use super::{DotKernel, Isa};
use crate::act::ActRow;
use crate::{row_bytes, GgmlDType, QuantError};
use std::sync::atomic::{AtomicBool, Ordering};

/// Tokens from which a Q8_0 GEMM call uses AMX: one full A tile (16 tokens). Below,
/// a padded tile wastes most of the tile unit (a guess until timed on AMX hardware:
/// `cpu-bench --amx`); the decode path (1 token) never gets here.
pub const AMX_MIN_TOKENS: usize = 16;

/// [`AMX_MIN_TOKENS`], or the `HMOE_AMX_MIN_TOKENS` environment variable (read once;
/// at least 1) so that the threshold can be tuned on AMX hardware without a rebuild.
pub fn amx_min_tokens() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| match std::env::var("HMOE_AMX_MIN_TOKENS") {
        Ok(v) => v.trim().parse().unwrap_or(AMX_MIN_TOKENS).max(1),
        Err(_) => AMX_MIN_TOKENS,
    })
}

/// Process-wide switch for benchmarks comparing AMX with AVX-512 in one run (the
/// `HMOE_AMX` variable is the user's switch; this one cannot turn AMX on where it is
/// unusable).
static RUNTIME_ON: AtomicBool = AtomicBool::new(true);

/// Turns the AMX prefill kernels on or off for the whole process (benchmarks); has
/// no effect where [`super::amx_detect::amx_int8_usable`] is false.
pub fn set_amx_enabled(on: bool) {
    RUNTIME_ON.store(on, Ordering::Relaxed);
}

/// Which kernel a many-token GEMM call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// The AMX-INT8 tile kernel (Q8_0).
    AmxInt8,
    /// The SIMD kernels of the kernel's level ([`DotKernel::gemm_unchecked`]).
    Simd,
}

impl DotKernel {
    /// Whether this kernel's type and level could take the AMX path at all (ignoring
    /// the CPU): Q8_0 weights at an AVX-512 level.
    fn amx_kind(&self) -> bool {
        self.dtype == GgmlDType::Q8_0 && matches!(self.isa, Isa::Avx512 | Isa::Avx512Bf16)
    }

    /// The kernel [`DotKernel::gemm_prefill_unchecked`] uses for `tokens` activation
    /// rows on this CPU and process.
    pub fn gemm_path(&self, tokens: usize) -> GemmPath {
        if self.amx_kind()
            && tokens >= amx_min_tokens()
            && RUNTIME_ON.load(Ordering::Relaxed)
            && super::amx_detect::amx_int8_usable()
        {
            GemmPath::AmxInt8
        } else {
            GemmPath::Simd
        }
    }

    /// [`DotKernel::gemm_unchecked`], through the AMX kernel where
    /// [`DotKernel::gemm_path`] says so.
    ///
    /// # Safety
    /// As for [`DotKernel::gemm_unchecked`].
    pub unsafe fn gemm_prefill_unchecked(
        &self,
        w: &[u8],
        rows: usize,
        acts: &[ActRow<'_>],
        out: &mut [f32],
        rs: usize,
        ts: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.gemm_path(acts.len()) == GemmPath::AmxInt8 {
            if let Some(mut u) = super::amx_tiles::Amx::new() {
                // SAFETY: AMX usable (Amx exists), AVX-512 level (amx_kind), shapes
                // from the caller.
                unsafe { super::amx_kernel::q8_0_gemm(&mut u, w, rows, acts, out, rs, ts) };
                return;
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.gemm_unchecked(w, rows, acts, out, rs, ts) }
    }

    /// [`DotKernel::gemm`] on the AMX kernel whatever the token count (tests and
    /// benchmarks); an error when the kernel is not Q8_0 at an AVX-512 level or AMX-INT8
    /// is not usable here.
    pub fn gemm_amx(
        &self,
        w: &[u8],
        rows: usize,
        acts: &[ActRow<'_>],
        out: &mut [f32],
        rs: usize,
        ts: usize,
    ) -> Result<(), QuantError> {
        if !self.amx_kind() {
            return Err(QuantError::Unsupported(self.dtype));
        }
        check_shapes(self, w, rows, acts, out, rs, ts)?;
        #[cfg(target_arch = "x86_64")]
        {
            let mut u =
                super::amx_tiles::Amx::new().ok_or(QuantError::IsaUnavailable("amx-int8"))?;
            // SAFETY: AMX usable, AVX-512 level, shapes checked above.
            unsafe { super::amx_kernel::q8_0_gemm(&mut u, w, rows, acts, out, rs, ts) };
            Ok(())
        }
        #[cfg(not(target_arch = "x86_64"))]
        Err(QuantError::IsaUnavailable("amx-int8"))
    }
}

/// The checks of [`DotKernel::gemm`].
pub(super) fn check_shapes(
    k: &DotKernel,
    w: &[u8],
    rows: usize,
    acts: &[ActRow<'_>],
    out: &[f32],
    rs: usize,
    ts: usize,
) -> Result<(), QuantError> {
    let n = acts.first().map(|a| a.len()).unwrap_or(0);
    for a in acts {
        if a.format() != k.act {
            return Err(QuantError::ActFormat {
                dtype: k.dtype,
                expected: k.act,
                got: a.format(),
            });
        }
        if a.len() != n {
            return Err(QuantError::Length {
                what: "activation rows of one gemm call",
                expected: n,
                got: a.len(),
            });
        }
    }
    let expected = row_bytes(k.dtype, n)?.saturating_mul(rows);
    if w.len() != expected {
        return Err(QuantError::ByteLength {
            dtype: k.dtype,
            n,
            expected,
            got: w.len(),
        });
    }
    if rows > 0 && !acts.is_empty() {
        let last = (rows - 1).checked_mul(rs).and_then(|a| {
            (acts.len() - 1)
                .checked_mul(ts)
                .and_then(|b| a.checked_add(b))
        });
        if !matches!(last, Some(l) if l < out.len()) {
            return Err(QuantError::Length {
                what: "gemm output (last index + 1)",
                expected: usize::MAX,
                got: out.len(),
            });
        }
    }
    Ok(())
}
