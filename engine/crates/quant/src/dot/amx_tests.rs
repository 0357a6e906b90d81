//! The AMX Q8_0 GEMM: its layout (tile configuration, weight packing, activation
//! staging) and the whole kernel on the emulated tile unit, everywhere with AVX-512;
//! on the hardware tile unit where AMX-INT8 is usable (the GPU machine), else a check
//! that the dispatcher falls back.

use super::amx::{amx_min_tokens, GemmPath};
use super::amx_detect::{amx_int8_usable, amx_status};
use super::amx_kernel::{
    a_source, pack_weights, pack_weights_scalar, q8_0_gemm, Packed, Staged, SLAB,
};
use super::amx_tiles::{reference_dpbssd, Emulated, TileConfig, TileUnit, A0, B0, C0, TK, TM, TN};
use super::tests::{random_blocks, random_weights};
use super::{DotKernel, Isa};
use crate::act::{ActBuf, ActFormat, ActRow};
use crate::testutil::{gaussian, Rng};
use crate::{row_bytes, GgmlDType};
use core::mem::MaybeUninit;

/// AMX and the scalar reference compute the same exact int32 block sums (tdpbssd adds
/// int8 products into int32 without saturation, like the scalar loop) and scale them by
/// the same f32 products d_w·d_x; only the order of the f32 additions across blocks
/// differs (and d_w·d_x·sum vs (d_w·d_x)·sum rounding). Error ≤ n_blocks·ε·Σ|terms|;
/// 1e-5 relative to Σ|w·a| covers rows of thousands of values with margin (same
/// bound as the other SIMD kernels vs scalar).
const AMX_VS_REFERENCE_REL: f64 = 1e-5;

/// Row lengths: the model's hidden (2048) and expert FFN (768) widths, an odd block
/// count (37 blocks), one block, and 67 blocks (more than one slab of `SLAB` = 64).
const LENGTHS: [usize; 5] = [2048, 768, 32 * 37, 32, 32 * 67];

fn avx512() -> bool {
    let ok = Isa::Avx512.is_available();
    if !ok {
        eprintln!("note: AMX kernel tests skipped: this CPU lacks AVX-512");
    }
    ok
}

/// `rows` random Q8_0 weight rows of `n` values (quantised Gaussians and raw bytes
/// with every int8 value, -128 included).
fn weights(n: usize, rows: usize, rng: &mut Rng) -> Vec<u8> {
    let mut w = Vec::new();
    for r in 0..rows {
        if r % 2 == 0 {
            w.extend(random_weights(GgmlDType::Q8_0, n, rng.next_u64()));
        } else {
            w.extend(random_blocks(GgmlDType::Q8_0, n, rng));
        }
    }
    w
}

fn acts(n: usize, tokens: usize, rng: &mut Rng) -> ActBuf {
    let mut a = ActBuf::new(ActFormat::Q8_0);
    a.quantize(&gaussian(tokens * n, rng.next_u64(), 1.3), n)
        .unwrap();
    a
}

/// Token rows in buffer order (one stride: the direct A-tile path) or shuffled
/// (the staged path).
fn rows_of<'a>(buf: &'a ActBuf, shuffle: Option<&mut Rng>) -> Vec<ActRow<'a>> {
    let mut idx: Vec<usize> = (0..buf.rows()).collect();
    if let Some(rng) = shuffle {
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.next_u64() as usize % (i + 1));
        }
    }
    idx.into_iter().map(|r| buf.row(r).unwrap()).collect()
}

