// int8 (dp4a) decode pass (docs/notes/cuda-dp4a.md): appended after fused.cu, whose
// kernels.cu pieces (Raw<T>::load, run_off, Step, h2f, reduce_rows, silu, ACT_*) it uses.
// A one-token expert pass as llama.cpp's mmvq does it: the activations as int8 values and
// a scale per block (x: quantised by every gate_up block into shared memory; the SwiGLU
// products: by the last gate_up block to finish a block of them, into a side buffer),
// the weights' quants as packed bytes, __dp4a integer dots per 4 values (exact), and the
// f32 scales applied per sub-block. The ints are the values the CPU kernels multiply
// with (q of Q8_K / Q8_0, computed as round_block does), so the result equals the f32
// fused pass to float rounding (only the order of the f32 sums differs).
//
// Launches: gate_up_q8_<type>_<fmt> (grid (ffn / WARPS, items), fmt: the down weights'
// activation format q8_0 / q8_k) and down_combine_q8_<type> (grid (hidden / Q8_DN_ROWS,
// tokens)): two, with no act_round before them (three while gpu.rs still runs it: x
// rounded first is quantised to the same ints, see quant_span).

#ifndef Q8_MAX_HIDDEN
#define Q8_MAX_HIDDEN 8192  // x values a gate_up block quantises into shared memory
#endif
// Row-steps in flight per row: gate_up walks gate and up together (2 rows), down one.
#ifndef Q8_U_GU
#define Q8_U_GU 2
#endif
#ifndef Q8_U_DN
#define Q8_U_DN 4
#endif
// Output rows per down_combine_q8 block (grid ceil(hidden / Q8_DN_ROWS) x tokens): each
// warp walks its pair's Q8_DN_ROWS rows together (they share the pair's activation
// loads; index loads and block start-up are paid once per Q8_DN_ROWS rows). Q8_U_DN
// row-steps in flight are spread over them. Rust's DN_ROWS (q8.rs) must match (tested).
#ifndef Q8_DN_ROWS
#define Q8_DN_ROWS 4
#endif
static_assert((Q8_DN_ROWS & (Q8_DN_ROWS - 1)) == 0, "Q8_DN_ROWS: a power of two (reduce_rows)");

// The activation format the CPU kernels use with weights of type T: Q8_0 (blocks of 32)
// for Q8_0, Q8_K (blocks of 256) for the k-quants.
template <int T> struct QAct {
    enum { BS = T == T_Q8_0 ? 32 : 256, FMT = T == T_Q8_0 ? ACT_Q8_0 : ACT_Q8K };
};

// Four int8 values (4-byte aligned, shared or global memory) as one dp4a operand.
DEV int ldq4(const i8* p) { return (int)ld32((const u8*)p); }

// v as a float, exactly, for |v| < 2^22: v goes into the mantissa of 1.5 * 2^23 (one
// integer and one float add; I2F runs at 1/8 of the FMA rate on sm_90). The sums below
// stay under 2^22 (bounds at each use).
DEV float i2f(int v) { return AS_FLOAT(0x4B400000u + (u32)v) - 12582912.0f; }

#define DP4A(a, b) __dp4a((int)(a), (int)(b), 0)

// Q8_WIDE=1: Q4_K gate/up rows whose length is a multiple of 1024 are read as 16-byte
// chunks (dq_row_wide_q4k): 8 registers per lane carry 16 quant bytes and their
// super-block's header, against 5 for 4 bytes in the row walk (whose 4 header words per
// step are 4 more load instructions), and a 2048-value gate+up pair takes 2 rounds of
// loads instead of 4. 0: the row walk for every type (the device sweep times both).
#ifndef Q8_WIDE
#define Q8_WIDE 1
#endif
#ifndef Q8_WIDE_U
#define Q8_WIDE_U 1  // warp-steps (1024 values) of the gate+up pair in flight
#endif
#ifndef HMOE_EMU
DEV void ld4x32(const u8* p, u32* o) {  // 16-byte aligned
    uint4 v = *(const uint4*)p;
    o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
}
#endif

