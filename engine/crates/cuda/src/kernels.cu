// Expert kernels on raw GGUF blocks (compiled at start-up by NVRTC; also compiled by g++
// with tests/emu/emu.h, which runs every CUDA thread as a host thread, so the same source
// is checked against the CPU reference on machines without a GPU).
//
// Layout (see src/batch.rs): items[4*i] = {gate, up, down, pair0 | n << 32}; pair p of
// item i is token row rows[p] with router weight wts[p]; act is [n_pairs][ffn], y is
// [n_pairs][hidden]; tok_start/tok_pairs list each token's pairs in item order.
//
// Activations are f32: decode is bound by reading the weights (x is 8 KB against
// megabytes of weights), and f32 keeps the GPU result within float rounding of the
// dequantise-and-multiply reference, whatever the placement.
//
// One warp per output row (gate and up rows together in gate_up), walking the row in
// steps of 256 elements (one k-quant super-block, eight Q8_0 blocks). In a step, lane L
// owns the two 4-element runs at 64 * (L / 8) + 4 * (L % 8) and 32 further on: one
// sub-block pair of a k-quant group (the low and high nibbles of the same 4 bytes), so
// every weight read is a 32-bit word of the block, consecutive lanes read consecutive
// words, and the activations come as 16-byte loads that cover whole 128-byte lines
// (the activations are read from L1 once per element and token: a layout where a lane
// owns a whole sub-block would touch 8x more cache lines per load and was the bottleneck
// of the first kernels). Quants become floats through the mantissa of 2^23 (one byte
// permute and one subtraction, exact) instead of the slow integer-to-float conversion.
// Up to TT tokens share each weight read; the lane's partial sums stay in registers and
// each row ends with one warp_sum per token.

