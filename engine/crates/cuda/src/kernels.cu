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
// One warp per output row; lane L decodes the 8-element chunks L, L+32, ... of the row and
// multiplies them with up to TT tokens at once (the weights are read once per TT tokens).

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

DEV u32 ld16(const u8* p) { return (u32)p[0] | ((u32)p[1] << 8); }

DEV float h2f(u32 h) {
    u32 s = (h >> 15) & 1u, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float sign = s ? -1.0f : 1.0f;
    if (e == 0) return sign * (float)m * 5.9604644775390625e-8f;  // subnormal: m * 2^-24
    if (e == 31) return AS_FLOAT((s << 31) | 0x7f800000u | (m << 13));
    return AS_FLOAT((s << 31) | ((e + 112u) << 23) | (m << 13));
}

// ggml's get_scale_min_k4: 6-bit scale and min j of a Q4_K/Q5_K super-block.
DEV void scale_min_k4(int j, const u8* q, u32* sc, u32* mn) {
    if (j < 4) {
        *sc = q[j] & 63u;
        *mn = q[j + 4] & 63u;
    } else {
        *sc = (q[j + 4] & 0xFu) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

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

// Decodes elements 8c .. 8c+7 of a row into w.
template <int T> DEV void decode8(const u8* row, u32 c, float* w);

template <> DEV void decode8<T_F32>(const u8* row, u32 c, float* w) {
    const float* p = (const float*)row + 8 * c;
    for (int k = 0; k < 8; ++k) w[k] = p[k];
}
template <> DEV void decode8<T_F16>(const u8* row, u32 c, float* w) {
    const u8* p = row + 16 * c;
    for (int k = 0; k < 8; ++k) w[k] = h2f(ld16(p + 2 * k));
}
template <> DEV void decode8<T_BF16>(const u8* row, u32 c, float* w) {
    const u8* p = row + 16 * c;
    for (int k = 0; k < 8; ++k) w[k] = AS_FLOAT(ld16(p + 2 * k) << 16);
}
template <> DEV void decode8<T_Q8_0>(const u8* row, u32 c, float* w) {
    const u8* b = row + (c >> 2) * 34;
    float d = h2f(ld16(b));
    const i8* q = (const i8*)(b + 2 + (c & 3) * 8);
    for (int k = 0; k < 8; ++k) w[k] = d * (float)q[k];
}
template <> DEV void decode8<T_Q4K>(const u8* row, u32 c, float* w) {
    const u8* b = row + (c >> 5) * 144;
    u32 e = (c & 31) * 8, g = e >> 6, sub = (e >> 5) & 1, l0 = e & 31;
    u32 sc, mn;
    scale_min_k4(2 * g + sub, b + 4, &sc, &mn);
    float d1 = h2f(ld16(b)) * (float)sc, m1 = h2f(ld16(b + 2)) * (float)mn;
    const u8* q = b + 16 + 32 * g + l0;
    for (int k = 0; k < 8; ++k) w[k] = d1 * (float)((q[k] >> (4 * sub)) & 0xFu) - m1;
}
template <> DEV void decode8<T_Q5K>(const u8* row, u32 c, float* w) {
    const u8* b = row + (c >> 5) * 176;
    u32 e = (c & 31) * 8, g = e >> 6, sub = (e >> 5) & 1, l0 = e & 31;
    u32 sc, mn;
    scale_min_k4(2 * g + sub, b + 4, &sc, &mn);
    float d1 = h2f(ld16(b)) * (float)sc, m1 = h2f(ld16(b + 2)) * (float)mn;
    const u8* qh = b + 16 + l0;
    const u8* q = b + 48 + 32 * g + l0;
    u32 hb = 2 * g + sub;
    for (int k = 0; k < 8; ++k) {
        u32 v = ((q[k] >> (4 * sub)) & 0xFu) | (((qh[k] >> hb) & 1u) << 4);
        w[k] = d1 * (float)v - m1;
    }
}
template <> DEV void decode8<T_Q6K>(const u8* row, u32 c, float* w) {
    const u8* b = row + (c >> 5) * 210;
    u32 e = (c & 31) * 8, n = e >> 7, r = e & 127, quarter = r >> 5, l0 = r & 31;
    const u8* ql = b + 64 * n + l0 + 32 * (quarter & 1);
    const u8* qh = b + 128 + 32 * n + l0;
    const i8* scales = (const i8*)(b + 192);
    float d = h2f(ld16(b + 208)) * (float)scales[8 * n + (l0 >> 4) + 2 * quarter];
    u32 shift = 4 * (quarter >> 1);
    for (int k = 0; k < 8; ++k) {
        int v = (int)(((ql[k] >> shift) & 0xFu) | (((qh[k] >> (2 * quarter)) & 3u) << 4)) - 32;
        w[k] = d * (float)v;
    }
}

DEV float warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) v += SHFL_XOR(v, m);
    return v;
}

DEV float silu(float g) { return g / (1.0f + expf(-g)); }

