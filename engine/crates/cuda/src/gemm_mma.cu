// int8 tensor-core GEMM kernels for prefill (mma.sync m16n8k32 s8 x s8 -> s32, sm_80+),
// Q8_0, Q4_K and Q6_K weights: appended after gemm.cu by lib.rs (GEMM_BM, GEMM_BN,
// GEMM_MIN_TOKENS, SYNCTHREADS and kernels.cu's helpers), compiled by g++ in the emulator
// (tests/emu_mma.rs; mma_s8 is then emu.h's warp collective). docs/notes/cuda-mma.md has
// the design and numbers.
//
// Drop-in for gemm.cu's kernels of the same type: the same arguments, the same grid
// (row tiles of GEMM_BM = 128 weight rows, GEMM_BN-token chunks; gate_up tiles of 64
// outputs, gate rows 0..63 and up rows 64..127), 256 threads, so src/gpu/gemm.rs selects
// them by swapping the function (HMOE_CUDA_MMA=1).
//
// The activations arrive rounded by act_round to the CPU's 8-bit blocks (Q8_0: 32 values,
// Q8_K: 256 values for k-quant weights), i.e. every value is q * d with |q| <= 127 and the
// block's largest magnitude 127 |d|. Re-quantising a block with s = amax / 127 recovers q
// exactly (v / s is within a few ulps of q), so a block's dot is an exact integer sum
// times the scales: the result differs from the f32 tiled kernels only in f32 rounding.
// (Unrounded inputs are quantised to 8 bits here, as llama.cpp's mmq does.)
//
// Per 256-value step (one Q4_K super-block, eight Q8_0 blocks): the tile's <= 64 token rows
// are quantised into shared memory (int8 + a scale per 32 values + for Q4_K the scaled sum
// of each 32 q's, for the mins); then the 128 weight rows' int8 values, in two halves of
// 128 values (shared memory holds 46 KB), with a scale per 32 values (Q8_0: d; Q4_K:
// d * sc, and dmin * m for the min term: nibbles 0..15 are the int8 values; Q6_K: q - 32
// with a scale per 16 values, two mma per 32-value block, see mma_half). Warp w holds
// rows 16 (w % 4) .. +15 and 64 + 16 (w % 4) .. +15 (two m-tiles: a gate row and its up
// row in one thread) x tokens 32 (w / 4) .. +31 (four n-tiles); per 32-value block each
// warp issues 8 mma and adds each s32 result, times its row and token scales, to f32
// accumulators (minus dmin m x the token's block sum for Q4_K). A warp whose tokens are
// all past the chunk's end skips the multiply (partial tiles), so do n-tiles past it.
//
// Fragments (PTX ISA, m16n8k32 .s8): g = lane / 4, t = lane % 4; A (16 x 32, row) regs
// A[g][4t..], A[g+8][4t..], A[g][16+4t..], A[g+8][16+4t..]; B (32 x 8, col) regs
// B[4t..][g], B[16+4t..][g]; D regs (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1). Weight rows
// and token rows are k-contiguous in shared memory, each 32-value block's 8 words stored in
// the order 0 4 1 5 2 6 3 7 (mma_pw: the same for A and B, so the dot is unchanged): a
// lane's two words of a block (4t.. and 16+4t..) are adjacent, one 64-bit load. Rows are
// padded by 32 bytes (a stride of 8 mod 32 words): the 16 lanes of each half-warp phase
// (4 g x 4 t, 2 words each) hit 32 distinct banks.

#define MMA_XW (256 / 4 + 8)  // u32 words per token row of the step's int8 activations
#define MMA_WW (128 / 4 + 8)  // u32 words per weight row of a half step
#define MMA_TILE_TOKENS 64    // tokens the warps cover (GEMM_BN <= this)

#if GEMM_BN > MMA_TILE_TOKENS
#error "the mma tile covers 64 tokens: GEMM_BN must not exceed it"
#endif