#ifndef HMOE_EMU
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
#define DEV __device__ __forceinline__
#define KERNEL extern "C" __global__
#define SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#define AS_FLOAT(u) __uint_as_float(u)
#define AS_UINT(f) __float_as_uint(f)
#define PRMT(a, b, s) __byte_perm((a), (b), (s))
#define FSHR(lo, hi, s) __funnelshift_r((lo), (hi), (s))
DEV u32 ld16(const u8* p) { return *(const u16*)p; }      // 2-byte aligned
DEV u32 ld32(const u8* p) { return *(const u32*)p; }      // 4-byte aligned
DEV void ld2x32(const u8* p, u32* o) {                     // 8-byte aligned
    uint2 v = *(const uint2*)p;
    o[0] = v.x, o[1] = v.y;
}
DEV void ldf4(const float* p, float* o) {                  // 16-byte aligned
    float4 v = *(const float4*)p;
    o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
}
DEV float h2f(u32 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"((unsigned short)h));
    return f;
}
// Asynchronous 16-byte global -> shared copies (sm_80+): no registers hold the data in
// flight. Both addresses 16-byte aligned.
#define SHARED __shared__
#define SYNCWARP() __syncwarp()
#define SYNCTHREADS() __syncthreads()
#define THREADFENCE() __threadfence()
#define ATOMIC_ADD(p, v) atomicAdd((p), (v))
#define LD_CG(p) __ldcg(p)  // through L2: another block's stores, never a stale L1 line
#define NO_UNROLL _Pragma("unroll 1")
DEV void cp_async16(void* smem, const void* gmem) {
    u32 s = (u32)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
DEV void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> DEV void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
#else
// emu.h provides PRMT, FSHR, ld16, ld32, ld2x32, ldf4, SHARED, SYNCWARP, SYNCTHREADS,
// THREADFENCE, ATOMIC_ADD, LD_CG, NO_UNROLL, cp_async16, cp_commit, cp_wait with the CUDA
// semantics.
DEV float h2f(u32 h) {
    u32 s = (h >> 15) & 1u, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float sign = s ? -1.0f : 1.0f;
    if (e == 0) return sign * (float)m * 5.9604644775390625e-8f;  // subnormal: m * 2^-24
    if (e == 31) return AS_FLOAT((s << 31) | 0x7f800000u | (m << 13));
    return AS_FLOAT((s << 31) | ((e + 112u) << 23) | (m << 13));
}
#endif

#define WARPS 8   // warps per block (256 threads); must match WARPS_PER_BLOCK in Rust
#define TT 8      // tokens per weight pass

// Type codes, as in the kernel name suffixes.
#define T_F32 0
#define T_F16 1
#define T_BF16 2
#define T_Q8_0 3
#define T_Q4K 4
#define T_Q5K 5
#define T_Q6K 6

// Elements per block and bytes per block of each type.
template <int T> struct Blk;
template <> struct Blk<T_F32> { enum { E = 1, B = 4 }; };
template <> struct Blk<T_F16> { enum { E = 1, B = 2 }; };
template <> struct Blk<T_BF16> { enum { E = 1, B = 2 }; };
template <> struct Blk<T_Q8_0> { enum { E = 32, B = 34 }; };
template <> struct Blk<T_Q4K> { enum { E = 256, B = 144 }; };
template <> struct Blk<T_Q5K> { enum { E = 256, B = 176 }; };
template <> struct Blk<T_Q6K> { enum { E = 256, B = 210 }; };

template <int T> DEV u64 row_bytes(u32 cols) { return (u64)(cols / Blk<T>::E) * Blk<T>::B; }

// Bytes of one 256-element step of a row (see rows_dot).
template <int T> struct Step { enum { B = 256 / Blk<T>::E * Blk<T>::B }; };

// Byte k of w as a float, minus `bias - 2^23`: the byte goes into the mantissa of 2^23
// (exact), so bias 2^23 gives the unsigned byte, 2^23 + 32 the Q6_K value, and so on.
#define MAGIC 0x4B000000u
#define F_2P23 8388608.0f
DEV float bytef(u32 w, u32 k, float bias) { return AS_FLOAT(PRMT(w, MAGIC, 0x7440u | k)) - bias; }

// A lane's raw words of one step of a row (loaded first, for several steps and rows at
// once, so that many loads are in flight per warp) and their decoding into the lane's two
// runs: wa = elements e .. e+3, wb = e+32 .. e+35 with e = 256 s + 64 (lane / 8) +
// 4 (lane % 8). `load` takes the step's first byte (row + s * Step<T>::B, in global or
// shared memory). va / vb: the run lies inside the row (always for k-quants; the last
// step of a Q8_0 or float row may be partial).
template <int T> struct Raw;

DEV void zero4(float* w) { w[0] = w[1] = w[2] = w[3] = 0.0f; }
DEV u32 run_off(u32 s, u32 lane) { return 256 * s + 64 * (lane >> 3) + 4 * (lane & 7); }

template <> struct Raw<T_F32> {
    float a[4], b[4];
    DEV void load(const u8* step, u32 lane, bool va, bool vb) {
        const float* p = (const float*)step + run_off(0, lane);
        if (va) ldf4(p, a); else zero4(a);
        if (vb) ldf4(p + 32, b); else zero4(b);
    }
    DEV void dec(u32, float* wa, float* wb) const {
        for (int k = 0; k < 4; ++k) wa[k] = a[k], wb[k] = b[k];
    }
};

template <> struct Raw<T_F16> {
    u32 a[2], b[2];
    DEV void load(const u8* step, u32 lane, bool va, bool vb) {
        const u8* p = step + 2 * run_off(0, lane);
        a[0] = a[1] = b[0] = b[1] = 0;
        if (va) ld2x32(p, a);
        if (vb) ld2x32(p + 64, b);
    }
    DEV void dec(u32, float* wa, float* wb) const {
        for (int k = 0; k < 2; ++k) {
            wa[2 * k] = h2f(a[k] & 0xffffu), wa[2 * k + 1] = h2f(a[k] >> 16);
            wb[2 * k] = h2f(b[k] & 0xffffu), wb[2 * k + 1] = h2f(b[k] >> 16);
        }
    }
};

template <> struct Raw<T_BF16> {
    u32 a[2], b[2];
    DEV void load(const u8* step, u32 lane, bool va, bool vb) {
        const u8* p = step + 2 * run_off(0, lane);
        a[0] = a[1] = b[0] = b[1] = 0;
        if (va) ld2x32(p, a);
        if (vb) ld2x32(p + 64, b);
    }
    DEV void dec(u32, float* wa, float* wb) const {
        for (int k = 0; k < 2; ++k) {
            wa[2 * k] = AS_FLOAT(a[k] << 16), wa[2 * k + 1] = AS_FLOAT(a[k] & 0xffff0000u);
            wb[2 * k] = AS_FLOAT(b[k] << 16), wb[2 * k + 1] = AS_FLOAT(b[k] & 0xffff0000u);
        }
    }
};

// A 32-bit word at a 2-byte aligned address (Q8_0 and Q6_K blocks are 34 and 210 bytes)
// as two aligned words that each hold bytes of it (never a word outside the block):
// FSHR(lo, hi, 8 * mis) assembles it.
DEV void ld32_a2(const u8* p, u32 mis, u32* lo, u32* hi) {
    *lo = ld32(p - mis);
    *hi = ld32(p + mis);
}

// Q8_0: runs a and b are blocks 8 s + 2 g and the next one; 4 quants at 4 (lane % 8).
template <> struct Raw<T_Q8_0> {
    u32 da, db, alo, ahi, blo, bhi, mis;
    DEV void load(const u8* step, u32 lane, bool va, bool vb) {
        const u8* blk = step + 2 * (lane >> 3) * 34;
        const u8* q = blk + 2 + 4 * (lane & 7);
        mis = (u32)(u64)q & 2u;  // block b + 1 starts 34 bytes on: the other parity
        da = db = alo = ahi = blo = bhi = 0;
        if (va) {
            da = ld16(blk);
            ld32_a2(q, mis, &alo, &ahi);
        }
        if (vb) {
            db = ld16(blk + 34);
            ld32_a2(q + 34, mis ^ 2u, &blo, &bhi);
        }
    }
    DEV void dec(u32, float* wa, float* wb) const {
        float fa = h2f(da), fb = h2f(db);
        u32 qa = FSHR(alo, ahi, 8 * mis) ^ 0x80808080u;  // i8 + 128: unsigned bytes
        u32 qb = FSHR(blo, bhi, 8 * (mis ^ 2u)) ^ 0x80808080u;
        for (u32 k = 0; k < 4; ++k) {
            wa[k] = fa * bytef(qa, k, F_2P23 + 128.0f);
            wb[k] = fb * bytef(qb, k, F_2P23 + 128.0f);
        }
    }
};

// Q4_K/Q5_K header: d, dmin, then 12 bytes of 6-bit scales and mins (ggml's
// get_scale_min_k4). Gives scale and min of sub-blocks 2g (a) and 2g + 1 (b) times d
// and dmin.
DEV void kscales(u32 dm, u32 s0, u32 s1, u32 s2, u32 g, float* da, float* ma, float* db,
                 float* mb) {
    float d = h2f(dm & 0xffffu), dmin = h2f(dm >> 16);
    u32 sc, mn;
    if (g < 2) {
        sc = s0 & 0x3f3f3f3fu;
        mn = s1 & 0x3f3f3f3fu;
    } else {
        sc = (s2 & 0x0f0f0f0fu) | ((s0 >> 2) & 0x30303030u);
        mn = ((s2 >> 4) & 0x0f0f0f0fu) | ((s1 >> 2) & 0x30303030u);
    }
    u32 j = 2 * (g & 1);
    *da = d * bytef(sc, j, F_2P23);
    *ma = dmin * bytef(mn, j, F_2P23);
    *db = d * bytef(sc, j + 1, F_2P23);
    *mb = dmin * bytef(mn, j + 1, F_2P23);
}

template <> struct Raw<T_Q4K> {
    u32 dm, s0, s1, s2, q;
    DEV void load(const u8* blk, u32 lane, bool, bool) {
        dm = ld32(blk), s0 = ld32(blk + 4), s1 = ld32(blk + 8), s2 = ld32(blk + 12);
        q = ld32(blk + 16 + 32 * (lane >> 3) + 4 * (lane & 7));
    }
    DEV void dec(u32 lane, float* wa, float* wb) const {
        float da, ma, db, mb;
        kscales(dm, s0, s1, s2, lane >> 3, &da, &ma, &db, &mb);
        u32 qa = q & 0x0f0f0f0fu, qb = (q >> 4) & 0x0f0f0f0fu;
        for (u32 k = 0; k < 4; ++k) {
            wa[k] = da * bytef(qa, k, F_2P23) - ma;
            wb[k] = db * bytef(qb, k, F_2P23) - mb;
        }
    }
};

template <> struct Raw<T_Q5K> {
    u32 dm, s0, s1, s2, q, h;
    DEV void load(const u8* blk, u32 lane, bool, bool) {
        u32 l4 = 4 * (lane & 7);
        dm = ld32(blk), s0 = ld32(blk + 4), s1 = ld32(blk + 8), s2 = ld32(blk + 12);
        q = ld32(blk + 48 + 32 * (lane >> 3) + l4);
        h = ld32(blk + 16 + l4);
    }
    DEV void dec(u32 lane, float* wa, float* wb) const {
        u32 g = lane >> 3;
        float da, ma, db, mb;
        kscales(dm, s0, s1, s2, g, &da, &ma, &db, &mb);
        u32 qa = (q & 0x0f0f0f0fu) | (((h >> (2 * g)) & 0x01010101u) << 4);
        u32 qb = ((q >> 4) & 0x0f0f0f0fu) | (((h >> (2 * g + 1)) & 0x01010101u) << 4);
        for (u32 k = 0; k < 4; ++k) {
            wa[k] = da * bytef(qa, k, F_2P23) - ma;
            wb[k] = db * bytef(qb, k, F_2P23) - mb;
        }
    }
};

// Q6_K (210-byte blocks, 2-byte aligned): ql[128], qh[64], 16 i8 scales, d. Sub-block 2g
// is quarter 2 (g % 2) of half g / 2, so runs a and b read the same nibble of two ql words
// and two bit pairs of one qh word; every word is at the block's offset parity.
template <> struct Raw<T_Q6K> {
    u32 alo, ahi, blo, bhi, hlo, hhi, sca, scb, d, mis;
    DEV void load(const u8* blk, u32 lane, bool, bool) {
        u32 g = lane >> 3, l4 = 4 * (lane & 7), n = g >> 1;
        mis = (u32)(u64)blk & 2u;
        ld32_a2(blk + 64 * n + l4, mis, &alo, &ahi);
        ld32_a2(blk + 64 * n + 32 + l4, mis, &blo, &bhi);
        ld32_a2(blk + 128 + 32 * n + l4, mis, &hlo, &hhi);
        const u8* sc = blk + 192 + 8 * n + ((lane & 7) >> 2) + 4 * (g & 1);
        sca = sc[0], scb = sc[2];
        d = ld16(blk + 208);
    }
    DEV void dec(u32 lane, float* wa, float* wb) const {
        u32 sh = 4 * ((lane >> 3) & 1), fs = 8 * mis;
        u32 qla = FSHR(alo, ahi, fs), qlb = FSHR(blo, bhi, fs), h = FSHR(hlo, hhi, fs);
        u32 va = ((qla >> sh) & 0x0f0f0f0fu) | (((h >> sh) & 0x03030303u) << 4);
        u32 vb = ((qlb >> sh) & 0x0f0f0f0fu) | (((h >> (sh + 2)) & 0x03030303u) << 4);
        float fd = h2f(d);
        float da = fd * bytef(sca ^ 0x80u, 0, F_2P23 + 128.0f);
        float db = fd * bytef(scb ^ 0x80u, 0, F_2P23 + 128.0f);
        for (u32 k = 0; k < 4; ++k) {
            wa[k] = da * bytef(va, k, F_2P23 + 32.0f);
            wb[k] = db * bytef(vb, k, F_2P23 + 32.0f);
        }
    }
};

DEV float warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) v += SHFL_XOR(v, m);
    return v;
}

