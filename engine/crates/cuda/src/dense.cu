// Dense-path kernels (docs/notes/cuda.md, "Dense path"): appended to kernels.cu, whose
// rows_dot<T>, reduce_rows, warp_sum and macros they use. Verified in the emulator (tests/emu_dense.rs)
// and by hmoe-cuda-check.

// Steps of a decode row (one token) in flight per warp in `linear`: a dense matrix row of
// the attention is 8-16 steps (2048-4096 columns), and each group of U_LIN steps costs
// one memory latency (HMOE_CUDA_DEFINES=U_LIN=.. times others in the engine).
#ifndef U_LIN
#define U_LIN U_ONE
#endif

// y[t][r] = w_r . x[t] for a [rows, cols] matrix of raw GGUF blocks and n tokens.
// Grid (ceil(rows / WARPS), ceil(n / TT)); one warp per row, TT tokens per block row; the
// row walk is rows_dot (kernels.cu): 32-bit weight words, 16-byte activation loads.
template <int T>
DEV void linear_block(const u8* w, const float* x, float* y, u32 rows, u32 cols, u32 n,
                      u32 bx) {
    u32 r = bx * WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    u32 t0 = blockIdx.y * TT;
    u32 nt = n - t0 < TT ? n - t0 : TT;
    const u8* const wr[1] = {w + r * row_bytes<T>(cols)};
    float acc[1][TT];
    const float* xr[TT];
    for (int t = 0; t < TT; ++t) {
        acc[0][t] = 0.0f;
        xr[t] = x + (u64)(t0 + (t < (int)nt ? t : 0)) * cols;
    }
    auto put = [&](u32, u32 t, float s, float) { y[(u64)(t0 + t) * rows + r] = s; };
    if (nt == 1) {
#if ASYNC
        rows_dot_async<T, 1>(wr, xr[0], cols, acc);
#else
        rows_dot<T, 1, 1, U_LIN>(wr, xr, nt, cols, acc);
#endif
        reduce_rows<1, 1, false>(acc, nt, put);
    } else {
        rows_dot<T, 1, TT, U_TILE>(wr, xr, nt, cols, acc);
        reduce_rows<1, TT, false>(acc, nt, put);
    }
}

template <int T>
DEV void linear(const u8* w, const float* x, float* y, u32 rows, u32 cols, u32 n) {
    linear_block<T>(w, x, y, rows, cols, n, blockIdx.x);
}

// Up to three matrices of type T that read the same input x (a layer's wq, wk and wv; a
// layer's router and the next layer's) in one launch, as three `linear` launches would
// compute them: blocks 0 .. ceil(r0 / WARPS) take w0, the next ceil(r1 / WARPS) w1, the
// rest w2 (r2 = 0: none). A decode layer's kernels are latency-bound, so each launch
// saved is a kernel boundary off the layer's critical path.
template <int T>
DEV void linear_multi(const u8* w0, const u8* w1, const u8* w2, float* y0, float* y1,
                      float* y2, u32 r0, u32 r1, u32 r2, const float* x, u32 cols, u32 n) {
    u32 b0 = (r0 + WARPS - 1) / WARPS, b1 = (r1 + WARPS - 1) / WARPS, bx = blockIdx.x;
    // Pick the matrix, then one body (three inlined bodies would cost registers).
    const u8* w = w0;
    float* y = y0;
    u32 rows = r0;
    if (bx >= b0 + b1) {
        w = w2, y = y2, rows = r2, bx -= b0 + b1;
    } else if (bx >= b0) {
        w = w1, y = y1, rows = r1, bx -= b0;
    }
    linear_block<T>(w, x, y, rows, cols, n, bx);
}

// linear_multi whose third matrix has another type B (a layer's wv in Q6_K next to wq and
// wk in Q4_K, as llama.cpp's Q4_K_M and Q5_K_M files mix them): w0 and w1 (r1 may be 0)
// of type A, w2 of type B, in one launch; each matrix's rows as `linear` computes them.
template <int A, int B>
DEV void linear_mix(const u8* w0, const u8* w1, const u8* w2, float* y0, float* y1, float* y2,
                    u32 r0, u32 r1, u32 r2, const float* x, u32 cols, u32 n) {
    u32 b01 = (r0 + WARPS - 1) / WARPS + (r1 + WARPS - 1) / WARPS;
    if (blockIdx.x >= b01) linear_block<B>(w2, x, y2, r2, cols, n, blockIdx.x - b01);
    else linear_multi<A>(w0, w1, w2, y0, y1, y2, r0, r1, 0, x, cols, n);  // its blocks of w0, w1
}

