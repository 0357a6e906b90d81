//! The tile unit as the Q8_0 AMX kernel uses it: one fixed palette-1 configuration
//! (C = 16 × 16 int32, A = 16 rows × 32 int8, B = 8 rows × 64 int8 in the VNNI
//! layout), a [`TileUnit`] trait with the six tile operations, their hardware
//! implementation ([`Amx`], inline `asm!`: Rust's AMX intrinsics and target features
//! are unstable on 1.95) and, for tests, an emulation that follows the ISA
//! reference's pseudo-code, so that the kernel's data layout is tested on machines
//! without AMX.

use core::arch::asm;

/// Tile registers the kernel uses (all eight): four accumulators (two block pairs,
/// double-buffered), two A and two B tiles (one block pair).
pub(super) const C0: u8 = 0;
pub(super) const C1: u8 = 1;
pub(super) const A0: u8 = 2;
pub(super) const A1: u8 = 3;
pub(super) const B0: u8 = 4;
pub(super) const B1: u8 = 5;
pub(super) const C2: u8 = 6;
pub(super) const C3: u8 = 7;

/// Rows of A and C: tokens per tile (the maximum a tile holds).
pub(super) const TM: usize = 16;
/// Bytes of K per tile multiplication: one Q8_0 block (32 values). Q8_0 has one scale
/// per 32 values, so an int32 result can be scaled only once per block; a 64-byte K
/// would add two blocks with different scales into one sum that cannot be separated.
pub(super) const TK: usize = 32;
/// Columns of C: weight rows per tile (16 int32 = 64 bytes, the maximum).
pub(super) const TN: usize = 16;

/// The 64-byte `ldtilecfg` operand (palette 1).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TileConfig {
    pub(super) palette: u8,
    pub(super) start_row: u8,
    pub(super) reserved: [u8; 14],
    /// Bytes per row of tiles 0..15.
    pub(super) colsb: [u16; 16],
    /// Rows of tiles 0..15 (palette 1 has 8 tiles; 8..15 must stay 0).
    pub(super) rows: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<TileConfig>() == 64);

impl TileConfig {
    /// The kernel's configuration: C0..C3 16 × 64 B, A0/A1 16 × 32 B, B0/B1 8 × 64 B.
    pub(super) fn q8_0() -> Self {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        let mut set = |t: u8, rows: usize, colsb: usize| {
            c.colsb[t as usize] = colsb as u16;
            c.rows[t as usize] = rows as u8;
        };
        for t in [C0, C1, C2, C3] {
            set(t, TM, 4 * TN);
        }
        set(A0, TM, TK);
        set(A1, TM, TK);
        set(B0, TK / 4, 4 * TN);
        set(B1, TK / 4, 4 * TN);
        c
    }
}

/// The tile operations the kernel needs; `T`, `C`, `A`, `B` are tile register numbers
/// (immediates in the instructions, hence const generics).
pub(super) trait TileUnit {
    /// `ldtilecfg`.
    ///
    /// # Safety
    /// Hardware: AMX must be usable ([`super::amx_detect::amx_int8_usable`]).
    unsafe fn config(&mut self, cfg: &TileConfig);
    /// `tilezero tmmT`.
    ///
    /// # Safety
    /// Configured.
    unsafe fn zero<const T: u8>(&mut self);
    /// `tileloadd tmmT, [p + stride]`: rows × colsb bytes, row i at `p + i * stride`.
    ///
    /// # Safety
    /// Configured; every row readable.
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize);
    /// `tilestored [p + stride], tmmT`.
    ///
    /// # Safety
    /// Configured; every row writable.
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize);
    /// `tdpbssd tmmC, tmmA, tmmB`: C += A · B, signed int8 × signed int8 → int32.
    ///
    /// # Safety
    /// Configured with compatible shapes.
    unsafe fn dpbssd<const C: u8, const A: u8, const B: u8>(&mut self);
    /// `tilerelease`.
    ///
    /// # Safety
    /// Hardware: AMX usable.
    unsafe fn release(&mut self);
}

/// The hardware tile unit. Constructed only by [`Amx::new`], which checks that AMX
/// is usable: no tile instruction is reachable otherwise.
pub(super) struct Amx(());

impl Amx {
    /// `Some` only when AMX-INT8 is usable by this process.
    pub(super) fn new() -> Option<Self> {
        super::amx_detect::amx_int8_usable().then_some(Amx(()))
    }
}

