// Fused decode pass (docs/notes/cuda-kernels.md, "Fused decode pass"): appended to
// kernels.cu, whose gate_up, rows_dot, reduce_rows and round_block it uses. A decode
// expert pass is act_round(x), gate_up_fused, down_combine: 3 launches instead of 5, the
// same output bit for bit (tests/emu_fuse.rs, hmoe-cuda-check's fused check).

// Blocks of products one gate_up block's WARPS * RPW_GU rows can write into (blocks of
// 32 or 256 values): the size of its arrival flags.
#define FUSE_SPAN (WARPS * RPW_GU / 32 + 2)

// After its gate_up rows, the block counts itself in at every block of products (fmt's
// blocks along j) it wrote into; the last block to arrive at one rounds it for every pair
// of the item (round_block, as act_round would) and resets its counter, so the next
// launch (or graph replay) finds it zero. cnt: [items of the launch][ffn / bs], zero
// before the launch. Which block arrives last varies; what it computes does not (all
// the block's products are final by then), so the result is deterministic.
DEV void arrive_and_round(const u64* items, float* act, u32 ffn, u32 fmt, u32* cnt) {
    SHARED u32 last[FUSE_SPAN];
    u32 bs = fmt == ACT_Q8K ? 256 : 32, nb = ffn / bs, rows = WARPS * RPW_GU;
    u32 j0 = blockIdx.x * rows;
    u32 b0 = j0 / bs, b1 = (j0 + rows - 1) / bs;
    if (b1 >= nb) b1 = nb - 1;
    THREADFENCE();  // this thread's products are visible device-wide ...
    SYNCTHREADS();  // ... for every thread of the block, before thread 0 counts it in
    if (threadIdx.x == 0) {
        for (u32 b = b0; b <= b1; ++b) {
            // The gate_up blocks whose rows lie in block b of the products.
            u32 c0 = b * bs / rows, c1 = ((b + 1) * bs - 1) / rows;
            if (c1 >= gridDim.x) c1 = gridDim.x - 1;
            u32* c = cnt + (u64)blockIdx.y * nb + b;
            u32 is_last = ATOMIC_ADD(c, 1u) == c1 - c0 ? 1u : 0u;
            if (is_last) *c = 0;  // every arrival is in: zero for the next launch
            last[b - b0] = is_last;
        }
        THREADFENCE();  // the count before the reads of the other blocks' products
    }
    SYNCTHREADS();
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    for (u32 b = b0; b <= b1; ++b)
        if (last[b - b0])
            for (u32 p = threadIdx.x >> 5; p < n; p += WARPS)
                round_block(act + (u64)(pair0 + p) * ffn + (u64)b * bs, fmt);
}

// gate_up with the products rounded for the down weights' activation format F (ACT_*):
// bf16 as each product is stored, Q8_0 / Q8_K per block by the last gate_up block to
// finish it. Grid and items as gate_up. F is a template argument, one kernel per format:
// a runtime switch between the formats made one kernel of several inlined gate_up
// bodies, which spilled 100-340 bytes at the 64-register cap (ptxas -v, sm_90).
template <int T, int F>
DEV void gate_up_fused(const u64* items, const u32* rows, const float* x, float* act,
                       u32 hidden, u32 ffn, u32* cnt) {
    // Q8_0 / Q8_K: no early exit in gate_up (see there); every warp reaches the arrival.
    const bool blocks = F == ACT_Q8_0 || F == ACT_Q8K;
    gate_up<T, F == ACT_BF16, !blocks>(items, rows, x, act, hidden, ffn);
    if (blocks) arrive_and_round(items, act, ffn, F, cnt);
}

