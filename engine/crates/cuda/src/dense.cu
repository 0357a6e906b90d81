// Dense-path kernels (docs/notes/cuda.md, "Dense path"): appended to kernels.cu, whose
// rows_dot<T>, reduce_rows, warp_sum and macros they use. Verified in the emulator (tests/emu_dense.rs)
// and by hmoe-cuda-check.

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
        rows_dot<T, 1, 1, U_ONE>(wr, xr, nt, cols, acc);
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

// RMSNorm: in decode a norm is one row of 2048 values, and a loop that waits on one load
// per step costs 64 memory latencies (~32 us on an H200); here each lane issues
// NORM_UNROLL 16-byte loads before it uses any.
//
// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for n_rows rows of cols values (cols a
// multiple of 4, rows 16-byte aligned; also QK-norm, one row per head); y may be x. Grid
// ceil(n_rows / WARPS), block 32 * WARPS; one warp per row.
#define NORM_UNROLL 8  // float4 loads in flight per lane

// One row: y = x / sqrt(mean(x^2) + eps) * w, where x first gains `add` when given (the
// residual add fused in front of the norm; x is written back). One warp; lane L holds the
// float4 groups L, L + 32, ... (the summation order every norm of the dense path shares).
DEV void norm_row(float* xr, const float* add, const float* w, float* yr, u32 cols, float eps) {
    u32 lane = threadIdx.x & 31;
    u32 c4 = cols / 4;
    float ss = 0.0f;
    for (u32 base = 0; base < c4; base += 32 * NORM_UNROLL) {
        float v[NORM_UNROLL][4];
        for (u32 k = 0; k < NORM_UNROLL; ++k) {
            u32 c = base + 32 * k + lane;
            if (c < c4) ldf4(xr + 4 * c, v[k]);
            else v[k][0] = v[k][1] = v[k][2] = v[k][3] = 0.0f;
        }
        if (add) {
            for (u32 k = 0; k < NORM_UNROLL; ++k) {
                u32 c = base + 32 * k + lane;
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
        for (u32 k = 0; k < NORM_UNROLL; ++k)
            for (u32 e = 0; e < 4; ++e) ss += v[k][e] * v[k][e];
    }
    ss = warp_sum(ss);
    float scale = 1.0f / sqrtf(ss / (float)cols + eps);
    for (u32 base = 0; base < c4; base += 32 * NORM_UNROLL) {
        float v[NORM_UNROLL][4], g[NORM_UNROLL][4];
        for (u32 k = 0; k < NORM_UNROLL; ++k) {
            u32 c = base + 32 * k + lane;
            if (c < c4) {
                ldf4(xr + 4 * c, v[k]);
                ldf4(w + 4 * c, g[k]);
            }
        }
        for (u32 k = 0; k < NORM_UNROLL; ++k) {
            u32 c = base + 32 * k + lane;
            if (c < c4)
                for (u32 e = 0; e < 4; ++e) yr[4 * c + e] = v[k][e] * scale * g[k][e];
        }
    }
}

KERNEL void rms_norm(const float* x, const float* w, float* y, u32 n_rows, u32 cols, float eps) {
    u32 r = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (r >= n_rows) return;
    norm_row((float*)x + (u64)r * cols, 0, w, y + (u64)r * cols, cols, eps);
}

// Residual add and norm in one launch: x[r] += y[r], then out[r] = RMSNorm(x[r]) * w
// (the same values as add_to followed by rms_norm). Grid as rms_norm.
KERNEL void add_rms_norm(float* x, const float* y, const float* w, float* out, u32 n_rows, u32 cols,
                         float eps) {
    u32 r = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (r >= n_rows) return;
    norm_row(x + (u64)r * cols, y + (u64)r * cols, w, out + (u64)r * cols, cols, eps);
}

// The per-head work between the QKV projections and the attention in one launch: one warp
// per (token, head) over nh query heads, then nkv key heads, then nkv value heads. Query
// and key heads get RMSNorm (weights qnw / knw) and NeoX RoPE at pos[t], in place (the
// angle product in f32, cos/sin in f64, as the CPU path); key and value heads go to row
// pos[t] of their sequence's cache (kc[t], vc[t]; rows of nkv * head_dim floats).
// head_dim a power of two, 32..256. Grid ceil(n * (nh + 2 * nkv) / WARPS), block 32 * WARPS.
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
    if (kind != 2) {
        // Each lane re-reads only the groups it wrote; partners come through shuffles.
        norm_row(row, 0, kind == 0 ? qnw : knw, row, head_dim, eps);
        float x[2][4], r[2][4];
        for (u32 g = 0; g < 2; ++g) {
            u32 c = lane + 32 * g;
            if (c < c4) ldf4(row + 4 * c, x[g]);
            else x[g][0] = x[g][1] = x[g][2] = x[g][3] = 0.0f;
        }
        // Element i pairs with i + half (or i - half): d groups away, i.e. d lanes away
        // (a shuffle) below head_dim 256, the lane's other group at 256.
        u32 half = head_dim / 2, d = half / 4;
        for (u32 g = 0; g < 2; ++g)
            for (u32 e = 0; e < 4; ++e) {
                float other = d < 32 ? SHFL_XOR(x[g][e], d) : x[g ^ 1][e];
                u32 c = lane + 32 * g, i = 4 * c + e;
                bool low = i < half;
                u32 i0 = low ? i : i - half;
                float a = (float)pos[t] * inv_freq[i0 < half ? i0 : 0];
                float cs = (float)cos((double)a), sn = (float)sin((double)a);
                r[g][e] = low ? x[g][e] * cs - other * sn : x[g][e] * cs + other * sn;
            }
        for (u32 g = 0; g < 2; ++g) {
            u32 c = lane + 32 * g;
            if (c < c4)
                for (u32 e = 0; e < 4; ++e) row[4 * c + e] = r[g][e];
        }
    }
    if (kind == 0) return;
    float* dst = (float*)(kind == 1 ? kc[t] : vc[t]) + (u64)pos[t] * nkv * head_dim + (u64)kvh * head_dim;
    for (u32 g = 0; g < 2; ++g) {
        u32 c = lane + 32 * g;
        if (c < c4)
            for (u32 e = 0; e < 4; ++e) dst[4 * c + e] = row[4 * c + e];
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