// act[pair][j] = silu(gate_j . x[row]) * (up_j . x[row]) for every pair of the item.
template <int T>
DEV void gate_up(const u64* items, const u32* rows, const float* x, float* act, u32 hidden,
                 u32 ffn) {
    u32 lane = threadIdx.x & 31, j = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (j >= ffn) return;  // whole warp leaves together: no shuffle is left half-done
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    u64 rb = row_bytes<T>(hidden);
    const u8* g = (const u8*)it[0] + j * rb;
    const u8* u = (const u8*)it[1] + j * rb;
    u32 chunks = hidden / 8;
    for (u32 t0 = 0; t0 < n; t0 += TT) {
        u32 nt = n - t0 < TT ? n - t0 : TT;
        float ag[TT], au[TT];
        const float* xr[TT];
        for (int t = 0; t < TT; ++t) {
            ag[t] = 0.0f;
            au[t] = 0.0f;
            xr[t] = x + (u64)rows[pair0 + t0 + (t < (int)nt ? t : 0)] * hidden;
        }
        for (u32 c = lane; c < chunks; c += 32) {
            float wg[8], wu[8];
            decode8<T>(g, c, wg);
            decode8<T>(u, c, wu);
            for (int t = 0; t < TT; ++t) {
                if (t < (int)nt) {
                    const float* xv = xr[t] + 8 * c;
                    for (int k = 0; k < 8; ++k) {
                        ag[t] += wg[k] * xv[k];
                        au[t] += wu[k] * xv[k];
                    }
                }
            }
        }
        for (int t = 0; t < TT; ++t) {
            float sg = warp_sum(ag[t]), su = warp_sum(au[t]);
            if (lane == 0 && t < (int)nt) act[(u64)(pair0 + t0 + t) * ffn + j] = silu(sg) * su;
        }
    }
}

// y[pair][i] = weight[pair] * (down_i . act[pair]) for every pair of the item.
template <int T>
DEV void down(const u64* items, const float* wts, const float* act, float* y, u32 hidden,
              u32 ffn) {
    u32 lane = threadIdx.x & 31, i = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (i >= hidden) return;
    const u64* it = items + 4 * blockIdx.y;
    u32 pair0 = (u32)(it[3] & 0xffffffffu), n = (u32)(it[3] >> 32);
    const u8* d = (const u8*)it[2] + i * row_bytes<T>(ffn);
    u32 chunks = ffn / 8;
    for (u32 t0 = 0; t0 < n; t0 += TT) {
        u32 nt = n - t0 < TT ? n - t0 : TT;
        float acc[TT];
        for (int t = 0; t < TT; ++t) acc[t] = 0.0f;
        for (u32 c = lane; c < chunks; c += 32) {
            float w[8];
            decode8<T>(d, c, w);
            for (int t = 0; t < TT; ++t) {
                if (t < (int)nt) {
                    const float* a = act + (u64)(pair0 + t0 + t) * ffn + 8 * c;
                    for (int k = 0; k < 8; ++k) acc[t] += w[k] * a[k];
                }
            }
        }
        for (int t = 0; t < TT; ++t) {
            float s = warp_sum(acc[t]);
            u32 p = pair0 + t0 + t;
            if (lane == 0 && t < (int)nt) y[(u64)p * hidden + i] = wts[p] * s;
        }
    }
}

#define INSTANTIATE(T, name)                                                                  \
    KERNEL void gate_up_##name(const u64* items, const u32* rows, const float* x, float* act, \
                               u32 hidden, u32 ffn) {                                         \
        gate_up<T>(items, rows, x, act, hidden, ffn);                                         \
    }                                                                                         \
    KERNEL void down_##name(const u64* items, const float* wts, const float* act, float* y,   \
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
KERNEL void combine(const u32* tok_start, const u32* tok_pairs, const float* y, float* out,
                    u32 hidden) {
    u32 i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (i >= hidden) return;
    float s = 0.0f;
    for (u32 p = tok_start[t]; p < tok_start[t + 1]; ++p) s += y[(u64)tok_pairs[p] * hidden + i];
    out[(u64)t * hidden + i] = s;
}

// Rounds activations in place to the values the CPU kernels multiply with (hmoe-quant's
// ActBuf), so that an expert gives the same result on either side and placement never
// changes the output beyond float rounding. fmt 1: bf16 (nearest even); 2: Q8_0 blocks
// of 32 (d = amax / 127, q = rint(v / d)); 3: Q8_K blocks of 256 (the first value of
// largest magnitude maps to -127). Grid: (width / block, rows); one warp per block.
#define ACT_BF16 1
#define ACT_Q8_0 2
#define ACT_Q8K 3
KERNEL void act_round(float* a, u32 width, u32 fmt) {
    u32 lane = threadIdx.x & 31;
    u32 bs = fmt == ACT_Q8K ? 256 : 32;
    float* p = a + (u64)blockIdx.y * width + (u64)blockIdx.x * bs;
    if (fmt == ACT_BF16) {
        u32 u = AS_UINT(p[lane]);
        if ((u & 0x7fffffffu) <= 0x7f800000u) u += 0x7fffu + ((u >> 16) & 1u);
        p[lane] = AS_FLOAT(u & 0xffff0000u);
        return;
    }
    // Largest magnitude and the first index holding it (indices travel as floats:
    // exact below 2^24, and the emulator shuffles floats only).
    float amax = 0.0f, idx = 1e9f;
    for (u32 j = lane; j < bs; j += 32) {
        float av = fabsf(p[j]);
        if (av > amax) {
            amax = av;
            idx = (float)j;
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
        float q = fminf(fmaxf(rintf(p[lane] * id), -127.0f), 127.0f);
        p[lane] = q * d;
        return;
    }
    if (amax == 0.0f) {
        for (u32 j = lane; j < bs; j += 32) p[j] = 0.0f;
        return;
    }
    // Every lane read the block before any lane writes it back.
    float mx = p[(u32)idx];
    float vals[8];
    for (u32 k = 0; k < 8; ++k) vals[k] = p[lane + 32 * k];
    mx = SHFL_XOR(mx, 0);
    float iscale = -127.0f / mx;
    float d = 1.0f / iscale;
    for (u32 k = 0; k < 8; ++k) {
        float q = fminf(fmaxf(rintf(iscale * vals[k]), -127.0f), 127.0f);
        p[lane + 32 * k] = q * d;
    }
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