// The (A, B) pairs of llama.cpp's K-quant mixes (gpu/resident.rs loads those it finds).
#define INSTANTIATE_MIX(A, B, name)                                                       \
    KERNEL BOUNDS void linear_mix_##name(const u8* w0, const u8* w1, const u8* w2, float* y0, \
                                         float* y1, float* y2, u32 r0, u32 r1, u32 r2,    \
                                         const float* x, u32 cols, u32 n) {               \
        linear_mix<A, B>(w0, w1, w2, y0, y1, y2, r0, r1, r2, x, cols, n);                 \
    }

#define INSTANTIATE_LINEAR(T, name)                                                       \
    KERNEL BOUNDS void linear_##name(const u8* w, const float* x, float* y, u32 rows, u32 cols,  \
                              u32 n) {                                                    \
        linear<T>(w, x, y, rows, cols, n);                                                \
    }                                                                                     \
    KERNEL BOUNDS void linear_multi_##name(const u8* w0, const u8* w1, const u8* w2,      \
                                           float* y0, float* y1, float* y2, u32 r0,       \
                                           u32 r1, u32 r2, const float* x, u32 cols,      \
                                           u32 n) {                                       \
        linear_multi<T>(w0, w1, w2, y0, y1, y2, r0, r1, r2, x, cols, n);                  \
    }

INSTANTIATE_LINEAR(T_F32, f32)
INSTANTIATE_LINEAR(T_F16, f16)
INSTANTIATE_LINEAR(T_BF16, bf16)
INSTANTIATE_LINEAR(T_Q8_0, q8_0)
INSTANTIATE_LINEAR(T_Q4K, q4_k)
INSTANTIATE_LINEAR(T_Q5K, q5_k)
INSTANTIATE_LINEAR(T_Q6K, q6_k)

INSTANTIATE_MIX(T_Q4K, T_Q6K, q4_k_q6_k)
INSTANTIATE_MIX(T_Q5K, T_Q6K, q5_k_q6_k)
INSTANTIATE_MIX(T_Q4K, T_Q5K, q4_k_q5_k)
INSTANTIATE_MIX(T_Q4K, T_Q8_0, q4_k_q8_0)
INSTANTIATE_MIX(T_Q5K, T_Q8_0, q5_k_q8_0)
INSTANTIATE_MIX(T_Q6K, T_Q8_0, q6_k_q8_0)

// The row norms of the dense path (attention and FFN norms, the output norm): one block of
// NORM_THREADS per row. In decode a norm is a single row, and a single warp waiting on its
// loads, then on the same loads again for the scaling, was 4-8 us a launch on an H100
// (ncu, session 8); a block loads the row, its weights and the addend at once, keeps them
// in registers (NORM_REG float4 groups a thread, rows up to 4096 values; wider rows
// re-read the rest) and sums the squares through shared memory in warp order (the same
// order on every row and every launch).
#define NORM_THREADS 256
#define NORM_REG 4

