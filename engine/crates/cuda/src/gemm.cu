// Tiled (shared-memory) GEMM kernels for prefill: appended to kernels.cu (Raw<T>, Step<T>,
// ldf4, zero4, the macros) and dense.cu by lib.rs; compiled by g++ in the emulator
// (tests/emu_gemm.rs). docs/notes/cuda-kernels.md, "Tiled GEMM", has the design.
//
// The row kernels (kernels.cu) give each output row a warp and re-read the row's weights
// for every TT = 8 tokens; at prefill an expert serves tens to hundreds of tokens. Here a
// block of 256 threads computes a tile of GEMM_BM = 128 weight rows x GEMM_BN tokens: each
// k-chunk of 64 values of the 128 rows is dequantised ONCE into shared memory (by the same
// Raw<T> decoders as the row kernels, so the weights are bit-identical) and reused by
// every token of the tile; the chunk of the tile's activations sits beside it. Thread
// (ty, tx) = (t % 16, t / 16) keeps an 8 x GEMM_TN register tile: rows 4 ty .. 4 ty + 3
// and 64 + 4 ty .. 64 + 4 ty + 3, tokens GEMM_TN tx .. GEMM_TN tx + GEMM_TN - 1, f32 FMA.
// A warp holds 2 token groups and all rows, so in a partial tile (an item's last chunk:
// 6 tokens of a 70-token item) the warps past the last token skip the multiply.
// Results differ from the row kernels only in the order of the f32 sums.
//
// Decode layout: a Raw<T> load of virtual lane 8 g + m covers the values 64 g + 4 m ..+3
// and 64 g + 32 + 4 m ..+3 of a 256-value step (kernels.cu's run layout), so the 8 lanes
// m = 0..7 of one row cover the row's chunk g, and a warp decodes 4 rows per call. Lane
// (m, q) of warp w decodes rows 32 i + 4 w + q, i = 0..3. While the tile multiplies chunk
// kk, every thread's raw words and activations of chunk kk + 1 are already in flight.
//
// Shared memory is k-major (Ws[k][row], Xs[k][token]) so the FMA loop reads its 4 rows
// (and GEMM_TN tokens) as one vector load; columns are XOR-swizzled with bits 2..4 of k
// (gsw): the decode stores (8 lanes along k x 4 rows) then hit 32 distinct banks, and
// groups of 4 columns stay contiguous for the vector loads.
//
// Expert kernels: grid (row tiles, items, token chunks), the layout of src/batch.rs. A
// block whose item has fewer than GEMM_MIN_TOKENS tokens leaves at once (the row kernels,
// which skip the items this file takes, serve it); chunks past an item's end leave too.

#ifndef GEMM_TN
#define GEMM_TN 4  // tokens per thread: GEMM_BN = 16 * GEMM_TN (2 or 4)
#endif
#define GEMM_BM 128             // weight rows per tile
#define GEMM_BN (16 * GEMM_TN)  // tokens per tile
#define GEMM_BK 64              // values per k-chunk (a quarter super-block, 2 Q8_0 blocks)
// Blocks per SM the compiler must fit (registers <= 65536 / (256 * n)); 0: no cap.
#ifndef GEMM_MIN_BLOCKS
#define GEMM_MIN_BLOCKS 2
#endif
// Bit 1: the next chunk's raw weights, bit 2: its activations are loaded into registers
// while the tile multiplies (latency hidden within the block, at the cost of up to 40 + 16
// registers); a clear bit: that part of a chunk loads after the previous chunk is
// multiplied (latency hidden by the other resident blocks). ptxas (sm_90) at 128
// registers: 3 spills 20-230 bytes (q4_k least, q6_k most); 1 none for q4_k/q8_0 linear
// and q4_k gate_up, 4-32 bytes for the other q4_k/q8_0 kernels, ~120 for q6_k; 2 and 0
// none (8 bytes in two kernels). Weights come from HBM, activations mostly from L2.
// Default 0: on the H200 (hmoe-cuda-check gemm, two calls, 2026-11-27) prefetch=0 took
// 716 / 724 / 283 us (8 q4_k_m / q8_0 experts x 256 tokens, q4_k linear x 512) against
// 787 / 802 / 315 for prefetch=1: the other resident blocks hide the loads better than
// the registers the prefetch costs.
#ifndef GEMM_PREFETCH
#define GEMM_PREFETCH 0
#endif
#define GEMM_PF_W ((GEMM_PREFETCH & 1) != 0)
#define GEMM_PF_X ((GEMM_PREFETCH & 2) != 0)
#if GEMM_MIN_BLOCKS > 0 && !defined(HMOE_EMU)
#define GEMM_BOUNDS __launch_bounds__(256, GEMM_MIN_BLOCKS)
#else
#define GEMM_BOUNDS
#endif