// Integers to floats and back without the conversion unit (16 results per SM and clock
// on sm_90, against 128 FFMA): the float 1.5 * 2^23 has an ulp of 1, so its bit pattern
// plus an integer |n| < 2^22 is the float 1.5 * 2^23 + n exactly, and fmaf(v, s, 1.5 * 2^23)
// rounds v * s to the nearest integer (ties to even, as rintf) into the low mantissa bits.
#define MMA_MAGIC 0x4B400000u
#define MMA_MAGIC_F 12582912.0f

// D = A B + MMA_MAGIC for one m16n8k32 s8 tile: each D word read as a float is
// MMA_MAGIC_F + the block dot (|dot| <= 32 * 127 * 127 < 2^22), so one FADD converts it.
// Every lane of the warp calls it together.
DEV void mma_s8(const u32 (&a)[4], const u32 (&b)[2], int (&d)[4]) {
#if defined(HMOE_EMU)
    emu_mma_s8(a, b, (int)MMA_MAGIC, d);
#elif __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %10, %10, %10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(MMA_MAGIC));
#else
    d[0] = d[1] = d[2] = d[3] = 0;
    __trap();  // below sm_80: gpu/gemm.rs never selects these kernels
#endif
}

// The block dot in a D word of mma_s8, as a float (exact).
DEV float mma_dot(int d) { return AS_FLOAT((u32)d) - MMA_MAGIC_F; }

// Position of word w (0..7: values 4w..4w+3) of a 32-value block in shared memory.
DEV u32 mma_pw(u32 w) { return 2 * (w & 3) + (w >> 2); }

// Two adjacent shared words (8-byte aligned) as one load.
#ifndef HMOE_EMU
DEV void lds2(const u32* p, u32& a, u32& b) {
    uint2 v = *(const uint2*)p;
    a = v.x, b = v.y;
}
DEV void lds2f(const float* p, float& a, float& b) {
    float2 v = *(const float2*)p;
    a = v.x, b = v.y;
}
#else
DEV void lds2(const u32* p, u32& a, u32& b) {
    emu_align(p, 8);
    a = p[0], b = p[1];
}
DEV void lds2f(const float* p, float& a, float& b) {
    emu_align(p, 8);
    a = p[0], b = p[1];
}
#endif

// Four MMA_MAGIC-biased integers (each in -127..127) as int8 bytes of one word: the low
// byte of each is the integer's two's complement byte.
DEV u32 pack_s8(const u32* u) { return PRMT(PRMT(u[0], u[1], 0x0040u), PRMT(u[2], u[3], 0x0040u), 0x5410u); }

// Shared tables of one tile.
struct MmaSmem {
    u32 xq[MMA_TILE_TOKENS][MMA_XW];  // the step's activations, int8 (mma_pw order)
    float xd[8][MMA_TILE_TOKENS];     // scale per 32-value block and token
    float xs[8][MMA_TILE_TOKENS];     // scale x sum of the block's q (Q4_K mins)
    u32 wq[GEMM_BM][MMA_WW];          // the half step's weights, int8 (mma_pw order)
    float wd[GEMM_BM][4];             // weight scale per row and 32-value block
    float wm[GEMM_BM][4];             // Q4_K: dmin x m; Q6_K: the block's second scale
};