DEV float silu(float g) { return g / (1.0f + expf(-g)); }

// U steps (s0 .. s0+U-1) of NR rows sharing their columns (gate and up), NT tokens at most
// (nt valid): all raw loads of the U x NR row-steps first, then decode and multiply.
template <int T, int NR, int NT, int U>
DEV void dot_steps(const u8* const* w, const float* const (&xr)[TT], u32 nt, u32 cols,
                   u32 s0, u32 lane, float (&acc)[NR][TT]) {
    Raw<T> raw[U][NR];
    for (int u = 0; u < U; ++u) {
        u32 e = run_off(s0 + u, lane);
        for (int r = 0; r < NR; ++r)
            raw[u][r].load(w[r] + (u64)(s0 + u) * Step<T>::B, lane, e + 4 <= cols, e + 36 <= cols);
    }
    for (int u = 0; u < U; ++u) {
        u32 e = run_off(s0 + u, lane);
        bool va = e + 4 <= cols, vb = e + 36 <= cols;
        float wa[NR][4], wb[NR][4];
        for (int r = 0; r < NR; ++r) raw[u][r].dec(lane, wa[r], wb[r]);
        for (int t = 0; t < NT; ++t) {
            if (t < (int)nt) {
                float xa[4], xb[4];
                if (va) ldf4(xr[t] + e, xa); else zero4(xa);
                if (vb) ldf4(xr[t] + e + 32, xb); else zero4(xb);
                for (int r = 0; r < NR; ++r)
                    for (int k = 0; k < 4; ++k) {
                        acc[r][t] += wa[r][k] * xa[k];
                        acc[r][t] += wb[r][k] * xb[k];
                    }
            }
        }
    }
}