#if GEMM_TN != 2 && GEMM_TN != 4
#error "GEMM_TN must be 2 or 4 (the swizzle keeps groups of 4 columns together)"
#endif

// SYNCTHREADS: the block's barrier (defined here unless kernels.cu already has it; the
// emulator's is emu.h's block barrier emu_block).
#ifndef HMOE_EMU
#ifndef SYNCTHREADS
#define SYNCTHREADS() __syncthreads()
#endif
#define UNROLL _Pragma("unroll")
template <int N> DEV void lds(const float* p, float* o) {
    if (N == 4) {
        float4 v = *(const float4*)p;
        o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
    } else {
        float2 v = *(const float2*)p;
        o[0] = v.x, o[1] = v.y;
    }
}
#else
#ifndef SYNCTHREADS
#define SYNCTHREADS() emu_block->arrive_and_wait()
#endif
#define UNROLL
template <int N> DEV void lds(const float* p, float* o) {
    emu_align(p, 4 * N);
    std::memcpy(o, p, 4 * N);
}
#endif

// Column c of k-row k of a shared tile, swizzled (see the header).
DEV u32 gsw(u32 k, u32 c) { return c ^ (((k >> 2) & 7u) << 2); }

// Tile row of accumulator row i (0..7) of thread row ty, and tile token of column j.
DEV u32 gemm_row(u32 i) { return (i < 4 ? 0u : 60u) + 4 * (threadIdx.x & 15) + i; }
DEV u32 gemm_tok(u32 j) { return GEMM_TN * (threadIdx.x >> 4) + j; }