// Quantises values k0 .. k0 + 255 of the tile's token rows: thread (token tid / 4,
// quarter tid % 4) takes 64 values, two 32-value blocks. Q8_0 weights: a scale per 32
// values (act_round's Q8_0 blocks); k-quants: one per 256 (Q8_K blocks; the 4 threads of
// a token are 4 consecutive lanes).
template <int T, class XRow>
DEV void mma_load_x(MmaSmem& sm, XRow xrow, u32 nt, u32 cols, u32 k0) {
    const u32 tid = threadIdx.x, t = tid >> 2, j = tid & 3, k = k0 + 64 * j;
    const float* p = t < nt ? xrow(t) + k : nullptr;
    // Two passes over the thread's 64 values: the largest magnitudes, then (from L1) the
    // quantised values. Holding all 64 between the two took 64 registers.
    bool ok[2];
    float am[2];
    for (u32 h = 0; h < 2; ++h) {
        ok[h] = p && k + 32 * h + 32 <= cols;
        am[h] = 0.0f;
        for (u32 i = 0; i < 8; ++i) {
            float o[4];
            if (ok[h]) ldf4(p + 32 * h + 4 * i, o);
            else zero4(o);
            for (u32 e = 0; e < 4; ++e) am[h] = fmaxf(am[h], fabsf(o[e]));
        }
    }
    if (T != T_Q8_0) {
        float a = fmaxf(am[0], am[1]);
        a = fmaxf(a, SHFL_XOR(a, 1));
        a = fmaxf(a, SHFL_XOR(a, 2));
        am[0] = am[1] = a;
    }
    // |v| <= amax, so |v * id| <= 127 (to a few ulps) and rounds into -127..127: no clamp.
    for (u32 h = 0; h < 2; ++h) {
        float d = am[h] / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        u32 bsum = 0;  // sum of the biased patterns: 32 MMA_MAGIC + sum q (mod 2^32)
        for (u32 i = 0; i < 8; ++i) {
            float o[4];
            if (ok[h]) ldf4(p + 32 * h + 4 * i, o);
            else zero4(o);
            u32 u[4];
            for (u32 e = 0; e < 4; ++e) {
                u[e] = AS_UINT(fmaf(o[e], id, MMA_MAGIC_F));
                if (T == T_Q4K) bsum += u[e];
            }
            sm.xq[t][16 * j + 8 * h + mma_pw(i)] = pack_s8(u);
        }
        sm.xd[2 * j + h][t] = d;
        if (T == T_Q4K) sm.xs[2 * j + h][t] = d * (float)(int)(bsum - 32u * MMA_MAGIC);
    }
}

// Weight values 128 hh .. 128 hh + 127 of step s of the tile's 128 rows into sm.wq / wd / wm,
// in two parts: `fetch` issues every global load of the half step (or of a batch of its
// rows) into registers (`Regs`), `put` converts them and stores them in shared memory.
// So a thread waits for memory once per half step (twice for Q8_0's two batches), where
// the loop of before (load, convert and store one row after the other, with a
// lane-dependent branch for the scales in it) waited once per row: on an H200, 8 q4_k_m
// experts x 64 tokens took 225 us that way and 154 us this way (docs/notes/cuda-mma.md
// "Session 11"). Fetching the next half step during the mma as well (registers carried
// across the multiply) measured the same and spilled, so it is not done.
template <int T, class WRow> struct MmaW;

// Four 6-bit values (bytes 0..63) minus 32 each, as int8 bytes: with bit 7 set no byte
// borrows from the next, and flipping it back gives b - 32 mod 256.
DEV u32 q6_s8(u32 v) { return ((v | 0x80808080u) - 0x20202020u) ^ 0x80808080u; }

// Q8_0: lane 8 c + m of warp w loads word m of block 8 s + 4 hh + c of rows 16 w .. +15,
// in two batches of 8 rows (each word takes two aligned loads: all 16 rows in flight spilled);
// its scales: lane l takes (row 16 w + 8 b + l / 4, block l % 4) of batch b.
template <class WRow> struct MmaW<T_Q8_0, WRow> {
    static constexpr u32 BATCHES = 2;
    struct Regs {
        u32 lo[8], hi[8], dh;
    };
    static DEV void fetch(Regs& g, WRow wrow, u32 cols, u32 s, u32 hh, u32 b) {
        const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, c = lane >> 3, m = lane & 7;
        const u32 bi = 8 * s + 4 * hh + c, sbi = 8 * s + 4 * hh + (lane & 3);
        const bool ok = 32 * (bi + 1) <= cols;
        for (u32 k = 0; k < 8; ++k) {
            const u8* qp = wrow(16 * warp + 8 * b + k) + (u64)bi * 34 + 2 + 4 * m;
            g.lo[k] = g.hi[k] = 0;
            if (ok) ld32_a2(qp, (u32)(u64)qp & 2u, &g.lo[k], &g.hi[k]);
        }
        g.dh = 0xffffffffu;  // no block: scale 0 (a real one is 16 bits)
        if (32 * (sbi + 1) <= cols)
            g.dh = ld16(wrow(16 * warp + 8 * b + (lane >> 2)) + (u64)sbi * 34);
    }
    static DEV void put(MmaSmem& sm, const Regs& g, WRow wrow, u32, u32 s, u32 hh, u32 b) {
        const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, c = lane >> 3, m = lane & 7;
        const u32 bi = 8 * s + 4 * hh + c;
        for (u32 k = 0; k < 8; ++k) {
            const u32 r = 16 * warp + 8 * b + k;
            const u32 mis = (u32)(u64)(wrow(r) + (u64)bi * 34 + 2 + 4 * m) & 2u;
            sm.wq[r][8 * c + mma_pw(m)] = FSHR(g.lo[k], g.hi[k], 8 * mis);
        }
        sm.wd[16 * warp + 8 * b + (lane >> 2)][lane & 3] =
            g.dh == 0xffffffffu ? 0.0f : h2f(g.dh);
    }
};

