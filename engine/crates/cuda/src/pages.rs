//! Page ranges for `cuMemHostRegister`: the expert tensors of a mapped model, widened to
//! whole pages and merged, because registering a page twice fails
//! (`CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED`) and neighbouring tensors share pages.

/// Host page size assumed for registration (x86-64 Linux).
pub const PAGE: usize = 4096;

/// `(start, len)` byte ranges → sorted, page-aligned, non-overlapping `(start, end)` ranges.
pub fn merge_pages(ranges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(s, n)| (s / PAGE * PAGE, (s + n).div_ceil(PAGE) * PAGE))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_pages_merge_and_gaps_stay() {
        let r = merge_pages(&[(5000, 100), (100, 4000), (4100, 10), (20_000, 1), (9000, 0)]);
        assert_eq!(r, vec![(0, 8192), (16_384, 20_480)]);
        assert!(merge_pages(&[]).is_empty());
    }
}