// acc[i][j] = sum over k < cols of W[gemm_row(i)][k] * X[gemm_tok(j)][k] for the tile's
// rows (wrow(r): first byte of tile row r, r < GEMM_BM; rows past the matrix end must
// point at a valid row) and its nt <= GEMM_BN tokens (xrow(t): the f32 row of token t < nt,
// 16-byte aligned). Every thread of the block calls it (it synchronises the block).
template <int T, class WRow, class XRow>
DEV void gemm_tile(WRow wrow, XRow xrow, u32 cols, u32 nt, float (&acc)[8][GEMM_TN]) {
    SHARED __attribute__((aligned(16))) float ws[GEMM_BK][GEMM_BM];
    SHARED __attribute__((aligned(16))) float xs[GEMM_BK][GEMM_BN];
    const u32 tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, m = lane & 7, q = lane >> 3;
    // Activations: float4 f = tid + 256 c of the chunk is token f / 16, values 4 (f % 16)..
    const float* xp[GEMM_TN];
    for (u32 c = 0; c < GEMM_TN; ++c) {
        u32 t = (tid >> 4) + 16 * c;
        xp[c] = t < nt ? xrow(t) : nullptr;
    }
    for (u32 i = 0; i < 8; ++i)
        for (u32 j = 0; j < GEMM_TN; ++j) acc[i][j] = 0.0f;
    const u32 nk = (cols + GEMM_BK - 1) / GEMM_BK, xk = 4 * (tid & 15);
    Raw<T> raw[4];
    float xv[GEMM_TN][4];
    auto load_w = [&](u32 kk) {
        u32 s = kk >> 2, vl = 8 * (kk & 3) + m, e = run_off(s, vl);
        for (u32 i = 0; i < 4; ++i)
            raw[i].load(wrow(32 * i + 4 * warp + q) + (u64)s * Step<T>::B, vl, e + 4 <= cols,
                        e + 36 <= cols);
    };
    auto load_x = [&](u32 kk) {
        u32 k = GEMM_BK * kk + xk;
        for (u32 c = 0; c < GEMM_TN; ++c) {
            if (xp[c] && k + 4 <= cols) ldf4(xp[c] + k, xv[c]);
            else zero4(xv[c]);
        }
    };
    if (GEMM_PF_W) load_w(0);
    if (GEMM_PF_X) load_x(0);
    for (u32 kk = 0; kk < nk; ++kk) {
        if (!GEMM_PF_W) load_w(kk);
        if (!GEMM_PF_X) load_x(kk);
        u32 vl = 8 * (kk & 3) + m;
        for (u32 i = 0; i < 4; ++i) {
            float wa[4], wb[4];
            raw[i].dec(vl, wa, wb);
            u32 col = (32 * i + 4 * warp + q) ^ (4 * m);  // gsw of k = 4 m + k', 32 + 4 m + k'
            for (u32 k = 0; k < 4; ++k) {
                ws[4 * m + k][col] = wa[k];
                ws[32 + 4 * m + k][col] = wb[k];
            }
        }
        for (u32 c = 0; c < GEMM_TN; ++c) {
            u32 col = ((tid >> 4) + 16 * c) ^ (4 * (tid & 7));  // gsw of k = xk + k'
            for (u32 k = 0; k < 4; ++k) xs[xk + k][col] = xv[c][k];
        }
        SYNCTHREADS();
        if (GEMM_PF_W && kk + 1 < nk) load_w(kk + 1);  // in flight while the tile multiplies
        if (GEMM_PF_X && kk + 1 < nk) load_x(kk + 1);
        const u32 r0 = 4 * (tid & 15), t0 = GEMM_TN * (tid >> 4);
        // The chunk's 64 products are summed apart and then added to the total: one serial
        // chain of `cols` products would carry ~4x the rounding error of the row kernels'
        // per-lane sums and tree reduction, and an activation within that error of an
        // 8-bit rounding boundary (act_round before down) lands one step off.
        float part[8][GEMM_TN];
        for (u32 i = 0; i < 8; ++i)
            for (u32 j = 0; j < GEMM_TN; ++j) part[i][j] = 0.0f;
        // Groups of 4 k share a swizzle: one XOR per group, immediate offsets inside it.
        // The warp's first token is 2 GEMM_TN warp: past nt, nothing to multiply.
        for (u32 kb = 0; kb < (2 * GEMM_TN * warp < nt ? GEMM_BK : 0u); kb += 4) {
            u32 wo = gsw(kb, r0), xo = gsw(kb, t0);
            UNROLL
            for (u32 k = kb; k < kb + 4; ++k) {
                float a[8], b[GEMM_TN];
                lds<4>(&ws[k][wo], a);
                lds<4>(&ws[k][64 + wo], a + 4);
                lds<GEMM_TN>(&xs[k][xo], b);
                for (u32 i = 0; i < 8; ++i)
                    for (u32 j = 0; j < GEMM_TN; ++j) part[i][j] += a[i] * b[j];
            }
        }
        for (u32 i = 0; i < 8; ++i)
            for (u32 j = 0; j < GEMM_TN; ++j) acc[i][j] += part[i][j];
        SYNCTHREADS();  // the tile is read: the next chunk may overwrite it
    }
}

// act[pair][j] = silu(gate_j . x[row]) * (up_j . x[row]) for the pairs of items with at
// least GEMM_MIN_TOKENS tokens. Tile rows 0..63 are gate rows j0.., 64..127 the up rows of
// the same outputs, so thread rows i and i + 4 are the (gate, up) pair of one output.
// Grid (ceil(ffn / 64), items, token chunks).
template <int T>
DEV void gemm_gate_up(const u64* items, const u32* rows, const float* x, float* act, u32 hidden,
                      u32 ffn) {
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    if (n < GEMM_MIN_TOKENS) return;  // the whole block: the row kernels take this item
    u32 j0 = blockIdx.x * (GEMM_BM / 2);
    u64 rb = row_bytes<T>(hidden);
    const u8 *gate = (const u8*)it[0], *up = (const u8*)it[1];
    auto wrow = [&](u32 r) {
        u32 j = j0 + (r & 63);
        j = j < ffn ? j : ffn - 1;  // past the end: recompute the last row, not stored
        return (r < 64 ? gate : up) + j * rb;
    };
    for (u32 c = blockIdx.z; c * GEMM_BN < n; c += gridDim.z) {
        u32 t0 = c * GEMM_BN, nt = n - t0 < GEMM_BN ? n - t0 : GEMM_BN;
        const u32* rp = rows + pair0 + t0;
        auto xrow = [&](u32 t) { return x + (u64)rp[t] * hidden; };
        float acc[8][GEMM_TN];
        gemm_tile<T>(wrow, xrow, hidden, nt, acc);
        for (u32 i = 0; i < 4; ++i) {
            u32 j = j0 + gemm_row(i);
            if (j >= ffn) continue;
            for (u32 k = 0; k < GEMM_TN; ++k) {
                u32 t = gemm_tok(k);
                if (t < nt) act[(u64)(pair0 + t0 + t) * ffn + j] = silu(acc[i][k]) * acc[i + 4][k];
            }
        }
    }
}