// Q4_K: lane 16 rr + m of warp w loads word m of the half's 64 quant bytes (group
// 2 hh + m / 8) of row 16 it + 2 w + rr: its low nibbles are values 64 (m / 8) + 4 (m % 8)
// .. +3 of the half, its high nibbles the same + 32. Thread tid decodes the scales and
// mins of group 2 hh + tid / 128 of row tid % 128.
template <class WRow> struct MmaW<T_Q4K, WRow> {
    static constexpr u32 BATCHES = 1;
    struct Regs {
        u32 q[8], dm, s0, s1, s2;
    };
    static DEV void fetch(Regs& g, WRow wrow, u32, u32 s, u32 hh, u32) {
        const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, m = lane & 15;
        const u32 gq = 2 * hh + (m >> 3);
        for (u32 it = 0; it < 8; ++it)
            g.q[it] = ld32(wrow(16 * it + 2 * warp + (lane >> 4)) + (u64)s * 144 + 16 + 32 * gq +
                           4 * (m & 7));
        const u8* sb = wrow(threadIdx.x & 127) + (u64)s * 144;
        g.dm = ld32(sb), g.s0 = ld32(sb + 4), g.s1 = ld32(sb + 8), g.s2 = ld32(sb + 12);
    }
    static DEV void put(MmaSmem& sm, const Regs& g, WRow, u32, u32, u32 hh, u32) {
        const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, m = lane & 15;
        const u32 gl = m >> 3;
        for (u32 it = 0; it < 8; ++it) {
            u32 r = 16 * it + 2 * warp + (lane >> 4);
            sm.wq[r][16 * gl + mma_pw(m & 7)] = g.q[it] & 0x0f0f0f0fu;
            sm.wq[r][16 * gl + 8 + mma_pw(m & 7)] = (g.q[it] >> 4) & 0x0f0f0f0fu;
        }
        const u32 sr = threadIdx.x & 127, sg = threadIdx.x >> 7;
        float da, ma, db, mb;
        kscales(g.dm, g.s0, g.s1, g.s2, 2 * hh + sg, &da, &ma, &db, &mb);
        sm.wd[sr][2 * sg] = da, sm.wd[sr][2 * sg + 1] = db;
        sm.wm[sr][2 * sg] = ma, sm.wm[sr][2 * sg + 1] = mb;
    }
};