// out[t][i] = sum over token t's pairs (tok_pairs order: item order) of
// wts[p] * (down_i . act[p]) — down and combine in one launch, bit-identical to them: the
// same row walk and warp sum as down's one-token path (the tile path's batched warp sum
// adds the same lanes in the same tree), the same product, then combine's sum from 0 in
// the same order. tok_down[q]: the down matrix of pair tok_pairs[q]'s item. Grid (hidden,
// n_tokens); warp w takes pair q0 + w of each round of WARPS pairs, thread 0 adds the
// round's results in order. A warp without a pair in the last round recomputes the
// round's last pair (its result is not added): the dot under a warp-divergent branch
// spilled at 64 registers.
template <int T>
DEV void down_combine(const u64* tok_down, const u32* tok_start, const u32* tok_pairs,
                      const float* wts, const float* act, float* out, u32 hidden, u32 ffn) {
    SHARED float part[WARPS];
    u32 warp = threadIdx.x >> 5, i = blockIdx.x, t = blockIdx.y;
    u32 q0 = tok_start[t], q1 = tok_start[t + 1];
    u64 rb = row_bytes<T>(ffn);
    float s = 0.0f;  // thread 0's
    for (; q0 < q1; q0 += WARPS) {
        u32 q = q0 + warp < q1 ? q0 + warp : q1 - 1;
        {
            u32 p = tok_pairs[q];
            const u8* const w[1] = {(const u8*)tok_down[q] + i * rb};
            float acc[1][TT];
            const float* xr[TT];
            for (int k = 0; k < TT; ++k) {
                acc[0][k] = 0.0f;
                xr[k] = act + (u64)p * ffn;
            }
            auto put = [&](u32, u32, float v, float) { part[warp] = wts[p] * v; };
#if ASYNC
            rows_dot_async<T, 1>(w, xr[0], ffn, acc);
#else
            rows_dot<T, 1, 1, U_FOR(U_ONE, 1)>(w, xr, 1, ffn, acc);
#endif
            reduce_rows<1, 1, false>(acc, 1, put);
        }
        SYNCTHREADS();
        if (threadIdx.x == 0) {
            u32 m = q1 - q0 < WARPS ? q1 - q0 : WARPS;
            for (u32 k = 0; k < m; ++k) s += part[k];
        }
        SYNCTHREADS();  // part is read before the next round overwrites it
    }
    if (threadIdx.x == 0) out[(u64)t * hidden + i] = s;
}

// gate_up_fused_<type>_<format> for the three rounded formats (down weights of f32 or f16
// take unrounded products: the plain gate_up_<type>).
#define GATE_UP_FUSED(T, name, F, fname)                                                      \
    KERNEL BOUNDS void gate_up_fused_##name##_##fname(const u64* items, const u32* rows,       \
                                                      const float* x, float* act, u32 hidden,  \
                                                      u32 ffn, u32* cnt) {                     \
        gate_up_fused<T, F>(items, rows, x, act, hidden, ffn, cnt);                           \
    }
#define INSTANTIATE_FUSED(T, name)                                                            \
    GATE_UP_FUSED(T, name, ACT_BF16, bf16)                                                    \
    GATE_UP_FUSED(T, name, ACT_Q8_0, q8_0)                                                    \
    GATE_UP_FUSED(T, name, ACT_Q8K, q8_k)                                                     \
    KERNEL BOUNDS void down_combine_##name(const u64* tok_down, const u32* tok_start,          \
                                           const u32* tok_pairs, const float* wts,             \
                                           const float* act, float* out, u32 hidden,           \
                                           u32 ffn) {                                         \
        down_combine<T>(tok_down, tok_start, tok_pairs, wts, act, out, hidden, ffn);          \
    }

INSTANTIATE_FUSED(T_F32, f32)
INSTANTIATE_FUSED(T_F16, f16)
INSTANTIATE_FUSED(T_BF16, bf16)
INSTANTIATE_FUSED(T_Q8_0, q8_0)
INSTANTIATE_FUSED(T_Q4K, q4_k)
INSTANTIATE_FUSED(T_Q5K, q5_k)
INSTANTIATE_FUSED(T_Q6K, q6_k)