// The warp quantises nb consecutive fmt blocks at p (ACT_Q8K: nb = 1, 256 values;
// ACT_Q8_0: nb = 1 ..= 8 blocks of 32) exactly as round_block does each: q gets the int8
// values, d[b] (from lane 0) block b's scale, rp (if not null; may be p) the rounded
// values q * d. All of the lane's values are loaded first: a Q8_0 span taken one block
// after another waited on 8 L2 round trips in a row. Quantising values that round_block
// already rounded gives the same ints (the rounded values are q * d, their largest
// magnitude 127 |d|) and d within an ulp: so x may come rounded by act_round or not.
DEV void quant_span(const float* p, u32 fmt, u32 nb, i8* q, float* d, float* rp) {
    u32 lane = threadIdx.x & 31;
    u32 nv = fmt == ACT_Q8K ? 8 : nb;  // values per lane
    float vals[8];
    for (u32 k = 0; k < 8; ++k) vals[k] = k < nv ? LD_CG(p + lane + 32 * k) : 0.0f;
    if (fmt == ACT_Q8_0) {
        // Lane L holds value L of each block; each lane writes back only its own values.
        for (u32 k = 0; k < 8; ++k) {
            if (k < nb) {  // the same for the whole warp
                float amax = fabsf(vals[k]);
                for (int m = 16; m > 0; m >>= 1) amax = fmaxf(amax, SHFL_XOR(amax, m));
                float dd = amax / 127.0f;
                float id = dd != 0.0f ? 1.0f / dd : 0.0f;
                float qq = fminf(fmaxf(rintf(vals[k] * id), -127.0f), 127.0f);
                q[lane + 32 * k] = (i8)(int)qq;
                if (rp) rp[lane + 32 * k] = qq * dd;
                if (lane == 0) d[k] = dd;
            }
        }
        return;
    }
    // Q8_K: the largest magnitude and the first index holding it (as round_block).
    float amax = 0.0f, idx = 1e9f;
    for (u32 k = 0; k < 8; ++k) {
        float av = fabsf(vals[k]);
        if (av > amax) {
            amax = av;
            idx = (float)(lane + 32 * k);
        }
    }
    for (int m = 16; m > 0; m >>= 1) {
        float oa = SHFL_XOR(amax, m), oi = SHFL_XOR(idx, m);
        if (oa > amax || (oa == amax && oi < idx)) {
            amax = oa;
            idx = oi;
        }
    }
    if (amax == 0.0f) {
        for (u32 k = 0; k < 8; ++k) {
            q[lane + 32 * k] = 0;
            if (rp) rp[lane + 32 * k] = 0.0f;
        }
        if (lane == 0) d[0] = 0.0f;
        return;
    }
    // Every lane read the block before any lane writes it back.
    float mx = LD_CG(p + (u32)idx);
    mx = SHFL_XOR(mx, 0);
    float iscale = -127.0f / mx;
    float dd = 1.0f / iscale;
    for (u32 k = 0; k < 8; ++k) {
        float qq = fminf(fmaxf(rintf(iscale * vals[k]), -127.0f), 127.0f);
        q[lane + 32 * k] = (i8)(int)qq;
        if (rp) rp[lane + 32 * k] = qq * dd;
    }
    if (lane == 0) d[0] = dd;
}

// The lane's share of one 256-value step s of a row (its runs e .. e+3 and e+32 .. e+35,
// e = run_off(s, lane), as Raw<T>::load read them) against int8 activations xq with
// per-block scales xd (index: value / QAct<T>::BS).
template <int T> DEV float dq_step(const Raw<T>& r, u32 lane, const i8* xq, const float* xd,
                                   u32 s, u32 cols);

