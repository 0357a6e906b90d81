//! A small crafted file must never make the parser allocate more than a small budget:
//! counts and lengths are bounded by the bytes that remain before anything is reserved.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{small_valid, Raw};
use hmoe_gguf::{parse, MetaValue};

/// Counts bytes requested by the current thread (tests run on several threads).
struct Counting;

thread_local! {
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
}

fn note(n: usize) {
    // `try_with` fails only during thread teardown; then there is nothing to count.
    let _ = REQUESTED.try_with(|c| c.set(c.get().saturating_add(n)));
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Parsed metadata costs at most `size_of::<MetaValue>()` (32) bytes per file byte (a u8
/// array element), plus map and vector overhead: allow twice that per byte.
const BYTES_PER_FILE_BYTE: usize = 2 * std::mem::size_of::<MetaValue>();
/// Fixed overhead: error messages, the tensor-name set, the first map node.
const FIXED_BUDGET: usize = 4096;

/// Bytes requested while parsing `bytes`.
fn allocated_by_parse(bytes: &[u8]) -> usize {
    let before = REQUESTED.with(Cell::get);
    let r = parse(bytes);
    let used = REQUESTED.with(Cell::get) - before;
    drop(r);
    used
}

fn assert_small(bytes: &[u8], what: &str) {
    let used = allocated_by_parse(bytes);
    let budget = FIXED_BUDGET + BYTES_PER_FILE_BYTE * bytes.len();
    assert!(
        used <= budget,
        "{what}: parsing {} bytes allocated {used} bytes (budget {budget})",
        bytes.len()
    );
}

#[test]
fn huge_claims_in_a_100_byte_file() {
    let pad = |mut r: Raw| {
        r.0.resize(100, 0);
        r.0
    };
    let kvs = pad(Raw::header(3, 0, 1 << 60));
    assert!(parse(&kvs).is_err());
    assert_small(&kvs, "2^60 KVs");

    let tensors = pad(Raw::header(3, 1 << 60, 0));
    assert!(parse(&tensors).is_err());
    assert_small(&tensors, "2^60 tensors");

    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(8).u64(1 << 60);
    let arr = pad(r);
    assert!(parse(&arr).is_err());
    assert_small(&arr, "2^60 strings");

    let mut r = Raw::header(3, 0, 1);
    r.str("s").u32(8).u64(1 << 40);
    let s = pad(r);
    assert!(parse(&s).is_err());
    assert_small(&s, "2^40-byte string");

    // The largest legitimate array a 100-byte file can hold is within budget too.
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(0).u64(100 - 24 - 9 - 16);
    let full = pad(r);
    assert!(parse(&full).is_ok());
    assert_small(&full, "full u8 array");
}

/// Deterministic xorshift, so failures reproduce.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_corruptions_stay_in_budget() {
    let base = small_valid();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..1 + next(&mut rng) % 4 {
            let i = (next(&mut rng) % b.len() as u64) as usize;
            // Favour bytes that make lengths and counts huge.
            b[i] = match next(&mut rng) % 3 {
                0 => 0xff,
                1 => 0x80,
                _ => next(&mut rng) as u8,
            };
        }
        assert_small(&b, "mutated file");
    }
}