// TAIL=0 (a variant): the steps left after the groups of U one at a time.
#ifndef TAIL
#define TAIL 1
#endif
// The steps left after the groups of U (fewer than U): one group of K = the largest size
// that fits, then smaller ones, so a row of 3 steps (an expert's down row at FFN 768)
// has its 3 steps in flight at once rather than one after another.
template <int T, int NR, int NT, int K> struct Tail {
    static DEV void run(const u8* const* w, const float* const (&xr)[TT], u32 nt, u32 cols,
                        u32 s, u32 steps, u32 lane, float (&acc)[NR][TT]) {
        if (steps - s >= K) {
            dot_steps<T, NR, NT, K>(w, xr, nt, cols, s, lane, acc);
            s += K;
        }
        Tail<T, NR, NT, K - 1>::run(w, xr, nt, cols, s, steps, lane, acc);
    }
};
template <int T, int NR, int NT> struct Tail<T, NR, NT, 0> {
    static DEV void run(const u8* const*, const float* const (&)[TT], u32, u32, u32, u32, u32,
                        float (&)[NR][TT]) {}
};

// This lane's share of w[r] . x[t] for NR rows of `cols` elements that share their columns
// (gate and up) and nt <= NT token rows: acc[r][t] += partial sums (reduce with
// reduce_rows). The row is walked U steps at a time (loads of U steps in flight), the
// rest of a single row in one smaller group (Tail).
template <int T, int NR, int NT, int U>
DEV void rows_dot(const u8* const* w, const float* const (&xr)[TT], u32 nt, u32 cols,
                  float (&acc)[NR][TT]) {
    u32 lane = threadIdx.x & 31, steps = (cols + 255) / 256, s = 0;
    for (; s + U <= steps; s += U) dot_steps<T, NR, NT, U>(w, xr, nt, cols, s, lane, acc);
    if (NR == 1 && TAIL) {
        Tail<T, NR, NT, U - 1>::run(w, xr, nt, cols, s, steps, lane, acc);
    } else {
        // gate/up pairs: single steps (a group tail costs them spills at 64 registers).
        for (; s < steps; ++s) dot_steps<T, NR, NT, 1>(w, xr, nt, cols, s, lane, acc);
    }
}