// Q4_K / Q5_K: quants qa (sub-block 2g, g = lane / 8) and qb (2g + 1), 0..31 per byte.
// sum_k (d sc q_k - dmin m) x_k = d sc (q . x) - dmin m (1 . x): both dots per 4 values
// by dp4a. Bounds: |q . x| <= 4 * 31 * 127, scales <= 63, so each sum < 2^21.
DEV float kquant_step(u32 qa, u32 qb, u32 dm, u32 s0, u32 s1, u32 s2, u32 lane, const i8* xq,
                      const float* xd, u32 s) {
    u32 g = lane >> 3, e = run_off(s, lane);
    int xa = ldq4(xq + e), xb = ldq4(xq + e + 32);
    int ia = DP4A(qa, xa), ib = DP4A(qb, xb);
    int na = DP4A(0x01010101, xa), nb = DP4A(0x01010101, xb);
    u32 sc, mn;  // kscales' unpacking, kept as bytes
    if (g < 2) {
        sc = s0 & 0x3f3f3f3fu;
        mn = s1 & 0x3f3f3f3fu;
    } else {
        sc = (s2 & 0x0f0f0f0fu) | ((s0 >> 2) & 0x30303030u);
        mn = ((s2 >> 4) & 0x0f0f0f0fu) | ((s1 >> 2) & 0x30303030u);
    }
    u32 j = 16 * (g & 1);
    int sca = (sc >> j) & 0xff, scb = (sc >> (j + 8)) & 0xff;
    int mna = (mn >> j) & 0xff, mnb = (mn >> (j + 8)) & 0xff;
    float d = h2f(dm & 0xffffu), dmin = h2f(dm >> 16);
    return xd[s] * (d * i2f(sca * ia + scb * ib) - dmin * i2f(mna * na + mnb * nb));
}

template <> DEV float dq_step<T_Q4K>(const Raw<T_Q4K>& r, u32 lane, const i8* xq,
                                     const float* xd, u32 s, u32) {
    return kquant_step(r.q & 0x0f0f0f0fu, (r.q >> 4) & 0x0f0f0f0fu, r.dm, r.s0, r.s1, r.s2,
                       lane, xq, xd, s);
}

template <> DEV float dq_step<T_Q5K>(const Raw<T_Q5K>& r, u32 lane, const i8* xq,
                                     const float* xd, u32 s, u32) {
    u32 g = lane >> 3;
    u32 qa = (r.q & 0x0f0f0f0fu) | (((r.h >> (2 * g)) & 0x01010101u) << 4);
    u32 qb = ((r.q >> 4) & 0x0f0f0f0fu) | (((r.h >> (2 * g + 1)) & 0x01010101u) << 4);
    return kquant_step(qa, qb, r.dm, r.s0, r.s1, r.s2, lane, xq, xd, s);
}

// Q6_K: 6-bit quants 0..63 become q - 32 as signed bytes with one add and one xor (q +
// 0x60 never carries out of its byte; flipping bit 7 subtracts 128). Bounds: |q . x| <=
// 4 * 32 * 127, |scale| <= 128: the sum of two < 2^22.
template <> DEV float dq_step<T_Q6K>(const Raw<T_Q6K>& r, u32 lane, const i8* xq,
                                     const float* xd, u32 s, u32) {
    u32 e = run_off(s, lane);
    u32 sh = 4 * ((lane >> 3) & 1), fs = 8 * r.mis;
    u32 qla = FSHR(r.alo, r.ahi, fs), qlb = FSHR(r.blo, r.bhi, fs), h = FSHR(r.hlo, r.hhi, fs);
    u32 va = ((qla >> sh) & 0x0f0f0f0fu) | (((h >> sh) & 0x03030303u) << 4);
    u32 vb = ((qlb >> sh) & 0x0f0f0f0fu) | (((h >> (sh + 2)) & 0x03030303u) << 4);
    va = (va + 0x60606060u) ^ 0x80808080u;
    vb = (vb + 0x60606060u) ^ 0x80808080u;
    int ia = DP4A(va, ldq4(xq + e)), ib = DP4A(vb, ldq4(xq + e + 32));
    int sca = (int)(i8)(u8)r.sca, scb = (int)(i8)(u8)r.scb;
    return xd[s] * h2f(r.d) * i2f(sca * ia + scb * ib);
}

