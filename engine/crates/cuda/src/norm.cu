// RMSNorm of the device-resident dense path (GpuDense), appended after kernels.cu, dense.cu
// and attend.cu (uses ldf4, warp_sum, WARPS, DEV, KERNEL).
//
// In decode a norm is one row of 2048 values: dense.cu's rms_norm (one warp, one load per
// lane per step, the sum waiting on each load) took ~32 us on an H200 — 64 steps of memory
// latency. Here each lane issues NORM_UNROLL 16-byte loads before it uses any, so a row
// costs a few memory latencies.

#define NORM_UNROLL 8  // float4 loads in flight per lane

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for n_rows rows of cols values (cols a
// multiple of 4, rows 16-byte aligned); y may be x. Grid ceil(n_rows / WARPS), block
// 32 * WARPS; one warp per row.
KERNEL void rms_norm_rows(const float* x, const float* w, float* y, u32 n_rows, u32 cols,
                          float eps) {
    u32 lane = threadIdx.x & 31, r = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (r >= n_rows) return;
    const float* xr = x + (u64)r * cols;
    float* yr = y + (u64)r * cols;
    u32 c4 = cols / 4;
    float ss = 0.0f;
    for (u32 base = 0; base < c4; base += 32 * NORM_UNROLL) {
        float v[NORM_UNROLL][4];
        for (u32 k = 0; k < NORM_UNROLL; ++k) {
            u32 c = base + 32 * k + lane;
            if (c < c4) ldf4(xr + 4 * c, v[k]);
            else v[k][0] = v[k][1] = v[k][2] = v[k][3] = 0.0f;
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