// Q6_K (210-byte blocks, 2-byte aligned): half hh is ggml's 128-value half n: value
// 32 qq + l comes from ql[64 hh + 32 (qq % 2) + l] (nibble qq / 2) and bits 2 qq of
// qh[32 hh + l], scale sc[8 hh + 2 qq + l / 16]. Lane 16 rr + w of warp w' loads ql word w
// (l = 4 (w % 8) .., blocks qq = w / 8 and w / 8 + 2) of row 16 it + 2 w' + rr. Thread tid
// converts scales 8 hh + 4 (tid / 128) .. +3 of row tid % 128: the scale of a block's first
// 16 values goes to wd, of its last 16 to wm (mma_half then splits the block's dot in two).
template <class WRow> struct MmaW<T_Q6K, WRow> {
    static constexpr u32 BATCHES = 1;
    struct Regs {
        u32 ql[8][2], qh[8][2], dh, sc01, sc23;
    };
    static DEV void fetch(Regs& g, WRow wrow, u32, u32 s, u32 hh, u32) {
        const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, w = lane & 15;
        for (u32 it = 0; it < 8; ++it) {
            const u8* blk = wrow(16 * it + 2 * warp + (lane >> 4)) + (u64)s * 210;
            const u32 mis = (u32)(u64)blk & 2u;
            ld32_a2(blk + 64 * hh + 4 * w, mis, &g.ql[it][0], &g.ql[it][1]);
            ld32_a2(blk + 128 + 32 * hh + 4 * (w & 7), mis, &g.qh[it][0], &g.qh[it][1]);
        }
        const u8* sb = wrow(threadIdx.x & 127) + (u64)s * 210;
        const u32 sp = threadIdx.x >> 7;
        g.dh = ld16(sb + 208);
        g.sc01 = ld16(sb + 192 + 8 * hh + 4 * sp);  // 2-byte aligned: two 16-bit loads
        g.sc23 = ld16(sb + 192 + 8 * hh + 4 * sp + 2);
    }
    static DEV void put(MmaSmem& sm, const Regs& g, WRow wrow, u32, u32 s, u32, u32) {
        const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, w = lane & 15;
        const u32 q0 = w >> 3;
        for (u32 it = 0; it < 8; ++it) {
            u32 r = 16 * it + 2 * warp + (lane >> 4);
            const u32 mis = 8 * ((u32)(u64)(wrow(r) + (u64)s * 210) & 2u);
            u32 ql = FSHR(g.ql[it][0], g.ql[it][1], mis);
            u32 qh = FSHR(g.qh[it][0], g.qh[it][1], mis);
            u32 va = (ql & 0x0f0f0f0fu) | (((qh >> (2 * q0)) & 0x03030303u) << 4);
            u32 vb = ((ql >> 4) & 0x0f0f0f0fu) | (((qh >> (2 * q0 + 4)) & 0x03030303u) << 4);
            sm.wq[r][8 * q0 + mma_pw(w & 7)] = q6_s8(va);
            sm.wq[r][8 * (q0 + 2) + mma_pw(w & 7)] = q6_s8(vb);
        }
        const u32 sr = threadIdx.x & 127, sp = threadIdx.x >> 7;
        const float d = h2f(g.dh);
        const u32 sc = g.sc01 | (g.sc23 << 16);  // scales 4 sp .. 4 sp + 3 of the half
        for (u32 e = 0; e < 4; ++e) {
            float f = d * (float)(int)(signed char)(u8)(sc >> (8 * e));
            if (e & 1) sm.wm[sr][2 * sp + (e >> 1)] = f;
            else sm.wd[sr][2 * sp + (e >> 1)] = f;
        }
    }
};


