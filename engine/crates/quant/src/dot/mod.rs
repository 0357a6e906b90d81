//! Dot products of one weight row (raw ggml bytes) with one activation row, with
//! runtime dispatch: AVX-512 (F, BW, VL, VNNI; BF16 dot where present), AVX2 + FMA
//! + F16C, or the portable scalar code.

mod amx;
mod amx_detect;
#[cfg(target_arch = "x86_64")]
mod amx_kernel;
#[cfg(all(test, target_arch = "x86_64"))]
mod amx_tests;
#[cfg(target_arch = "x86_64")]
mod amx_tiles;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512q;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm512;
#[cfg(test)]
mod gemm_tests;
#[cfg(target_arch = "x86_64")]
mod q4k_gfni;
#[cfg(target_arch = "x86_64")]
mod q4k_gfni_q6k;
mod scalar;
#[cfg(test)]
mod tests;

pub use amx::{amx_min_tokens, set_amx_enabled, GemmPath, AMX_MIN_TOKENS};
pub use amx_detect::{amx_cpuid, amx_env_enabled, amx_int8_usable, amx_status, AmxStatus};
pub use gemm::{GEMM_TILE_ROWS, GEMM_TILE_TOKENS};

use crate::act::{ActFormat, ActRow};
use crate::{row_bytes, GgmlDType, QuantError};

/// An instruction-set level the kernels can be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no SIMD intrinsics.
    Scalar,
    /// AVX2 + FMA + F16C (Haswell / Zen 1 and later).
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (Ice Lake / Zen 4 and later); BF16 weights via f32 FMA.
    Avx512,
    /// [`Isa::Avx512`] plus AVX512_BF16 (`vdpbf16ps` for BF16 weights).
    Avx512Bf16,
}

impl Isa {
    /// Every level, most capable first.
    pub const ALL: [Isa; 4] = [Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2, Isa::Scalar];

    /// Whether this CPU (and OS) can run the level.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => Isa::Avx512.is_available() && is_x86_feature_detected!("avx512bf16"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The most capable level available here.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// Short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512-vnni",
            Isa::Avx512Bf16 => "avx512-vnni-bf16",
        }
    }
}