// y[pair][i] = weight[pair] * (down_i . act[pair]) for the pairs of items with at least
// GEMM_MIN_TOKENS tokens. Grid (ceil(hidden / GEMM_BM), items, token chunks).
template <int T>
DEV void gemm_down(const u64* items, const float* wts, const float* act, float* y, u32 hidden,
                   u32 ffn) {
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    if (n < GEMM_MIN_TOKENS) return;
    u32 i0 = blockIdx.x * GEMM_BM;
    u64 rb = row_bytes<T>(ffn);
    const u8* w = (const u8*)it[2];
    auto wrow = [&](u32 r) { return w + (i0 + r < hidden ? i0 + r : hidden - 1) * rb; };
    for (u32 c = blockIdx.z; c * GEMM_BN < n; c += gridDim.z) {
        u32 t0 = c * GEMM_BN, nt = n - t0 < GEMM_BN ? n - t0 : GEMM_BN;
        const float* a0 = act + (u64)(pair0 + t0) * ffn;
        auto xrow = [&](u32 t) { return a0 + (u64)t * ffn; };
        float acc[8][GEMM_TN];
        gemm_tile<T>(wrow, xrow, ffn, nt, acc);
        for (u32 k = 0; k < GEMM_TN; ++k) {
            u32 t = gemm_tok(k);
            if (t >= nt) continue;
            u32 p = pair0 + t0 + t;
            float wt = wts[p];
            for (u32 i = 0; i < 8; ++i) {
                u32 r = i0 + gemm_row(i);
                if (r < hidden) y[(u64)p * hidden + r] = wt * acc[i][k];
            }
        }
    }
}

// y[t][r] = w_r . x[t] (linear_* of dense.cu) for many tokens. Grid (ceil(rows / GEMM_BM),
// ceil(n / GEMM_BN)).
template <int T>
DEV void gemm_linear(const u8* w, const float* x, float* y, u32 rows, u32 cols, u32 n) {
    u32 r0 = blockIdx.x * GEMM_BM, t0 = blockIdx.y * GEMM_BN;
    if (t0 >= n) return;
    u32 nt = n - t0 < GEMM_BN ? n - t0 : GEMM_BN;
    u64 rb = row_bytes<T>(cols);
    auto wrow = [&](u32 r) { return w + (r0 + r < rows ? r0 + r : rows - 1) * rb; };
    auto xrow = [&](u32 t) { return x + (u64)(t0 + t) * cols; };
    float acc[8][GEMM_TN];
    gemm_tile<T>(wrow, xrow, cols, nt, acc);
    for (u32 k = 0; k < GEMM_TN; ++k) {
        u32 t = gemm_tok(k);
        if (t >= nt) continue;
        for (u32 i = 0; i < 8; ++i) {
            u32 r = r0 + gemm_row(i);
            if (r < rows) y[(u64)(t0 + t) * rows + r] = acc[i][k];
        }
    }
}

#define INSTANTIATE_GEMM(T, name)                                                             \
    KERNEL GEMM_BOUNDS void gemm_gate_up_##name(const u64* items, const u32* rows,             \
                                                const float* x, float* act, u32 hidden,       \
                                                u32 ffn) {                                    \
        gemm_gate_up<T>(items, rows, x, act, hidden, ffn);                                    \
    }                                                                                         \
    KERNEL GEMM_BOUNDS void gemm_down_##name(const u64* items, const float* wts,               \
                                             const float* act, float* y, u32 hidden,          \
                                             u32 ffn) {                                       \
        gemm_down<T>(items, wts, act, y, hidden, ffn);                                        \
    }                                                                                         \
    KERNEL GEMM_BOUNDS void gemm_linear_##name(const u8* w, const float* x, float* y,          \
                                               u32 rows, u32 cols, u32 n) {                   \
        gemm_linear<T>(w, x, y, rows, cols, n);                                               \
    }

INSTANTIATE_GEMM(T_F32, f32)
INSTANTIATE_GEMM(T_F16, f16)
INSTANTIATE_GEMM(T_BF16, bf16)
INSTANTIATE_GEMM(T_Q8_0, q8_0)
INSTANTIATE_GEMM(T_Q4K, q4_k)
INSTANTIATE_GEMM(T_Q5K, q5_k)
INSTANTIATE_GEMM(T_Q6K, q6_k)