// One token through shared memory (variant ASYNC=1): each step of the NR rows is copied
// by cp.async into a per-warp ring of S stages, S steps ahead of the one being decoded, so
// the loads in flight cost shared memory instead of registers. The copy of a step covers
// its bytes from the 16-byte boundary below to the one above, clipped to the row's end
// (whole 16-byte chunks: inside the allocation, whose size is a multiple of 256); its
// bytes keep their address mod 16, so Raw<T>::load reads them as from global memory.
#ifndef ASYNC_SMEM
#define ASYNC_SMEM 40960  // bytes of shared memory per block for the rings
#endif
template <int T, int NR> struct Ring {
    enum {
        SLOT = (Step<T>::B + 30) / 16 * 16,  // the step's chunks at any start mod 16
        S0 = ASYNC_SMEM / (WARPS * NR * SLOT),
        S = S0 > 8 ? 8 : (S0 < 1 ? 1 : S0)
    };
};

template <int T, int NR>
DEV void rows_dot_async(const u8* const* w, const float* xr, u32 cols, float (&acc)[NR][TT]) {
    typedef Ring<T, NR> R;
    SHARED __attribute__((aligned(16))) u8 ring[WARPS][R::S][NR][R::SLOT];
    u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, steps = (cols + 255) / 256;
    u64 rb = row_bytes<T>(cols);
    // Issues the copies of step s into stage s % S (every lane commits a group, empty or not).
    auto issue = [&](u32 s) {
        if (s < steps) {
            for (int r = 0; r < NR; ++r) {
                u64 p = (u64)(w[r] + (u64)s * Step<T>::B), end = (u64)(w[r] + rb);
                u64 a = p & ~15ull, e = p + Step<T>::B < end ? p + Step<T>::B : end;
                u32 n = (u32)((((e + 15) & ~15ull) - a) / 16);
                for (u32 c = lane; c < n; c += 32)
                    cp_async16(&ring[warp][s % R::S][r][16 * c], (const void*)(a + 16 * c));
            }
        }
        cp_commit();
    };
NO_UNROLL
    for (u32 s = 0; s < R::S; ++s) issue(s);
NO_UNROLL
    for (u32 s = 0; s < steps; ++s) {
        cp_wait<R::S - 1>();  // this lane's copies of step s are done
        SYNCWARP();           // and every lane's
        u32 e = run_off(s, lane);
        bool va = e + 4 <= cols, vb = e + 36 <= cols;
        float xa[4], xb[4];
        if (va) ldf4(xr + e, xa); else zero4(xa);
        if (vb) ldf4(xr + e + 32, xb); else zero4(xb);
        for (int r = 0; r < NR; ++r) {
            u64 p = (u64)(w[r] + (u64)s * Step<T>::B);
            Raw<T> raw;
            raw.load(&ring[warp][s % R::S][r][p & 15], lane, va, vb);
            float wa[4], wb[4];
            raw.dec(lane, wa, wb);
            for (int k = 0; k < 4; ++k) {
                acc[r][0] += wa[k] * xa[k];
                acc[r][0] += wb[k] * xb[k];
            }
        }
        SYNCWARP();  // stage s % S is read: it may be refilled
        issue(s + R::S);
    }
    cp_wait<0>();
}

// Steps in flight per row: a decode token (NT = 1) has registers to spare for loads; a
// tile of TT tokens needs them for its accumulators. hmoe-cuda-check times variants
// compiled with other values (-DU_ONE=.. -DU_TILE=.. -DMIN_BLOCKS=.. -DRPW_GU=.. -DRPW_DN=..).
#ifndef U_ONE
#define U_ONE 4
#endif
#ifndef U_TILE
#define U_TILE 2
#endif
// Row-steps in flight spread over NR rows walked together: u / NR steps, at least one.
#define U_FOR(u, nr) ((u) / (nr) > 0 ? (u) / (nr) : 1)
// Output rows per warp of gate_up (RPW_GU; it walks 2 RPW_GU weight rows) and down
// (RPW_DN): the rows share each activation load. Grids are ceil(rows / (WARPS * RPW))
// blocks wide (gpu.rs launch_experts). linear always has one row per warp.
#ifndef RPW_GU
#define RPW_GU 1
#endif
#ifndef RPW_DN
#define RPW_DN 1
#endif
// ASYNC=1: the one-token path copies weights through shared memory (rows_dot_async).
#ifndef ASYNC
#define ASYNC 0
#endif
// MIN_BLOCKS: blocks per SM the compiler must fit (caps registers at 64 for 4 blocks of
// 256 threads: 32 warps per SM; 0: no cap). Measured on an H200 (hmoe-cuda-check variant
// sweep, session 4): 4 blocks took 8 experts x 1 token from 50 to 41 us and x 8 tokens
// from 122 to 89 us; the kernels are latency-bound, more warps hide more of it. No spills
// at 64 registers (ptxas, sm_90).
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 4
#endif
#if MIN_BLOCKS > 0 && !defined(HMOE_EMU)
#define BOUNDS __launch_bounds__(32 * WARPS, MIN_BLOCKS)
#else
#define BOUNDS
#endif