// Q8_0: blocks 8 s + 2 g (run a) and the next (run b), each with its own weight and
// activation scale; a partial last step (cols not a multiple of 256) skips runs past the
// row. Bound: |q . x| <= 4 * 127 * 127.
template <> DEV float dq_step<T_Q8_0>(const Raw<T_Q8_0>& r, u32 lane, const i8* xq,
                                      const float* xd, u32 s, u32 cols) {
    u32 e = run_off(s, lane), b = e / 32;
    bool va = e + 4 <= cols, vb = e + 36 <= cols;
    int xa = va ? ldq4(xq + e) : 0, xb = vb ? ldq4(xq + e + 32) : 0;
    u32 qa = FSHR(r.alo, r.ahi, 8 * r.mis), qb = FSHR(r.blo, r.bhi, 8 * (r.mis ^ 2u));
    float fa = va ? h2f(r.da) * xd[b] : 0.0f, fb = vb ? h2f(r.db) * xd[b + 1] : 0.0f;
    return fa * i2f(DP4A(qa, xa)) + fb * i2f(DP4A(qb, xb));
}

// Nothing to do between a row's first loads and its first dots (down_combine_q8).
struct NoPre {
    DEV void operator()() const {}
};

// K steps (s0 ..) of NR rows: all raw loads first, then pre() if this is the row's first
// group (gate_up_q8 quantises x there, while the loads are in flight), then the dots.
template <int T, int NR, int K> struct DqGroup {
    template <class Pre>
    static DEV void run(const u8* const* w, const i8* xq, const float* xd, u32 cols, u32 s0,
                        u32 lane, float (&acc)[NR][TT], Pre& pre) {
        Raw<T> raw[K][NR];
        for (int u = 0; u < K; ++u) {
            u32 e = run_off(s0 + u, lane);
            for (int r = 0; r < NR; ++r)
                raw[u][r].load(w[r] + (u64)(s0 + u) * Step<T>::B, lane, e + 4 <= cols,
                               e + 36 <= cols);
        }
        if (s0 == 0) pre();
        for (int u = 0; u < K; ++u)
            for (int r = 0; r < NR; ++r)
                acc[r][0] += dq_step<T>(raw[u][r], lane, xq, xd, s0 + u, cols);
    }
};

// The steps left after the groups of U: one group of the largest size that fits, then
// smaller ones (a down row of 3 steps at FFN 768 has all 3 in flight).
template <int T, int NR, int K> struct DqTail {
    template <class Pre>
    static DEV void run(const u8* const* w, const i8* xq, const float* xd, u32 cols, u32 s,
                        u32 steps, u32 lane, float (&acc)[NR][TT], Pre& pre) {
        if (steps - s >= K) {
            DqGroup<T, NR, K>::run(w, xq, xd, cols, s, lane, acc, pre);
            s += K;
        }
        DqTail<T, NR, K - 1>::run(w, xq, xd, cols, s, steps, lane, acc, pre);
    }
};
template <int T, int NR> struct DqTail<T, NR, 0> {
    template <class Pre>
    static DEV void run(const u8* const*, const i8*, const float*, u32, u32, u32, u32,
                        float (&)[NR][TT], Pre&) {}
};

// This lane's share of w[r] . x for NR rows of `cols` values against int8 x (xq, xd):
// acc[r][0] += partial sums (reduce with reduce_rows). pre() runs once, after the first
// group's loads are issued; every thread of the block reaches it (all walk as many steps).
template <int T, int NR, int U, class Pre>
DEV void dq_row(const u8* const* w, const i8* xq, const float* xd, u32 cols,
                float (&acc)[NR][TT], Pre& pre) {
    u32 lane = threadIdx.x & 31, steps = (cols + 255) / 256, s = 0;
    for (; s + U <= steps; s += U) DqGroup<T, NR, U>::run(w, xq, xd, cols, s, lane, acc, pre);
    DqTail<T, NR, U - 1>::run(w, xq, xd, cols, s, steps, lane, acc, pre);
}