// acc[mi][nj][i] += the half step's products of tile row 64 mi + 16 (w % 4) + g + 8 (i / 2)
// and token 32 (w / 4) + 8 nj + 2 t + i % 2 (mma_row / mma_tok), blocks below `nb`.
template <int T>
DEV void mma_half(const MmaSmem& sm, u32 hh, u32 nb, u32 nt, float (&acc)[2][4][4]) {
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const u32 r0 = 16 * (warp & 3) + g, tok0 = 32 * (warp >> 2);
    if (tok0 >= nt) return;  // the whole warp: its tokens are past the chunk's end
    for (u32 bl = 0; bl < nb; ++bl) {
        u32 a[2][4];
        float wd[2][2], wm[2][2];
        for (u32 mi = 0; mi < 2; ++mi) {
            u32 r = 64 * mi + r0;
            lds2(&sm.wq[r][8 * bl + 2 * t], a[mi][0], a[mi][2]);
            lds2(&sm.wq[r + 8][8 * bl + 2 * t], a[mi][1], a[mi][3]);
            wd[mi][0] = sm.wd[r][bl], wd[mi][1] = sm.wd[r + 8][bl];
            wm[mi][0] = sm.wm[r][bl], wm[mi][1] = sm.wm[r + 8][bl];
        }
        const u32 xb = 4 * hh + bl;  // the token block within the step
        for (u32 nj = 0; nj < 4; ++nj) {
            u32 tb = tok0 + 8 * nj;
            if (tb >= nt) break;  // warp-uniform
            u32 b[2];
            float xd[2], xs[2];
            lds2(&sm.xq[tb + g][32 * hh + 8 * bl + 2 * t], b[0], b[1]);
            lds2f(&sm.xd[xb][tb + 2 * t], xd[0], xd[1]);
            if (T == T_Q4K) lds2f(&sm.xs[xb][tb + 2 * t], xs[0], xs[1]);
            for (u32 mi = 0; mi < 2; ++mi) {
                int d[4];
                if (T == T_Q6K) {
                    // A fragment regs 0, 1 hold k 0..15, regs 2, 3 k 16..31: one mma per
                    // 16-value sub-block, each with its scale.
                    const u32 lo[4] = {a[mi][0], a[mi][1], 0u, 0u};
                    const u32 hi[4] = {0u, 0u, a[mi][2], a[mi][3]};
                    int e[4];
                    mma_s8(lo, b, d);
                    mma_s8(hi, b, e);
                    for (u32 i = 0; i < 4; ++i) {
                        float& c = acc[mi][nj][i];
                        c = fmaf(mma_dot(d[i]), wd[mi][i >> 1] * xd[i & 1], c);
                        c = fmaf(mma_dot(e[i]), wm[mi][i >> 1] * xd[i & 1], c);
                    }
                    continue;
                }
                mma_s8(a[mi], b, d);
                for (u32 i = 0; i < 4; ++i) {
                    float& c = acc[mi][nj][i];
                    c = fmaf(mma_dot(d[i]), wd[mi][i >> 1] * xd[i & 1], c);
                    if (T == T_Q4K) c = fmaf(-wm[mi][i >> 1], xs[i & 1], c);
                }
            }
        }
    }
}

DEV u32 mma_row(u32 mi, u32 i) {
    return 64 * mi + 16 * ((threadIdx.x >> 5) & 3) + ((threadIdx.x & 31) >> 2) + 8 * (i >> 1);
}
DEV u32 mma_tok(u32 nj, u32 i) {
    return 32 * (threadIdx.x >> 7) + 8 * nj + 2 * (threadIdx.x & 3) + (i & 1);
}

// acc as gemm_tile's contract (gemm.cu) with the element layout of mma_row / mma_tok:
// wrow(r) the first byte of tile row r < GEMM_BM (rows past the matrix end point at a
// valid row), xrow(t) the f32 row of token t < nt (16-byte aligned). Every thread calls it.
template <int T, class WRow, class XRow>
DEV void mma_tile(WRow wrow, XRow xrow, u32 cols, u32 nt, float (&acc)[2][4][4]) {
    SHARED __attribute__((aligned(16))) MmaSmem sm;
    for (u32 mi = 0; mi < 2; ++mi)
        for (u32 nj = 0; nj < 4; ++nj)
            for (u32 i = 0; i < 4; ++i) acc[mi][nj][i] = 0.0f;
    const u32 steps = (cols + 255) / 256;
    using W = MmaW<T, WRow>;
    typename W::Regs g;
    for (u32 s = 0; s < steps; ++s) {
        const u32 k0 = 256 * s;
        mma_load_x<T>(sm, xrow, nt, cols, k0);
        for (u32 hh = 0; hh < 2; ++hh) {
            const u32 kh = k0 + 128 * hh;
            if (kh >= cols) break;  // a Q8_0 row's partial last step (block-uniform)
            const u32 nb = cols - kh >= 128 ? 4 : (cols - kh) / 32;
            for (u32 b = 0; b < W::BATCHES; ++b) {
                W::fetch(g, wrow, cols, s, hh, b);
                W::put(sm, g, wrow, cols, s, hh, b);
            }
            SYNCTHREADS();
            mma_half<T>(sm, hh, nb, nt, acc);
            SYNCTHREADS();  // read: the next half or step may overwrite it
        }
    }
}