impl TileUnit for Amx {
    #[inline(always)]
    unsafe fn config(&mut self, cfg: &TileConfig) {
        // SAFETY: `Amx` exists only when tiles are usable; `cfg` is 64 readable bytes.
        unsafe {
            asm!("ldtilecfg [{c}]", c = in(reg) cfg as *const TileConfig, options(nostack, readonly))
        };
    }
    #[inline(always)]
    unsafe fn zero<const T: u8>(&mut self) {
        // SAFETY: configured (caller).
        unsafe { asm!("tilezero tmm{t}", t = const T, options(nostack, nomem)) };
    }
    #[inline(always)]
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize) {
        // SAFETY: configured, rows readable (caller).
        unsafe {
            asm!("tileloadd tmm{t}, [{p} + {s} * 1]", t = const T, p = in(reg) p, s = in(reg) stride,
                options(nostack, readonly))
        };
    }
    #[inline(always)]
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize) {
        // SAFETY: configured, rows writable (caller).
        unsafe {
            asm!("tilestored [{p} + {s} * 1], tmm{t}", t = const T, p = in(reg) p, s = in(reg) stride,
                options(nostack))
        };
    }
    #[inline(always)]
    unsafe fn dpbssd<const C: u8, const A: u8, const B: u8>(&mut self) {
        // SAFETY: configured with the shapes of `TileConfig::q8_0` (caller).
        unsafe {
            asm!("tdpbssd tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
                options(nostack, nomem))
        };
    }
    #[inline(always)]
    unsafe fn release(&mut self) {
        // SAFETY: `Amx` exists only when tiles are usable.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Deterministic probe data: A and B bytes cover -128..=127 and both signs.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn probe_bytes(seed: u32, i: usize) -> u8 {
    (i as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(seed)
        .rotate_right(13) as u8
}

/// One C = A·B on the tile unit, checked against the scalar formula: run by the
/// detection in a forked child (no allocation, stack memory only). `true` when every
/// element matches.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) fn probe() -> bool {
    #[repr(C, align(64))]
    struct Buf([u8; 1024]);
    let mut a = Buf([0; 1024]);
    let mut b = Buf([0; 1024]);
    let mut c = Buf([0; 1024]);
    for i in 0..TM * TK {
        a.0[i] = probe_bytes(1, i);
    }
    for i in 0..TK / 4 * 4 * TN {
        b.0[i] = probe_bytes(7, i);
    }
    // The probe's own status check (it runs before amx_status is cached): the caller
    // already obtained the permission; construct the unit directly.
    let mut u = Amx(());
    // SAFETY: called only from `detect` after the CPUID, XCR0 and permission checks,
    // in a child process whose crash is contained; buffers are 1 KB each, larger than
    // every tile (16 × 64 B at most) with strides of one row.
    unsafe {
        u.config(&TileConfig::q8_0());
        u.zero::<C0>();
        u.load::<A0>(a.0.as_ptr(), TK);
        u.load::<B0>(b.0.as_ptr(), 4 * TN);
        u.dpbssd::<C0, A0, B0>();
        u.store::<C0>(c.0.as_mut_ptr(), 4 * TN);
        u.release();
    }
    let mut want = [[0i32; TN]; TM];
    reference_dpbssd(&a.0, TK, &b.0, 4 * TN, &mut want);
    (0..TM).all(|m| {
        (0..TN).all(|n| {
            let o = 4 * (m * TN + n);
            i32::from_le_bytes([c.0[o], c.0[o + 1], c.0[o + 2], c.0[o + 3]]) == want[m][n]
        })
    })
}

/// The scalar definition of one full-shape `tdpbssd` (A 16 × 32 B at row stride
/// `sa`, B 8 × 64 B at row stride `sb`, VNNI layout): `c[m][n] += Σ_k Σ_j
/// A[m][4k + j] · B[k][4n + j]`, wrapping like the hardware's int32 adds.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) fn reference_dpbssd(a: &[u8], sa: usize, b: &[u8], sb: usize, c: &mut [[i32; TN]; TM]) {
    for (m, cm) in c.iter_mut().enumerate() {
        for (n, cmn) in cm.iter_mut().enumerate() {
            let mut s = *cmn;
            for k in 0..TK / 4 {
                for j in 0..4 {
                    let x = a[m * sa + 4 * k + j] as i8 as i32;
                    let y = b[k * sb + 4 * n + j] as i8 as i32;
                    s = s.wrapping_add(x * y);
                }
            }
            *cmn = s;
        }
    }
}