// Q8_WIDE: this lane's share of NR Q4_K rows of `cols` values (a multiple of 1024)
// against int8 x. A warp-step covers 4 super-blocks: lane L reads super-block L / 8's
// 16-byte header and its 16-byte chunk m = L % 8 of the quants (bytes 16 m ..: low
// nibbles are values 64 g + 16 h + k of the super-block, g = m / 2, h = m % 2, k < 16,
// high nibbles 32 further on). U warp-steps of all NR rows are loaded before any dot;
// pre() runs after the first group's loads. Bounds: |q . x| <= 16 * 15 * 127 per
// sub-block, times a 6-bit scale, two of them < 2^22.
template <int NR, int U, class Pre>
DEV void dq_row_wide_q4k(const u8* const* w, const i8* xq, const float* xd, u32 cols,
                         float (&acc)[NR][TT], Pre& pre) {
    u32 lane = threadIdx.x & 31, sb = lane >> 3, m = lane & 7, g = m >> 1;
    u32 steps = cols / 1024;
    for (u32 s0 = 0; s0 < steps; s0 += U) {
        u32 hd[U][NR][4], qs[U][NR][4];
        for (int u = 0; u < U; ++u)
            for (int r = 0; r < NR; ++r)
                if (s0 + u < steps) {
                    const u8* blk = w[r] + (u64)(4 * (s0 + u) + sb) * 144;
                    ld4x32(blk, hd[u][r]);
                    ld4x32(blk + 16 + 16 * m, qs[u][r]);
                }
        if (s0 == 0) pre();
        for (int u = 0; u < U; ++u) {
            if (s0 + u >= steps) break;
            u32 b = 4 * (s0 + u) + sb, e = 256 * b + 64 * g + 16 * (m & 1);
            u32 xa[4], xb[4];
            ld4x32((const u8*)(xq + e), xa);
            ld4x32((const u8*)(xq + e + 32), xb);
            int na = 0, nb = 0;
            for (int k = 0; k < 4; ++k) {
                na = __dp4a(0x01010101, (int)xa[k], na);
                nb = __dp4a(0x01010101, (int)xb[k], nb);
            }
            for (int r = 0; r < NR; ++r) {
                int ia = 0, ib = 0;
                for (int k = 0; k < 4; ++k) {
                    ia = __dp4a((int)(qs[u][r][k] & 0x0f0f0f0fu), (int)xa[k], ia);
                    ib = __dp4a((int)((qs[u][r][k] >> 4) & 0x0f0f0f0fu), (int)xb[k], ib);
                }
                u32 s0w = hd[u][r][1], s1w = hd[u][r][2], s2w = hd[u][r][3], sc, mn;
                if (g < 2) {
                    sc = s0w & 0x3f3f3f3fu;
                    mn = s1w & 0x3f3f3f3fu;
                } else {
                    sc = (s2w & 0x0f0f0f0fu) | ((s0w >> 2) & 0x30303030u);
                    mn = ((s2w >> 4) & 0x0f0f0f0fu) | ((s1w >> 2) & 0x30303030u);
                }
                u32 j = 16 * (g & 1);
                int sca = (sc >> j) & 0xff, scb = (sc >> (j + 8)) & 0xff;
                int mna = (mn >> j) & 0xff, mnb = (mn >> (j + 8)) & 0xff;
                u32 dm = hd[u][r][0];
                float d = h2f(dm & 0xffffu), dmin = h2f(dm >> 16);
                acc[r][0] += xd[b] * (d * i2f(sca * ia + scb * ib) -
                                      dmin * i2f(mna * na + mnb * nb));
            }
        }
    }
}