type RawDot = unsafe fn(&[u8], &ActRow<'_>) -> f32;
/// `out[t] = w · acts[t]` for exactly N rows (N = table index + 1).
type RawDotN = unsafe fn(&[u8], &[ActRow<'_>], &mut [f32]);

/// Most activation rows one register-blocked kernel call multiplies with a weight row.
pub const MAX_ROWS_PER_CALL: usize = 4;

/// A dot-product kernel for one weight type at one instruction-set level.
#[derive(Clone, Copy)]
pub struct DotKernel {
    dtype: GgmlDType,
    isa: Isa,
    act: ActFormat,
    f: RawDot,
    multi: Option<[RawDotN; MAX_ROWS_PER_CALL]>,
    tiles: Option<gemm::Tiles>,
}

impl std::fmt::Debug for DotKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DotKernel({}, {})", self.dtype, self.isa.name())
    }
}

impl DotKernel {
    /// The kernel for weights of `dtype` at level `isa`; an error when the type is
    /// unsupported or the CPU cannot run `isa`.
    pub fn new(dtype: GgmlDType, isa: Isa) -> Result<Self, QuantError> {
        if !isa.is_available() {
            return Err(QuantError::IsaUnavailable(isa.name()));
        }
        let act = ActFormat::for_weights(dtype)?;
        let f = select(dtype, isa).ok_or(QuantError::Unsupported(dtype))?;
        Ok(DotKernel {
            dtype,
            isa,
            act,
            f,
            multi: select_multi(dtype, isa),
            tiles: select_tiles(dtype, isa),
        })
    }

    /// The kernel for `dtype` at the best level this CPU has.
    pub fn best(dtype: GgmlDType) -> Result<Self, QuantError> {
        Self::new(dtype, Isa::best())
    }

    /// Weight type.
    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }

    /// Instruction-set level.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The activation format this kernel consumes.
    pub fn act_format(&self) -> ActFormat {
        self.act
    }

    /// `Σ w[i]·a[i]` over one row: `w` holds `a.len()` elements of the kernel's type.
    #[inline]
    pub fn dot(&self, w: &[u8], a: &ActRow<'_>) -> Result<f32, QuantError> {
        if a.format() != self.act {
            return Err(QuantError::ActFormat {
                dtype: self.dtype,
                expected: self.act,
                got: a.format(),
            });
        }
        let n = a.len();
        let expected = row_bytes(self.dtype, n)?;
        if w.len() != expected {
            return Err(QuantError::ByteLength {
                dtype: self.dtype,
                n,
                expected,
                got: w.len(),
            });
        }
        // SAFETY: the level is available (checked in `new`), the activation has the
        // kernel's format and `w` holds exactly `a.len()` elements; `ActRow`'s
        // scale arrays match its value count by construction in `ActBuf`.
        Ok(unsafe { (self.f)(w, a) })
    }

    /// Whether this kernel has register-blocked multi-row variants (otherwise
    /// [`DotKernel::dot_rows`] loops over single dots).
    pub fn is_blocked(&self) -> bool {
        self.multi.is_some()
    }

    /// `out[t] = w · acts[t]` for every row, reading each weight block once per
    /// [`MAX_ROWS_PER_CALL`] rows.
    pub fn dot_rows(
        &self,
        w: &[u8],
        acts: &[ActRow<'_>],
        out: &mut [f32],
    ) -> Result<(), QuantError> {
        if out.len() != acts.len() {
            return Err(QuantError::Length {
                what: "dot_rows output",
                expected: acts.len(),
                got: out.len(),
            });
        }
        let n = acts.first().map(|a| a.len()).unwrap_or(0);
        for a in acts {
            if a.format() != self.act {
                return Err(QuantError::ActFormat {
                    dtype: self.dtype,
                    expected: self.act,
                    got: a.format(),
                });
            }
            if a.len() != n {
                return Err(QuantError::Length {
                    what: "activation rows of one dot_rows call",
                    expected: n,
                    got: a.len(),
                });
            }
        }
        let expected = row_bytes(self.dtype, n)?;
        if w.len() != expected {
            return Err(QuantError::ByteLength {
                dtype: self.dtype,
                n,
                expected,
                got: w.len(),
            });
        }
        // SAFETY: all checked above.
        unsafe { self.dot_rows_unchecked(w, acts, out) };
        Ok(())
    }

    /// [`DotKernel::dot_rows`] without the checks.
    ///
    /// # Safety
    /// As for [`DotKernel::dot_unchecked`], for every row; `out.len() == acts.len()`.
    #[inline]
    pub unsafe fn dot_rows_unchecked(&self, w: &[u8], acts: &[ActRow<'_>], out: &mut [f32]) {
        match &self.multi {
            Some(table) => {
                for (a, o) in acts
                    .chunks(MAX_ROWS_PER_CALL)
                    .zip(out.chunks_mut(MAX_ROWS_PER_CALL))
                {
                    // SAFETY: the table entry for a.len() rows takes exactly a.len() rows.
                    unsafe { table[a.len() - 1](w, a, o) };
                }
            }
            None => {
                for (a, o) in acts.iter().zip(out.iter_mut()) {
                    // SAFETY: forwarded from the caller.
                    *o = unsafe { (self.f)(w, a) };
                }
            }
        }
    }

    /// [`DotKernel::dot`] without the per-call checks, for hot loops that validated
    /// the shapes once.
    ///
    /// # Safety
    /// `a` must have the kernel's [`ActFormat`] and `w.len()` must equal
    /// `row_bytes(dtype, a.len())`; `a` must come from an [`crate::ActBuf`].
    #[inline]
    pub unsafe fn dot_unchecked(&self, w: &[u8], a: &ActRow<'_>) -> f32 {
        debug_assert!(self.dot(w, a).is_ok());
        // SAFETY: the caller upholds what `dot` would have checked.
        unsafe { (self.f)(w, a) }
    }
}

/// The GEMM tiles: the Q4_K/Q6_K GFNI kernels where they apply, else `gemm`'s choice.
fn select_tiles(dtype: GgmlDType, isa: Isa) -> Option<gemm::Tiles> {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16) {
        if let Some(t) = q4k_gfni::select_tiles(dtype).or_else(|| q4k_gfni_q6k::select_tiles(dtype))
        {
            return Some(t);
        }
    }
    gemm::select_tiles(dtype, isa)
}

fn select_multi(dtype: GgmlDType, isa: Isa) -> Option<[RawDotN; MAX_ROWS_PER_CALL]> {
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16) {
            return avx512q::select_multi(dtype);
        }
        if isa == Isa::Avx2 {
            return avx2::select_multi(dtype);
        }
    }
    let _ = (dtype, isa);
    None
}