// y = x / sqrt(mean(x^2) + eps) * w for the block's row, where x first gains `add` when
// given (written back). y may be x, and add may be y: each thread reads its own groups
// before it writes them.
DEV void norm_block_row(float* xr, const float* add, const float* w, float* yr, u32 cols, float eps) {
    SHARED float part[NORM_THREADS / 32];
    u32 t = threadIdx.x, c4 = cols / 4;
    float v[NORM_REG][4], g[NORM_REG][4];
    float ss = 0.0f;
    for (u32 k = 0; k < NORM_REG; ++k) {
        u32 c = t + NORM_THREADS * k;
        if (c < c4) {
            ldf4(xr + 4 * c, v[k]);
            ldf4(w + 4 * c, g[k]);
        } else {
            zero4(v[k]);
            zero4(g[k]);
        }
    }
    if (add) {
        for (u32 k = 0; k < NORM_REG; ++k) {
            u32 c = t + NORM_THREADS * k;
            if (c < c4) {
                float a[4];
                ldf4(add + 4 * c, a);
                for (u32 e = 0; e < 4; ++e) {
                    v[k][e] += a[e];
                    xr[4 * c + e] = v[k][e];
                }
            }
        }
    }
    for (u32 k = 0; k < NORM_REG; ++k)
        for (u32 e = 0; e < 4; ++e) ss += v[k][e] * v[k][e];
    for (u32 c = t + NORM_THREADS * NORM_REG; c < c4; c += NORM_THREADS) {
        float r[4];
        ldf4(xr + 4 * c, r);
        if (add) {
            float a[4];
            ldf4(add + 4 * c, a);
            for (u32 e = 0; e < 4; ++e) {
                r[e] += a[e];
                xr[4 * c + e] = r[e];
            }
        }
        for (u32 e = 0; e < 4; ++e) ss += r[e] * r[e];
    }
    ss = warp_sum(ss);
    if ((t & 31) == 0) part[t >> 5] = ss;
    SYNCTHREADS();
    float tot = 0.0f;
    for (u32 i = 0; i < NORM_THREADS / 32; ++i) tot += part[i];
    float scale = 1.0f / sqrtf(tot / (float)cols + eps);
    for (u32 k = 0; k < NORM_REG; ++k) {
        u32 c = t + NORM_THREADS * k;
        if (c < c4)
            for (u32 e = 0; e < 4; ++e) yr[4 * c + e] = v[k][e] * scale * g[k][e];
    }
    for (u32 c = t + NORM_THREADS * NORM_REG; c < c4; c += NORM_THREADS) {
        float r[4], gw[4];
        ldf4(xr + 4 * c, r);
        ldf4(w + 4 * c, gw);
        for (u32 e = 0; e < 4; ++e) yr[4 * c + e] = r[e] * scale * gw[e];
    }
}

// y[r] = RMSNorm(x[r]) * w for n_rows rows of cols values (cols a multiple of 4, rows
// 16-byte aligned); y may be x. Grid n_rows, block NORM_THREADS.
KERNEL void rms_norm(const float* x, const float* w, float* y, u32 n_rows, u32 cols, float eps) {
    u32 r = blockIdx.x;
    if (r >= n_rows) return;
    norm_block_row((float*)x + (u64)r * cols, 0, w, y + (u64)r * cols, cols, eps);
}

// Residual add and norm in one launch: x[r] += y[r], then out[r] = RMSNorm(x[r]) * w
// (the same values as add_to followed by rms_norm). Grid and block as rms_norm.
KERNEL void add_rms_norm(float* x, const float* y, const float* w, float* out, u32 n_rows, u32 cols,
                         float eps) {
    u32 r = blockIdx.x;
    if (r >= n_rows) return;
    norm_block_row(x + (u64)r * cols, y + (u64)r * cols, w, out + (u64)r * cols, cols, eps);
}