// Arrival counters as in arrive_and_round (fused.cu), for blocks of WARPS rows: the last
// gate_up block to finish a block of products quantises it for every pair of the item
// into actq (int8, [pair][ffn]) and actd (scales, [pair][ffn / 32], block b at b), writes
// the rounded values back to act (what act_round would leave), and zeroes its counter.
#define Q8_SPAN (WARPS / 32 + 2)
DEV void arrive_and_quant(const u64* items, float* act, i8* actq, float* actd, u32 ffn,
                          u32 fmt, u32* cnt) {
    SHARED u32 last_q8[Q8_SPAN];
    u32 bs = fmt == ACT_Q8K ? 256 : 32, nb = ffn / bs, rows = WARPS;
    u32 j0 = blockIdx.x * rows;
    u32 b0 = j0 / bs, b1 = (j0 + rows - 1) / bs;
    if (b1 >= nb) b1 = nb - 1;
    THREADFENCE();  // this thread's products are visible device-wide ...
    SYNCTHREADS();  // ... for every thread of the block, before thread 0 counts it in
    if (threadIdx.x == 0) {
        for (u32 b = b0; b <= b1; ++b) {
            u32 c0 = b * bs / rows, c1 = ((b + 1) * bs - 1) / rows;
            if (c1 >= gridDim.x) c1 = gridDim.x - 1;
            u32* c = cnt + (u64)blockIdx.y * nb + b;
            u32 is_last = ATOMIC_ADD(c, 1u) == c1 - c0 ? 1u : 0u;
            if (is_last) *c = 0;  // every arrival is in: zero for the next launch
            last_q8[b - b0] = is_last;
        }
        THREADFENCE();  // the count before the reads of the other blocks' products
    }
    SYNCTHREADS();
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    for (u32 b = b0; b <= b1; ++b)
        if (last_q8[b - b0])
            for (u32 p = threadIdx.x >> 5; p < n; p += WARPS) {
                u64 o = (u64)(pair0 + p) * ffn + (u64)b * bs;
                quant_span(act + o, fmt, 1, actq + o, actd + (u64)(pair0 + p) * (ffn / 32) + b,
                           act + o);
            }
}

// act[pair][j] = silu(gate_j . x) * (up_j . x) for every pair of the item, x quantised
// for T's format by the block itself (warp w takes x's 256-value spans w, w + WARPS, ...)
// while the first weight loads are in flight; then the products are quantised for the down
// weights' format F (ACT_Q8_0 / ACT_Q8K) by the last block to finish each block of them.
// Items of several tokens take them one after another (the engine sends one). A warp past
// the last row recomputes it and stores nothing (no early exit: every warp reaches the
// barriers).
template <int T, int F>
DEV void gate_up_q8(const u64* items, const u32* rows, const float* x, float* act, i8* actq,
                    float* actd, u32 hidden, u32 ffn, u32* cnt) {
    SHARED __attribute__((aligned(16))) i8 xq[Q8_MAX_HIDDEN];
    SHARED float xd[Q8_MAX_HIDDEN / 32];
    u32 warp = threadIdx.x >> 5, j = blockIdx.x * WARPS + warp;
    bool store = j < ffn;
    if (!store) j = ffn - 1;
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    u64 rb = row_bytes<T>(hidden);
    const u8* const w[2] = {(const u8*)it[0] + j * rb, (const u8*)it[1] + j * rb};
    const u32 bs = QAct<T>::BS;
    for (u32 t = 0; t < n; ++t) {
        const float* xr = x + (u64)rows[pair0 + t] * hidden;
        auto pre = [&]() {
            SYNCTHREADS();  // the previous token's dots are done with xq
            // Warp w takes the 256-value spans w, w + WARPS, ... (a Q8_0 row's last span may
            // hold fewer than 8 blocks).
            for (u32 e = 256 * warp; e < hidden; e += 256 * WARPS) {
                u32 nb = (hidden - e < 256 ? hidden - e : 256) / bs;
                quant_span(xr + e, QAct<T>::FMT, nb, xq + e, xd + e / bs, nullptr);
            }
            SYNCTHREADS();
        };
        float acc[2][TT];
        acc[0][0] = acc[1][0] = 0.0f;
        if constexpr (Q8_WIDE && T == T_Q4K) {
            if (hidden % 1024 == 0)
                dq_row_wide_q4k<2, Q8_WIDE_U>(w, xq, xd, hidden, acc, pre);
            else
                dq_row<T, 2, Q8_U_GU>(w, xq, xd, hidden, acc, pre);
        } else {
            dq_row<T, 2, Q8_U_GU>(w, xq, xd, hidden, acc, pre);
        }
        auto put = [&](u32, u32, float g, float u) {
            if (store) act[(u64)(pair0 + t) * ffn + j] = silu(g) * u;
        };
        reduce_rows<2, 1, true>(acc, 1, put);
    }
    arrive_and_quant(items, act, actq, actd, ffn, F, cnt);
}

