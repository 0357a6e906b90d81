// The input of the fused-pass harnesses (fuse_harness.cpp, fused_q8_harness.cpp), written
// by tests/emu/expert_io.rs `fused_pass_input` (little-endian): u32 gate_up_type,
// down_type, hidden, ffn, n_tokens, n_weight_bytes, n_batch_bytes, split (items of the
// first gate_up launch: the backend launches hits and fetches separately); weight bytes
// (item and tok_down pointers are offsets into them); batch bytes (src/batch.rs layout);
// u32 section offsets items, rows, weights, tok_start, tok_pairs, tok_down, n_items,
// n_pairs; f32 x[n_tokens * hidden]. Read with the pointers rebased onto the weights.
#pragma once
#include <cstdio>
#include <vector>

struct PassInput {
    u32 tgu, tdn, hidden, ffn, n_tokens, split, n_items, n_pairs;
    // 16 spare bytes: the async path copies whole 16-byte chunks.
    std::vector<u8> weights, batch;
    std::vector<float> x;
    u64* items;
    u64* td;
    const u32* rows;
    const float* wts;
    const u32* ts;
    const u32* tp;
};

static u32 pass_rd32(FILE* f) { u32 v = 0; if (fread(&v, 4, 1, f) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }

// Reads `path` into `p`; exits with status 2 on a short or unreadable input.
static void read_pass_input(const char* path, PassInput& p) {
    FILE* f = fopen(path, "rb");
    if (!f) { perror("open input"); exit(2); }
    p.tgu = pass_rd32(f), p.tdn = pass_rd32(f), p.hidden = pass_rd32(f), p.ffn = pass_rd32(f);
    p.n_tokens = pass_rd32(f);
    u32 n_wbytes = pass_rd32(f), n_bbytes = pass_rd32(f);
    p.split = pass_rd32(f);
    p.weights.assign(n_wbytes + 16, 0);
    p.batch.assign(n_bbytes, 0);
    if (fread(p.weights.data(), 1, n_wbytes, f) != n_wbytes || fread(p.batch.data(), 1, n_bbytes, f) != n_bbytes) { fprintf(stderr, "short input\n"); exit(2); }
    u32 o_items = pass_rd32(f), o_rows = pass_rd32(f), o_wts = pass_rd32(f), o_ts = pass_rd32(f);
    u32 o_tp = pass_rd32(f), o_td = pass_rd32(f);
    p.n_items = pass_rd32(f), p.n_pairs = pass_rd32(f);
    p.x.assign((size_t)p.n_tokens * p.hidden, 0.0f);
    if (fread(p.x.data(), 4, p.x.size(), f) != p.x.size()) { fprintf(stderr, "short x\n"); exit(2); }
    fclose(f);
    u64 base = (u64)(uintptr_t)p.weights.data();
    p.items = (u64*)(p.batch.data() + o_items);
    for (u32 i = 0; i < p.n_items; ++i)
        for (int k = 0; k < 3; ++k) p.items[4 * i + k] += base;
    p.td = (u64*)(p.batch.data() + o_td);
    for (u32 q = 0; q < p.n_pairs; ++q) p.td[q] += base;
    p.rows = (const u32*)(p.batch.data() + o_rows);
    p.wts = (const float*)(p.batch.data() + o_wts);
    p.ts = (const u32*)(p.batch.data() + o_ts);
    p.tp = (const u32*)(p.batch.data() + o_tp);
}
