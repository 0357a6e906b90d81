//! `route_resident` (src/route.cu, device-side decode routing) in the host emulator: the
//! same experts, in the same order, as the host's softmax top-k (ties to the lower index),
//! weights within float rounding of it, and index tables that name exactly the resident
//! experts (hits first, in rank order) with a one-pair item each, the misses with none.

use hmoe_cuda::verify_dense::vals;

#[path = "emu/build.rs"]
mod emu_build;
use emu_build::{compile_harness, run_harness};

/// Device weights against the host's: expf and a warp-order sum against exp and a
/// sequential sum, a few ulps of a value below 1.
const WEIGHT_ABS_TOL: f32 = 1e-6;

/// The host router of the engine (engine/src/moe/routing.rs): softmax, top-k by
/// probability with ties to the lower index, optional renormalisation.
fn host_route(logits: &[f32], k: usize, renorm: bool) -> Vec<(u32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let chosen = &order[..k];
    let s: f32 = chosen.iter().map(|&e| p[e]).sum();
    chosen
        .iter()
        .map(|&e| (e as u32, if renorm { p[e] / s } else { p[e] }))
        .collect()
}

fn words(bytes: &[f32]) -> Vec<u32> {
    bytes.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn device_routing_matches_the_host_router_and_names_the_resident_experts() {
    let dir = tempfile::tempdir().unwrap();
    let exe = compile_harness(dir.path(), "route_harness");
    // (experts, top_k, renorm, seed): Qwen3-30B-A3B's 128 / 8, the synthetic test models'
    // small expert counts (lanes without an expert), and a tie between two logits.
    for (case, &(ne, k, renorm, seed)) in [
        (128usize, 8usize, true, 3u64),
        (128, 8, false, 4),
        (16, 4, true, 5),
        (8, 2, true, 6),
        (256, 8, true, 7),
        (128, 8, true, 0),
    ]
    .iter()
    .enumerate()
    {
        let mut logits: Vec<f32> = vals(ne, seed + 100).iter().map(|v| 3.0 * v).collect();
        if seed == 0 {
            // A tie for first place: the lower index must come first.
            logits[77] = 9.0;
            logits[12] = 9.0;
        }
        // Every third expert resident, in slot 2e + 1 (map holds slot + 1).
        let map: Vec<u32> = (0..ne as u32)
            .map(|e| if e % 3 == 0 { 2 * e + 2 } else { 0 })
            .collect();
        let mut input = Vec::new();
        for v in [ne as u32, k as u32, renorm as u32] {
            input.extend_from_slice(&v.to_le_bytes());
        }
        logits
            .iter()
            .for_each(|v| input.extend_from_slice(&v.to_le_bytes()));
        map.iter()
            .for_each(|v| input.extend_from_slice(&v.to_le_bytes()));
        let out = words(&run_harness(&exe, dir.path(), &format!("r{case}"), &input));
        let want = host_route(&logits, k, renorm);
        let (res, rest) = out.split_at(3 + 2 * k);
        assert_eq!(
            res[0], 42,
            "case {case}: the sequence number is written last, +1"
        );
        let ids = &res[3..3 + k];
        let wts: Vec<f32> = res[3 + k..].iter().map(|&b| f32::from_bits(b)).collect();
        for (r, &(e, w)) in want.iter().enumerate() {
            assert_eq!(ids[r], e, "case {case}: rank {r}");
            assert!(
                (wts[r] - w).abs() <= WEIGHT_ABS_TOL,
                "case {case}: rank {r} weight {} vs host {w}",
                wts[r]
            );
        }
        if seed == 0 {
            assert_eq!(&ids[..2], &[12, 77], "ties go to the lower index");
        }
        let hits: Vec<usize> = (0..k).filter(|&r| map[ids[r] as usize] != 0).collect();
        assert_eq!(res[1] as usize, hits.len(), "case {case}: hit count");
        let mask = hits.iter().fold(0u32, |m, &r| m | 1 << r);
        assert_eq!(res[2], mask, "case {case}: hit mask");
        // Index tables: items (u64 x 4 each), rows, weights, tok_start, tok_pairs, tok_down.
        let u64_at = |w: &[u32], i: usize| w[2 * i] as u64 | (w[2 * i + 1] as u64) << 32;
        let (items, rest) = rest.split_at(8 * k);
        let (rows, rest) = rest.split_at(k);
        let (iw, rest) = rest.split_at(k);
        let (ts, rest) = rest.split_at(2);
        let (tp, rest) = rest.split_at(k);
        let (td, rest) = rest.split_at(2 * k);
        assert_eq!(rest, &[42], "case {case}: the device counter");
        assert_eq!(ts, &[0, hits.len() as u32], "case {case}: tok_start");
        for (h, &r) in hits.iter().enumerate() {
            let base = 0x100000 + (map[ids[r] as usize] as u64 - 1) * 0x1000;
            let it: Vec<u64> = (0..4).map(|j| u64_at(items, 4 * h + j)).collect();
            assert_eq!(
                it,
                vec![base, base + 0x400, base + 0x800, h as u64 | 1 << 32],
                "case {case}: item {h}"
            );
            assert_eq!(rows[h], 0);
            assert_eq!(
                iw[h],
                res[3 + k + r],
                "case {case}: pair weight of rank {r}"
            );
            assert_eq!(tp[h], h as u32);
            assert_eq!(u64_at(td, h), base + 0x800);
        }
        for h in hits.len()..k {
            assert_eq!(
                u64_at(items, 4 * h + 3) >> 32,
                0,
                "case {case}: a miss has no pairs"
            );
        }
    }
}