// The per-head work between the QKV projections and the attention in one launch: one warp
// per (token, head) over nh query heads, then nkv key heads, then nkv value heads. Query
// and key heads get RMSNorm (weights qnw / knw) and NeoX RoPE at pos[t], in place (the
// angle product in f32, cos/sin in f64, as the CPU path); key and value heads go to row
// pos[t] of their sequence's cache (kc[t], vc[t]; rows of nkv * head_dim floats).
// head_dim a power of two, 32..256. Grid ceil(n * (nh + 2 * nkv) / WARPS), block 32 * WARPS.
//
// A decode layer waits on this kernel, so every load it needs (the head, its norm weights,
// the position, the RoPE frequencies, the cache address) is issued at the start: one
// memory latency, where a norm pass, a second pass and the RoPE loads took one each (7.9
// us on an H100, ncu, session 8). The arithmetic and its order are norm_row's and the
// RoPE's as before.
KERNEL void qk_norm_rope_kv(float* q, float* k, float* v, const float* qnw, const float* knw,
                            const u32* pos, const float* inv_freq, const u64* kc, const u64* vc,
                            u32 n, u32 nh, u32 nkv, u32 head_dim, float eps) {
    u32 lane = threadIdx.x & 31, wid = blockIdx.x * WARPS + (threadIdx.x >> 5);
    u32 heads = nh + 2 * nkv;
    if (wid >= n * heads) return;  // whole warps leave together
    u32 t = wid / heads, h = wid % heads;
    u32 kind = h < nh ? 0 : h < nh + nkv ? 1 : 2;  // query, key, value head
    u32 kvh = kind == 0 ? h : kind == 1 ? h - nh : h - nh - nkv;
    float* row = kind == 0   ? q + ((u64)t * nh + h) * head_dim
                 : kind == 1 ? k + ((u64)t * nkv + kvh) * head_dim
                             : v + ((u64)t * nkv + kvh) * head_dim;
    u32 c4 = head_dim / 4;  // float4 groups; lane holds groups lane and lane + 32
    u32 half = head_dim / 2, p = pos[t];
    const float* nw = kind == 0 ? qnw : knw;
    float x[2][4], g[2][4], inv[2][4];
    for (u32 j = 0; j < 2; ++j) {
        u32 c = lane + 32 * j;
        zero4(x[j]), zero4(g[j]), zero4(inv[j]);
        if (c >= c4) continue;
        ldf4(row + 4 * c, x[j]);
        if (kind == 2) continue;
        ldf4(nw + 4 * c, g[j]);
        for (u32 e = 0; e < 4; ++e) {
            u32 i = 4 * c + e;
            inv[j][e] = inv_freq[i < half ? i : i - half];
        }
    }
    float* dst = kind == 0 ? 0 : (float*)(kind == 1 ? kc[t] : vc[t]) + ((u64)p * nkv + kvh) * head_dim;
    if (kind != 2) {
        float ss = 0.0f;
        for (u32 j = 0; j < 2; ++j)
            for (u32 e = 0; e < 4; ++e) ss += x[j][e] * x[j][e];
        ss = warp_sum(ss);
        float scale = 1.0f / sqrtf(ss / (float)head_dim + eps);
        for (u32 j = 0; j < 2; ++j)
            for (u32 e = 0; e < 4; ++e) x[j][e] = x[j][e] * scale * g[j][e];
        // Element i pairs with i + half (or i - half): d groups away, i.e. d lanes away
        // (a shuffle) below head_dim 256, the lane's other group at 256.
        u32 d = half / 4;
        float r[2][4];
        for (u32 j = 0; j < 2; ++j)
            for (u32 e = 0; e < 4; ++e) {
                float other = d < 32 ? SHFL_XOR(x[j][e], d) : x[j ^ 1][e];
                bool low = 4 * (lane + 32 * j) + e < half;
                float a = (float)p * inv[j][e];
                float cs = (float)cos((double)a), sn = (float)sin((double)a);
                r[j][e] = low ? x[j][e] * cs - other * sn : x[j][e] * cs + other * sn;
            }
        for (u32 j = 0; j < 2; ++j)
            for (u32 e = 0; e < 4; ++e) x[j][e] = r[j][e];
        for (u32 j = 0; j < 2; ++j) {
            u32 c = lane + 32 * j;
            if (c < c4)
                for (u32 e = 0; e < 4; ++e) row[4 * c + e] = x[j][e];
        }
    }
    if (kind == 0) return;
    for (u32 j = 0; j < 2; ++j) {
        u32 c = lane + 32 * j;
        if (c < c4)
            for (u32 e = 0; e < 4; ++e) dst[4 * c + e] = x[j][e];
    }
}

// dst[j] = src[j] for j < words (32-bit words): a decode call's outputs written straight
// into mapped page-locked host memory by the call's last kernel, instead of a copy-engine
// download after it (a separate operation with its own latency on the layer's critical
// path). Grid ceil(words / 256), block 256.
KERNEL void copy_out(const u32* src, u32* dst, u32 words) {
    u32 j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < words) dst[j] = src[j];
}

// Residual add: x[j] += y[j] for j < len. Grid ceil(len / 256), block 256.
KERNEL void add_to(float* x, const float* y, u64 len) {
    u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < len) x[j] += y[j];
}