/// Checks `out` (token-major with a guard column: `out[t * (rows + 1) + r]`) against
/// the scalar kernel, relative to Σ|w·a|.
fn check_out(what: &str, w: &[u8], rows: usize, a: &[ActRow<'_>], out: &[f32]) {
    let scalar = DotKernel::new(GgmlDType::Q8_0, Isa::Scalar).unwrap();
    let rb = w.len() / rows;
    let ts = rows + 1;
    for (t, at) in a.iter().enumerate() {
        let ActRow::Q8_0 { qs, d } = at else {
            panic!("not Q8_0")
        };
        for r in 0..rows {
            let wr = &w[r * rb..(r + 1) * rb];
            let want = scalar.dot(wr, at).unwrap() as f64;
            let mut abs = 0f64;
            for (blk, (wb, xb)) in wr.chunks_exact(34).zip(qs.chunks_exact(32)).enumerate() {
                let dw = half::f16::from_bits(u16::from_le_bytes([wb[0], wb[1]])).to_f32();
                let s: i64 = wb[2..]
                    .iter()
                    .zip(xb)
                    .map(|(&q, &x)| (q as i8 as i64 * x as i64).abs())
                    .sum();
                abs += (dw as f64 * d[blk] as f64).abs() * s as f64;
            }
            let got = out[t * ts + r] as f64;
            let rel = (got - want).abs() / abs.max(1e-30);
            assert!(
                rel <= AMX_VS_REFERENCE_REL,
                "{what}: {rows} rows × {} tokens, n={}: row {r} token {t}: {got} vs {want} (rel {rel:e})",
                a.len(),
                qs.len()
            );
        }
        assert!(
            out[t * ts + rows].is_nan(),
            "{what}: wrote outside the tile"
        );
    }
}

/// Runs the kernel on `unit` for token-major output with a guard column.
fn run_on<U: TileUnit>(unit: &mut U, w: &[u8], rows: usize, a: &[ActRow<'_>]) -> Vec<f32> {
    let mut out = vec![f32::NAN; a.len() * (rows + 1)];
    // SAFETY: Q8_0 rows of one length from one ActBuf, w holds rows × row_bytes,
    // out covers r + t·(rows + 1); AVX-512 checked by the callers.
    unsafe { q8_0_gemm(unit, w, rows, a, &mut out, 1, rows + 1) };
    out
}

#[test]
fn tile_config_bytes_follow_palette_1() {
    let c = TileConfig::q8_0();
    // SAFETY: TileConfig is 64 plain bytes (repr(C), no padding: checked size).
    let b: [u8; 64] = unsafe { core::mem::transmute(c) };
    assert_eq!(b[0], 1, "palette");
    assert_eq!(b[1], 0, "start_row");
    assert!(b[2..16].iter().all(|&x| x == 0), "reserved bytes");
    let colsb = |t: usize| u16::from_le_bytes([b[16 + 2 * t], b[17 + 2 * t]]) as usize;
    let rows = |t: usize| b[48 + t] as usize;
    // C: 16 tokens × 16 int32; A: 16 tokens × one block; B: K/4 rows × 16 dwords.
    for t in [
        C0,
        super::amx_tiles::C1,
        super::amx_tiles::C2,
        super::amx_tiles::C3,
    ] {
        assert_eq!((rows(t as usize), colsb(t as usize)), (TM, 4 * TN));
    }
    for t in [A0, super::amx_tiles::A1] {
        assert_eq!((rows(t as usize), colsb(t as usize)), (TM, TK));
    }
    for t in [B0, super::amx_tiles::B1] {
        assert_eq!((rows(t as usize), colsb(t as usize)), (TK / 4, 4 * TN));
    }
    for t in 8..16 {
        assert_eq!((rows(t), colsb(t)), (0, 0), "tile {t} absent in palette 1");
    }
}

#[test]
fn probe_expectation_matches_emulated_tdpbssd() {
    // The forked probe compares the hardware with `reference_dpbssd`; the emulation
    // (which the kernel tests trust) must agree with it on full-range bytes.
    let mut rng = Rng::new(5);
    let a: Vec<u8> = (0..TM * TK).map(|_| rng.next_u64() as u8).collect();
    let b: Vec<u8> = (0..TK / 4 * 4 * TN).map(|_| rng.next_u64() as u8).collect();
    let mut want = [[0i32; TN]; TM];
    reference_dpbssd(&a, TK, &b, 4 * TN, &mut want);
    let mut u = Emulated::new();
    let mut c = [0u8; TM * TN * 4];
    // SAFETY: buffers hold every tile row at the given strides.
    unsafe {
        u.config(&TileConfig::q8_0());
        u.zero::<C0>();
        u.load::<A0>(a.as_ptr(), TK);
        u.load::<B0>(b.as_ptr(), 4 * TN);
        u.dpbssd::<C0, A0, B0>();
        u.store::<C0>(c.as_mut_ptr(), 4 * TN);
        u.release();
    }
    for (m, wm) in want.iter().enumerate() {
        for (n, &w) in wm.iter().enumerate() {
            let o = 4 * (m * TN + n);
            let got = i32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
            assert_eq!(got, w, "C[{m}][{n}]");
        }
    }
    // Extremes: -128 × -128 summed 32 times stays exact in int32.
    let a = vec![0x80u8; TM * TK];
    let b = vec![0x80u8; TK / 4 * 4 * TN];
    let mut c = [[0i32; TN]; TM];
    reference_dpbssd(&a, TK, &b, 4 * TN, &mut c);
    assert_eq!(c[3][7], 32 * 128 * 128);
}

/// A weight packer: `(w, rb, nr, s0, ns, out)`.
type Packer = unsafe fn(*const u8, usize, usize, usize, usize, *mut Packed);

#[test]
fn packed_weights_are_vnni_tiles() {
    let mut rng = Rng::new(11);
    let mut packers: Vec<(&str, Packer)> = vec![("scalar", pack_weights_scalar)];
    if avx512() {
        packers.push(("avx512", pack_weights));
    }
    let shapes = [
        (2048usize, 16usize, 0usize),
        (768, 5, 3),
        (32 * 67, 16, 64),
        (32 * 67, 15, 0),
        (32, 1, 0),
    ];
    for &(n, nr, s0) in &shapes {
        let nb = n / 32;
        let ns = SLAB.min(nb - s0);
        let w = weights(n, nr, &mut rng);
        let rb = row_bytes(GgmlDType::Q8_0, n).unwrap();
        for &(name, pack) in &packers {
            // Poisoned first: every byte the kernel reads must be written.
            let mut p = MaybeUninit::<Packed>::uninit();
            // SAFETY: Packed is plain bytes and floats.
            unsafe { core::ptr::write_bytes(p.as_mut_ptr(), 0xA5, 1) };
            // SAFETY: nr rows of rb bytes with nb ≥ s0 + ns blocks; ns ≤ SLAB;
            // AVX-512 checked for that packer.
            unsafe { pack(w.as_ptr(), rb, nr, s0, ns, p.as_mut_ptr()) };
            // SAFETY: initialised above.
            let pk = unsafe { p.assume_init_ref() };
            for blk in 0..ns {
                let (bt, dw) = (&pk.b[blk], &pk.dw[blk]);
                for col in 0..TN {
                    let src = (col < nr).then(|| &w[col * rb + (s0 + blk) * 34..][..34]);
                    let d = src.map_or(0.0, |s| {
                        half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32()
                    });
                    assert_eq!(
                        dw[col].to_bits(),
                        d.to_bits(),
                        "{name} scale n={n} blk={blk} col={col}"
                    );
                    for k in 0..TK / 4 {
                        for j in 0..4 {
                            let want = src.map_or(0, |s| s[2 + 4 * k + j]);
                            assert_eq!(
                                bt[k * 4 * TN + 4 * col + j],
                                want,
                                "{name} B[{k}][{col}.{j}] n={n} blk={blk}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn activation_tiles_direct_or_staged() {
    let mut rng = Rng::new(12);
    let n = 32 * 67;
    let buf = acts(n, 2 * TM, &mut rng);
    let mut st = MaybeUninit::<Staged>::uninit();
    for (label, rows) in [
        ("one stride", rows_of(&buf, None)),
        ("shuffled", rows_of(&buf, Some(&mut rng))),
    ] {
        for (len, s0) in [(TM, 0usize), (TM, 64), (7, 0), (1, 64)] {
            let group = &rows[..len];
            let ns = SLAB.min(n / 32 - s0);
            // SAFETY: rows hold n = 67 blocks ≥ s0 + ns.
            let (base, stride) = unsafe { a_source(group, s0, ns, st.as_mut_ptr()) };
            let direct = base != st.as_ptr() as *const u8;
            assert_eq!(
                direct,
                label == "one stride" && len == TM,
                "{label} len {len}"
            );
            for t in 0..TM {
                let src = match group[t.min(len - 1)] {
                    ActRow::Q8_0 { qs, .. } => qs,
                    _ => unreachable!(),
                };
                for blk in 0..ns {
                    // SAFETY: row t of the source: inside the activation row (direct)
                    // or the staged rows written by a_source.
                    let got = unsafe {
                        core::slice::from_raw_parts(
                            base.add(t * stride + blk * TK) as *const i8,
                            TK,
                        )
                    };
                    assert_eq!(
                        got,
                        &src[(s0 + blk) * TK..][..TK],
                        "{label} len {len} t {t} blk {blk}"
                    );
                }
            }
        }
    }
}

#[test]
fn emulated_kernel_matches_reference_at_odd_sizes() {
    if !avx512() {
        return;
    }
    let mut rng = Rng::new(21);
    for &n in &LENGTHS {
        let max_tokens = if n >= 2048 { 40 } else { 70 };
        let buf = acts(n, max_tokens, &mut rng);
        for &rows in &[1usize, 7, 16, 17, 33] {
            let w = weights(n, rows, &mut rng);
            for &tokens in &[1usize, 2, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 70] {
                if tokens > max_tokens {
                    continue;
                }
                for shuffle in [false, true] {
                    let all = rows_of(&buf, shuffle.then_some(&mut rng));
                    let a = &all[..tokens];
                    let mut u = Emulated::new();
                    let out = run_on(&mut u, &w, rows, a);
                    check_out("emulated AMX", &w, rows, a, &out);
                }
            }
        }
    }
}

#[test]
fn emulated_kernel_handles_512_tokens() {
    if !avx512() {
        return;
    }
    let mut rng = Rng::new(22);
    let n = 768;
    let buf = acts(n, 512, &mut rng);
    let w = weights(n, 16, &mut rng);
    for tokens in [500usize, 512] {
        let all = rows_of(&buf, Some(&mut rng));
        let mut u = Emulated::new();
        let out = run_on(&mut u, &w, 16, &all[..tokens]);
        check_out("emulated AMX", &w, 16, &all[..tokens], &out);
        // One config and release per call; per block pair ≤ 2 × (zero, load A, load B,
        // dot, store): the schedule the hardware timing assumes.
        let groups = tokens.div_ceil(TM);
        assert!(u.ops <= 2 + groups * (n / 32) * 5, "{} tile ops", u.ops);
    }
}

#[test]
fn dispatch_takes_amx_only_for_q8_0_many_tokens_where_usable() {
    let usable = amx_int8_usable();
    for dtype in [
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
        GgmlDType::BF16,
    ] {
        for isa in Isa::ALL.into_iter().filter(|i| i.is_available()) {
            let k = DotKernel::new(dtype, isa).unwrap();
            for tokens in [1, amx_min_tokens() - 1, amx_min_tokens(), 512] {
                let want = if usable
                    && dtype == GgmlDType::Q8_0
                    && matches!(isa, Isa::Avx512 | Isa::Avx512Bf16)
                    && tokens >= amx_min_tokens()
                {
                    GemmPath::AmxInt8
                } else {
                    GemmPath::Simd
                };
                assert_eq!(
                    k.gemm_path(tokens),
                    want,
                    "{dtype} {} {tokens} tokens",
                    isa.name()
                );
            }
        }
    }
}

/// The device test: on a CPU and OS where AMX-INT8 is usable, the hardware kernel
/// against the scalar reference (and the dispatcher's choice); elsewhere, that the
/// dispatcher falls back and the forced AMX call is refused. Prints which on stderr
/// and `AMX device test: PASS` on stdout when the hardware ran.
#[test]
fn amx_device_gemm_matches_reference() {
    let status = amx_status();
    let k = DotKernel::best(GgmlDType::Q8_0).unwrap();
    let mut rng = Rng::new(31);
    if !amx_int8_usable() || !matches!(k.isa(), Isa::Avx512 | Isa::Avx512Bf16) {
        eprintln!(
            "AMX not usable here ({}); checking the fallback: gemm_path(512) = Simd, gemm_amx refused",
            status.describe()
        );
        assert_eq!(k.gemm_path(512), GemmPath::Simd);
        let buf = acts(64, 16, &mut rng);
        let a = rows_of(&buf, None);
        let w = weights(64, 3, &mut rng);
        let mut out = vec![0f32; 3 * 16];
        assert!(k.gemm_amx(&w, 3, &a, &mut out, 16, 1).is_err());
        // And the prefill entry still computes (on the SIMD kernels).
        let mut out = vec![f32::NAN; 16 * 4];
        // SAFETY: shapes as in run_on.
        unsafe { k.gemm_prefill_unchecked(&w, 3, &a, &mut out, 1, 4) };
        check_out("fallback prefill", &w, 3, &a, &out);
        return;
    }
    eprintln!(
        "AMX usable: {}; testing the hardware kernel",
        status.describe()
    );
    assert_eq!(k.gemm_path(amx_min_tokens()), GemmPath::AmxInt8);
    let mut cases = 0;
    for &n in &LENGTHS {
        let buf = acts(n, 512, &mut rng);
        for &rows in &[1usize, 5, 16, 17, 48] {
            let w = weights(n, rows, &mut rng);
            let counts =
                (1..=40).chain([47, 63, 64, 65, 100, 127, 128, 129, 255, 256, 300, 511, 512]);
            for tokens in counts {
                if rows > 17 && tokens % 5 != 0 && tokens < 500 {
                    continue; // keep the run short: every count at ≤ 17 rows
                }
                let all = rows_of(&buf, (tokens % 2 == 1).then_some(&mut rng));
                let a = &all[..tokens];
                let mut out = vec![f32::NAN; tokens * (rows + 1)];
                k.gemm_amx(&w, rows, a, &mut out, 1, rows + 1).unwrap();
                check_out("hardware AMX", &w, rows, a, &out);
                // The prefill entry: AMX from amx_min_tokens(), SIMD below; same answers.
                let mut out2 = vec![f32::NAN; tokens * (rows + 1)];
                // SAFETY: as above.
                unsafe { k.gemm_prefill_unchecked(&w, rows, a, &mut out2, 1, rows + 1) };
                check_out("prefill entry", &w, rows, a, &out2);
                // The emulation computes the same int32 sums in the same f32 order
                // (compared on the shorter runs only: it is slow).
                if tokens > 65 || rows > 17 {
                    cases += 1;
                    continue;
                }
                let mut u = Emulated::new();
                let emu = run_on(&mut u, &w, rows, a);
                for (x, y) in out.iter().zip(&emu) {
                    assert!(
                        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                        "hardware {x} vs emulated {y}"
                    );
                }
                cases += 1;
            }
        }
    }
    println!(
        "AMX device test: PASS ({cases} shapes, {})",
        status.describe()
    );
}