fn select(dtype: GgmlDType, isa: Isa) -> Option<RawDot> {
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16) {
            if dtype == GgmlDType::BF16 && isa == Isa::Avx512Bf16 {
                return Some(avx512::bf16_dp);
            }
            if let Some(f) = avx512::select(dtype) {
                return Some(f);
            }
        }
        if isa != Isa::Scalar {
            if let Some(f) = avx2::select(dtype) {
                return Some(f);
            }
        }
    }
    let _ = isa;
    scalar_select(dtype)
}

/// Unpacks the activation variant a kernel expects; `ActRow` fixes the variant at
/// the `DotKernel::dot` check, so a mismatch here is unreachable and yields 0.
macro_rules! act {
    ($a:expr, F32) => {
        match $a {
            ActRow::F32(v) => *v,
            _ => return 0.0,
        }
    };
    ($a:expr, BF16) => {
        match $a {
            ActRow::BF16(v) => *v,
            _ => return 0.0,
        }
    };
    ($a:expr, Q8_0) => {
        match $a {
            ActRow::Q8_0 { qs, d } => (*qs, *d),
            _ => return 0.0,
        }
    };
    ($a:expr, Q8K) => {
        match $a {
            ActRow::Q8K { qs, d, bsums, .. } => (*qs, *d, *bsums),
            _ => return 0.0,
        }
    };
}
pub(crate) use act;

fn scalar_select(dtype: GgmlDType) -> Option<RawDot> {
    fn f32_(w: &[u8], a: &ActRow<'_>) -> f32 {
        scalar::f32_f32(w, act!(a, F32))
    }
    fn f16_(w: &[u8], a: &ActRow<'_>) -> f32 {
        scalar::f16_f32(w, act!(a, F32))
    }
    fn bf16_(w: &[u8], a: &ActRow<'_>) -> f32 {
        scalar::bf16_bf16(w, act!(a, BF16))
    }
    fn q8_0_(w: &[u8], a: &ActRow<'_>) -> f32 {
        let (qs, d) = act!(a, Q8_0);
        scalar::q8_0(w, qs, d)
    }
    fn q4k_(w: &[u8], a: &ActRow<'_>) -> f32 {
        let (qs, d, bs) = act!(a, Q8K);
        scalar::q4k(w, qs, d, bs)
    }
    fn q5k_(w: &[u8], a: &ActRow<'_>) -> f32 {
        let (qs, d, bs) = act!(a, Q8K);
        scalar::q5k(w, qs, d, bs)
    }
    fn q6k_(w: &[u8], a: &ActRow<'_>) -> f32 {
        let (qs, d, _) = act!(a, Q8K);
        scalar::q6k(w, qs, d)
    }
    Some(match dtype {
        GgmlDType::F32 => f32_,
        GgmlDType::F16 => f16_,
        GgmlDType::BF16 => bf16_,
        GgmlDType::Q8_0 => q8_0_,
        GgmlDType::Q4K => q4k_,
        GgmlDType::Q5K => q5k_,
        GgmlDType::Q6K => q6k_,
        _ => return None,
    })
}