// out[t][i] = sum over token t's pairs (item order) of wts[p] * (down_i . act[p]) with
// the products as int8 (actq, actd from gate_up_q8): down_combine's rounds and in-order
// sum (fused.cu) for Q8_DN_ROWS rows i per block (rows past hidden, where it is not a
// multiple: the last row, recomputed and not stored), the dots by dq_row.
template <int T>
DEV void down_combine_q8(const u64* tok_down, const u32* tok_start, const u32* tok_pairs,
                         const float* wts, const i8* actq, const float* actd, float* out,
                         u32 hidden, u32 ffn) {
    const int R = Q8_DN_ROWS;
    SHARED float part_q8[R][WARPS];
    u32 warp = threadIdx.x >> 5, i0 = blockIdx.x * R, t = blockIdx.y;
    u32 q0 = tok_start[t], q1 = tok_start[t + 1];
    u64 rb = row_bytes<T>(ffn);
    NoPre nopre;
    float s = 0.0f;  // thread r's: row i0 + r
    for (; q0 < q1; q0 += WARPS) {
        u32 q = q0 + warp < q1 ? q0 + warp : q1 - 1;
        {
            u32 p = tok_pairs[q];
            const u8* base = (const u8*)tok_down[q];
            const u8* w[R];
            for (int r = 0; r < R; ++r) w[r] = base + (i0 + r < hidden ? i0 + r : hidden - 1) * rb;
            float acc[R][TT];
            for (int r = 0; r < R; ++r) acc[r][0] = 0.0f;
            dq_row<T, R, U_FOR(Q8_U_DN, R)>(w, actq + (u64)p * ffn, actd + (u64)p * (ffn / 32),
                                             ffn, acc, nopre);
            auto put = [&](u32 r, u32, float v, float) { part_q8[r][warp] = wts[p] * v; };
            reduce_rows<R, 1, false>(acc, 1, put);
        }
        SYNCTHREADS();
        if (threadIdx.x < (u32)R) {
            u32 m = q1 - q0 < WARPS ? q1 - q0 : WARPS;
            for (u32 k = 0; k < m; ++k) s += part_q8[threadIdx.x][k];
        }
        SYNCTHREADS();  // part_q8 is read before the next round overwrites it
    }
    if (threadIdx.x < (u32)R && i0 + threadIdx.x < hidden)
        out[(u64)t * hidden + i0 + threadIdx.x] = s;
}

#define GATE_UP_Q8(T, name, F, fname)                                                          \
    KERNEL BOUNDS void gate_up_q8_##name##_##fname(const u64* items, const u32* rows,           \
                                                   const float* x, float* act, i8* actq,        \
                                                   float* actd, u32 hidden, u32 ffn,            \
                                                   u32* cnt) {                                  \
        gate_up_q8<T, F>(items, rows, x, act, actq, actd, hidden, ffn, cnt);                   \
    }
#define INSTANTIATE_Q8(T, name)                                                                \
    GATE_UP_Q8(T, name, ACT_Q8_0, q8_0)                                                        \
    GATE_UP_Q8(T, name, ACT_Q8K, q8_k)                                                         \
    KERNEL BOUNDS void down_combine_q8_##name(const u64* tok_down, const u32* tok_start,        \
                                              const u32* tok_pairs, const float* wts,           \
                                              const i8* actq, const float* actd, float* out,    \
                                              u32 hidden, u32 ffn) {                            \
        down_combine_q8<T>(tok_down, tok_start, tok_pairs, wts, actq, actd, out, hidden, ffn); \
    }

INSTANTIATE_Q8(T_Q8_0, q8_0)
INSTANTIATE_Q8(T_Q4K, q4_k)
INSTANTIATE_Q8(T_Q5K, q5_k)
INSTANTIATE_Q8(T_Q6K, q6_k)