// Items serving at least GEMM_MIN_TOKENS tokens go to the tiled kernels of gemm.cu, which
// launch_pass (gpu.rs) launches beside these whenever a pass has such an item; gate_up and
// down skip them. Rust's GEMM_MIN_TOKENS (gpu/gemm.rs) must match (tested). 16 suits the
// int8 mma tiles; gpu.rs compiles 32 (F32_GEMM_MIN_TOKENS) for devices without them.
#ifndef GEMM_MIN_TOKENS
#define GEMM_MIN_TOKENS 16
#endif

// Warp sums of V values at once (V a power of two): each halving step exchanges half of
// the values with the partner lane, so 32 values take 31 shuffles instead of 160.
// out[c] = the warp's sum of v[c * W + lane / (32 / W)], W = min(V, 32), in every lane.
template <int V> struct Red { enum { W = V > 32 ? 32 : V, C = V > 32 ? V / 32 : 1 }; };

template <int W> DEV float warp_sum_w(float* v) {
    u32 lane = threadIdx.x & 31;
    int m = 16;
    for (int h = W / 2; h >= 1; h /= 2, m /= 2) {
        bool up = (lane & (u32)m) != 0;
        for (int i = 0; i < h; ++i) {
            float send = up ? v[i] : v[i + h], keep = up ? v[i + h] : v[i];
            v[i] = keep + SHFL_XOR(send, m);
        }
    }
    float s = v[0];
    for (; m >= 1; m /= 2) s += SHFL_XOR(s, m);
    return s;
}

template <int V> DEV void warp_sums(float (&v)[V], float (&out)[Red<V>::C]) {
    for (int c = 0; c < Red<V>::C; ++c) out[c] = warp_sum_w<Red<V>::W>(v + c * Red<V>::W);
}

// Reduces acc[NR][TT] (first NT tokens) over the warp and calls put(r, t, sum) once per
// row r < NR and token t < nt, from the lane that holds the sum. With PAIRED, rows come
// in (gate, up) pairs and put(r, t, gate, up) gets both (r even).
template <int NR, int NT, bool PAIRED, class Put>
DEV void reduce_rows(float (&acc)[NR][TT], u32 nt, Put put) {
    u32 lane = threadIdx.x & 31;
    float v[NR * NT];
    for (int t = 0; t < NT; ++t)
        for (int r = 0; r < NR; ++r) v[t * NR + r] = acc[r][t];
    float out[Red<NR * NT>::C];
    warp_sums<NR * NT>(v, out);
    const u32 W = Red<NR * NT>::W, spread = 32 / W;
    for (int c = 0; c < Red<NR * NT>::C; ++c) {
        u32 idx = c * W + lane / spread;
        u32 t = idx / NR, r = idx % NR;
        float other = 0.0f;
        if (PAIRED) other = SHFL_XOR(out[c], spread);  // the partner value: idx ^ 1
        if (lane % spread == 0 && t < nt) {
            if (!PAIRED) put(r, t, out[c], 0.0f);
            else if ((r & 1) == 0) put(r, t, out[c], other);
        }
    }
}

// Rounds activations in place to the values the CPU kernels multiply with (hmoe-quant's
// ActBuf), so that an expert gives the same result on either side and placement never
// changes the output beyond float rounding. fmt 1: bf16 (nearest even); 2: Q8_0 blocks
// of 32 (d = amax / 127, q = rint(v / d)); 3: Q8_K blocks of 256 (the first value of
// largest magnitude maps to -127). One warp per block: `act_round` launches them as a
// grid, the fused gate_up (gate_up_fused) calls round_block itself.
#define ACT_BF16 1
#define ACT_Q8_0 2
#define ACT_Q8K 3

DEV float bf16_round(float v) {
    u32 u = AS_UINT(v);
    if ((u & 0x7fffffffu) <= 0x7f800000u) u += 0x7fffu + ((u >> 16) & 1u);
    return AS_FLOAT(u & 0xffff0000u);
}