// gemm_gate_up of gemm.cu on the mma tile.
template <int T>
DEV void mma_gate_up(const u64* items, const u32* rows, const float* x, float* act, u32 hidden,
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
        float acc[2][4][4];
        mma_tile<T>(wrow, xrow, hidden, nt, acc);
        for (u32 nj = 0; nj < 4; ++nj)
            for (u32 i = 0; i < 4; ++i) {
                u32 j = j0 + mma_row(0, i), t = mma_tok(nj, i);
                if (j < ffn && t < nt)
                    act[(u64)(pair0 + t0 + t) * ffn + j] = silu(acc[0][nj][i]) * acc[1][nj][i];
            }
    }
}

// gemm_down of gemm.cu on the mma tile.
template <int T>
DEV void mma_down(const u64* items, const float* wts, const float* act, float* y, u32 hidden,
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
        float acc[2][4][4];
        mma_tile<T>(wrow, xrow, ffn, nt, acc);
        for (u32 mi = 0; mi < 2; ++mi)
            for (u32 nj = 0; nj < 4; ++nj)
                for (u32 i = 0; i < 4; ++i) {
                    u32 r = i0 + mma_row(mi, i), t = mma_tok(nj, i);
                    if (r < hidden && t < nt) {
                        u32 p = pair0 + t0 + t;
                        y[(u64)p * hidden + r] = wts[p] * acc[mi][nj][i];
                    }
                }
    }
}

// gemm_linear of gemm.cu on the mma tile.
template <int T>
DEV void mma_linear(const u8* w, const float* x, float* y, u32 rows, u32 cols, u32 n) {
    u32 r0 = blockIdx.x * GEMM_BM, t0 = blockIdx.y * GEMM_BN;
    if (t0 >= n) return;
    u32 nt = n - t0 < GEMM_BN ? n - t0 : GEMM_BN;
    u64 rb = row_bytes<T>(cols);
    auto wrow = [&](u32 r) { return w + (r0 + r < rows ? r0 + r : rows - 1) * rb; };
    auto xrow = [&](u32 t) { return x + (u64)(t0 + t) * cols; };
    float acc[2][4][4];
    mma_tile<T>(wrow, xrow, cols, nt, acc);
    for (u32 mi = 0; mi < 2; ++mi)
        for (u32 nj = 0; nj < 4; ++nj)
            for (u32 i = 0; i < 4; ++i) {
                u32 r = r0 + mma_row(mi, i), t = mma_tok(nj, i);
                if (r < rows && t < nt) y[(u64)(t0 + t) * rows + r] = acc[mi][nj][i];
            }
}

#define INSTANTIATE_MMA(T, name)                                                              \
    KERNEL GEMM_BOUNDS void mma_gate_up_##name(const u64* items, const u32* rows,              \
                                               const float* x, float* act, u32 hidden,        \
                                               u32 ffn) {                                     \
        mma_gate_up<T>(items, rows, x, act, hidden, ffn);                                     \
    }                                                                                         \
    KERNEL GEMM_BOUNDS void mma_down_##name(const u64* items, const float* wts,                \
                                            const float* act, float* y, u32 hidden,           \
                                            u32 ffn) {                                        \
        mma_down<T>(items, wts, act, y, hidden, ffn);                                         \
    }                                                                                         \
    KERNEL GEMM_BOUNDS void mma_linear_##name(const u8* w, const float* x, float* y,           \
                                              u32 rows, u32 cols, u32 n) {                    \
        mma_linear<T>(w, x, y, rows, cols, n);                                                \
    }

INSTANTIATE_MMA(T_Q8_0, q8_0)
INSTANTIATE_MMA(T_Q4K, q4_k)
INSTANTIATE_MMA(T_Q6K, q6_k)