/// A software tile unit for tests: eight 1 KB tiles, shapes taken from the loaded
/// configuration exactly as the hardware does, with the ISA's shape constraints
/// checked (a kernel that violates them would fault or compute garbage on hardware).
#[cfg(test)]
pub(super) struct Emulated {
    cfg: Option<TileConfig>,
    tiles: [[u8; 1024]; 8],
    /// Tile operations executed, for tests that check the kernel's schedule.
    pub(super) ops: usize,
}

#[cfg(test)]
impl Emulated {
    pub(super) fn new() -> Self {
        Emulated {
            cfg: None,
            tiles: [[0; 1024]; 8],
            ops: 0,
        }
    }
    fn shape(&self, t: u8) -> (usize, usize) {
        let cfg = self
            .cfg
            .as_ref()
            .expect("tile instruction before ldtilecfg");
        assert!(t < 8, "palette 1 has 8 tiles");
        let (r, c) = (
            cfg.rows[t as usize] as usize,
            cfg.colsb[t as usize] as usize,
        );
        assert!(
            r > 0 && r <= 16 && c > 0 && c <= 64,
            "tile {t} not configured"
        );
        (r, c)
    }
}

#[cfg(test)]
impl TileUnit for Emulated {
    unsafe fn config(&mut self, cfg: &TileConfig) {
        assert_eq!(cfg.palette, 1);
        assert!(cfg.rows[8..].iter().all(|&r| r == 0));
        assert!(cfg.colsb[8..].iter().all(|&c| c == 0));
        self.cfg = Some(*cfg);
        self.tiles = [[0; 1024]; 8];
        self.ops += 1;
    }
    unsafe fn zero<const T: u8>(&mut self) {
        self.shape(T);
        self.tiles[T as usize] = [0; 1024];
        self.ops += 1;
    }
    unsafe fn load<const T: u8>(&mut self, p: *const u8, stride: usize) {
        let (r, c) = self.shape(T);
        let t = &mut self.tiles[T as usize];
        *t = [0; 1024];
        for i in 0..r {
            // SAFETY: the caller guarantees every row readable, as for the hardware.
            let row = unsafe { core::slice::from_raw_parts(p.add(i * stride), c) };
            t[i * 64..i * 64 + c].copy_from_slice(row);
        }
        self.ops += 1;
    }
    unsafe fn store<const T: u8>(&mut self, p: *mut u8, stride: usize) {
        let (r, c) = self.shape(T);
        let t = &self.tiles[T as usize];
        for i in 0..r {
            // SAFETY: the caller guarantees every row writable, as for the hardware.
            let row = unsafe { core::slice::from_raw_parts_mut(p.add(i * stride), c) };
            row.copy_from_slice(&t[i * 64..i * 64 + c]);
        }
        self.ops += 1;
    }
    unsafe fn dpbssd<const C: u8, const A: u8, const B: u8>(&mut self) {
        let ((cr, cc), (ar, ac), (br, bc)) = (self.shape(C), self.shape(A), self.shape(B));
        // The ISA's #UD conditions for tdpbssd shapes.
        assert!(C != A && C != B && A != B, "tdpbssd operands must differ");
        assert_eq!(cr, ar, "C rows != A rows");
        assert_eq!(cc, bc, "C colsb != B colsb");
        assert_eq!(ac, 4 * br, "A colsb != 4 × B rows");
        assert_eq!(cc % 4, 0);
        let (a, b) = (self.tiles[A as usize], self.tiles[B as usize]);
        let c = &mut self.tiles[C as usize];
        for m in 0..cr {
            for n in 0..cc / 4 {
                let o = m * 64 + 4 * n;
                let mut s = i32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
                for k in 0..br {
                    for j in 0..4 {
                        let x = a[m * 64 + 4 * k + j] as i8 as i32;
                        let y = b[k * 64 + 4 * n + j] as i8 as i32;
                        s = s.wrapping_add(x * y);
                    }
                }
                c[o..o + 4].copy_from_slice(&s.to_le_bytes());
            }
        }
        self.ops += 1;
    }
    unsafe fn release(&mut self) {
        self.cfg = None;
        self.ops += 1;
    }
}