// The warp rounds the fmt block at src (32 or 256 values) into dst, which may be src
// (in place). Loads go through L2 (LD_CG): in the fused gate_up other blocks wrote most
// of the values. fmt 0 copies the block unrounded (32 values).
DEV void round_block_from(const float* src, float* dst, u32 fmt) {
    u32 lane = threadIdx.x & 31;
    u32 bs = fmt == ACT_Q8K ? 256 : 32;
    if (fmt == 0) {
        dst[lane] = LD_CG(src + lane);
        return;
    }
    if (fmt == ACT_BF16) {
        dst[lane] = bf16_round(LD_CG(src + lane));
        return;
    }
    // The lane's values (8 for Q8_K, 1 for Q8_0) are all loaded before any is compared:
    // the compare loop used to wait on one load after another.
    u32 per = bs / 32;
    float vals[8];
    for (u32 k = 0; k < 8; ++k) vals[k] = k < per ? LD_CG(src + lane + 32 * k) : 0.0f;
    // Largest magnitude and the first index holding it (indices travel as floats:
    // exact below 2^24, and the emulator shuffles floats only).
    float amax = 0.0f, idx = 1e9f;
    for (u32 k = 0; k < 8; ++k) {
        float av = fabsf(vals[k]);
        if (k < per && av > amax) {
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
    if (fmt == ACT_Q8_0) {
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        float q = fminf(fmaxf(rintf(vals[0] * id), -127.0f), 127.0f);
        dst[lane] = q * d;
        return;
    }
    if (amax == 0.0f) {
        for (u32 j = lane; j < bs; j += 32) dst[j] = 0.0f;
        return;
    }
    // Every lane read the block before any lane writes it back (dst may be src).
    float mx = LD_CG(src + (u32)idx);
    mx = SHFL_XOR(mx, 0);
    float iscale = -127.0f / mx;
    float d = 1.0f / iscale;
    for (u32 k = 0; k < 8; ++k) {
        float q = fminf(fmaxf(rintf(iscale * vals[k]), -127.0f), 127.0f);
        dst[lane + 32 * k] = q * d;
    }
}

// The warp rounds the fmt block at p in place.
DEV void round_block(float* p, u32 fmt) { round_block_from(p, p, fmt); }

// Grid: (width / block, rows); one warp per block.
KERNEL void act_round(float* a, u32 width, u32 fmt) {
    u32 bs = fmt == ACT_Q8K ? 256 : 32;
    round_block(a + (u64)blockIdx.y * width + (u64)blockIdx.x * bs, fmt);
}

// act_round from src into dst (another buffer: the dense path's normed hidden state into
// the expert pass's input, which spares the pass an upload of x); fmt 0 copies. Grid:
// (width / block, rows), block 32 or, for fmt 0, 32 values.
KERNEL void act_round_from(const float* src, float* dst, u32 width, u32 fmt) {
    u32 bs = fmt == ACT_Q8K ? 256 : 32;
    u64 off = (u64)blockIdx.y * width + (u64)blockIdx.x * bs;
    round_block_from(src + off, dst + off, fmt);
}

// act[pair][j] = silu(gate_j . x[row]) * (up_j . x[row]) for every pair of the item.
// BF16: each product is rounded to bf16 as it is stored (the fused pass; the element-wise
// rounding act_round would do afterwards). EXIT: a warp past the last row leaves at once,
// and so does a block whose item the tiled kernels take; without it (the fused pass,
// whose code after gate_up made those early exits cost 16-36 bytes of spills at 64
// registers, and whose items, of at most 8 tokens, are never tiled) a warp past the end
// recomputes the last row and stores nothing.
template <int T, bool BF16 = false, bool EXIT = true>
DEV void gate_up(const u64* items, const u32* rows, const float* x, float* act, u32 hidden,
                 u32 ffn) {
    u32 j0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * RPW_GU;
    if (EXIT && j0 >= ffn) return;  // whole warp leaves together: no shuffle is left half-done
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    if (EXIT && n >= GEMM_MIN_TOKENS) return;  // gemm.cu's tiled kernels take this item
    u64 rb = row_bytes<T>(hidden);
    const u8* w[2 * RPW_GU];
    for (int r = 0; r < RPW_GU; ++r) {
        u32 j = j0 + r < ffn ? j0 + r : ffn - 1;  // past the end: recompute the last row
        w[2 * r] = (const u8*)it[0] + j * rb;
        w[2 * r + 1] = (const u8*)it[1] + j * rb;
    }
    auto put = [&](u32 r, u32 t, float g, float u) {
        u32 j = j0 + r / 2;
        if (j < ffn) {
            float a = silu(g) * u;
            act[(u64)(pair0 + t) * ffn + j] = BF16 ? bf16_round(a) : a;
        }
    };
    for (u32 t0 = 0; t0 < n; t0 += TT) {
        u32 nt = n - t0 < TT ? n - t0 : TT;
        float acc[2 * RPW_GU][TT];
        const float* xr[TT];
        for (int t = 0; t < TT; ++t) {
            for (int r = 0; r < 2 * RPW_GU; ++r) acc[r][t] = 0.0f;
            xr[t] = x + (u64)rows[pair0 + t0 + (t < (int)nt ? t : 0)] * hidden;
        }
        auto put_t = [&](u32 r, u32 t, float g, float u) { put(r, t0 + t, g, u); };
        if (nt == 1) {
#if ASYNC
            rows_dot_async<T, 2 * RPW_GU>(w, xr[0], hidden, acc);
#else
            rows_dot<T, 2 * RPW_GU, 1, U_FOR(U_ONE, 2 * RPW_GU)>(w, xr, nt, hidden, acc);
#endif
            reduce_rows<2 * RPW_GU, 1, true>(acc, nt, put_t);
        } else {
            rows_dot<T, 2 * RPW_GU, TT, U_FOR(U_TILE, 2 * RPW_GU)>(w, xr, nt, hidden, acc);
            reduce_rows<2 * RPW_GU, TT, true>(acc, nt, put_t);
        }
    }
}

// y[pair][i] = weight[pair] * (down_i . act[pair]) for every pair of the item.
template <int T>
DEV void down(const u64* items, const float* wts, const float* act, float* y, u32 hidden,
              u32 ffn) {
    u32 i0 = (blockIdx.x * WARPS + (threadIdx.x >> 5)) * RPW_DN;
    if (i0 >= hidden) return;
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    if (n >= GEMM_MIN_TOKENS) return;  // gemm.cu's tiled kernels take this item
    u64 rb = row_bytes<T>(ffn);
    const u8* w[RPW_DN];
    for (int r = 0; r < RPW_DN; ++r) w[r] = (const u8*)it[2] + (i0 + r < hidden ? i0 + r : hidden - 1) * rb;
    for (u32 t0 = 0; t0 < n; t0 += TT) {
        u32 nt = n - t0 < TT ? n - t0 : TT;
        float acc[RPW_DN][TT];
        const float* xr[TT];
        for (int t = 0; t < TT; ++t) {
            for (int r = 0; r < RPW_DN; ++r) acc[r][t] = 0.0f;
            xr[t] = act + (u64)(pair0 + t0 + (t < (int)nt ? t : 0)) * ffn;
        }
        auto put = [&](u32 r, u32 t, float s, float) {
            u32 p = pair0 + t0 + t;
            if (i0 + r < hidden) y[(u64)p * hidden + i0 + r] = wts[p] * s;
        };
        if (nt == 1) {
#if ASYNC
            rows_dot_async<T, RPW_DN>(w, xr[0], ffn, acc);
#else
            rows_dot<T, RPW_DN, 1, U_FOR(U_ONE, RPW_DN)>(w, xr, nt, ffn, acc);
#endif
            reduce_rows<RPW_DN, 1, false>(acc, nt, put);
        } else {
            rows_dot<T, RPW_DN, TT, U_FOR(U_TILE, RPW_DN)>(w, xr, nt, ffn, acc);
            reduce_rows<RPW_DN, TT, false>(acc, nt, put);
        }
    }
}

#define INSTANTIATE(T, name)                                                                  \
    KERNEL BOUNDS void gate_up_##name(const u64* items, const u32* rows, const float* x, float* act, \
                               u32 hidden, u32 ffn) {                                         \
        gate_up<T>(items, rows, x, act, hidden, ffn);                                         \
    }                                                                                         \
    KERNEL BOUNDS void down_##name(const u64* items, const float* wts, const float* act, float* y,   \
                            u32 hidden, u32 ffn) {                                            \
        down<T>(items, wts, act, y, hidden, ffn);                                             \
    }

INSTANTIATE(T_F32, f32)
INSTANTIATE(T_F16, f16)
INSTANTIATE(T_BF16, bf16)
INSTANTIATE(T_Q8_0, q8_0)
INSTANTIATE(T_Q4K, q4_k)
INSTANTIATE(T_Q5K, q5_k)
INSTANTIATE(T_Q6K, q6_k)

// out[t][i] = sum of y[p][i] over token t's pairs, in item order (deterministic).
// Grid: (ceil(hidden / blockDim.x), n_tokens).
// A decode token's 8 pairs are loaded before any is added (one pair after another, each
// waiting on its index load, cost ~16 memory latencies); the sum keeps the same order.
#define COMBINE_UNROLL 8
KERNEL void combine(const u32* tok_start, const u32* tok_pairs, const float* y, float* out,
                    u32 hidden) {
    u32 i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (i >= hidden) return;
    u32 p0 = tok_start[t], p1 = tok_start[t + 1];
    float s = 0.0f;
    for (u32 p = p0; p < p1; p += COMBINE_UNROLL) {
        u32 pair[COMBINE_UNROLL];
        float v[COMBINE_UNROLL];
        for (int k = 0; k < COMBINE_UNROLL; ++k) pair[k] = p + k < p1 ? tok_pairs[p + k] : 0;
        for (int k = 0; k < COMBINE_UNROLL; ++k)
            v[k] = p + k < p1 ? y[(u64)pair[k] * hidden + i] : 0.0f;
        for (int k = 0; k < COMBINE_UNROLL; ++k)
            if (p + k < p1) s += v[k];
    }
    out[(u64)t * hidden + i] = s;
}

// Spins for about `cycles` clock cycles: the copy/compute overlap check keeps the compute
// stream busy with it while the copy stream transfers.
KERNEL void spin(u64 cycles, u32* sink) {
#ifndef HMOE_EMU
    long long start = clock64();
    while ((u64)(clock64() - start) < cycles) {
    }
    if (threadIdx.x == 0 && sink) *sink = (u32)start;
#endif
}
