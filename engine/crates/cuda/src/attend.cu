// Split-context ("flash-decoding") attention of the device-resident dense path (GpuDense),
// appended after kernels.cu and dense.cu (uses warp_sum, AS_FLOAT, DEV, KERNEL).
//
// attend_rows (dense.cu) walks a row's whole context in one warp: in decode that is 32
// warps (one per head) walking ~1k positions one after another, ~1.5 us each, about 2 ms
// per layer. Here the context is cut into chunks: warp (row, head, split) reduces its chunk
// to a partial softmax state (max m, sum l, unnormalised output acc), and attend_combine
// merges a row's partials. Each warp also works on ATT_UNROLL positions at a time, so that
// many K/V loads are in flight. No shared memory (the host emulator has none).
//
// The plan (chunk, n_splits) is read from device memory (plan[0], plan[1]) so that a
// captured CUDA graph stays valid while the context grows: the grid is sized for a split
// count rounded up (grid_splits), and warps past n_splits return at once.
//
// Partial layout: part[((row * n_heads + head) * n_splits + split) * (head_dim + 2) ...]
// = m, l, acc[head_dim]. Row i has ceil((pos[i] + 1) / chunk) valid splits; the others
// are neither written nor read.

#define ATT_WARPS 4   // warps per block; must match ATT_WARPS in gpu/resident.rs
#define ATT_UNROLL 8  // positions per warp step (K and V rows in flight)
#define ATT_MAX_PER 8 // head_dim / 32 at most (head_dim <= 256)

// Loads per (head_dim / 32) consecutive floats: lane L owns elements per*L .. per*L+per-1,
// so a warp reads a head's row in one coalesced sweep (16-byte loads when per = 4).
DEV void att_load(const float* p, float* o, u32 per) {
#ifndef HMOE_EMU
    if (per == 4) {
        float4 v = *(const float4*)p;
        o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
        return;
    }
    if (per == 8) {
        float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w;
        o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
        return;
    }
#endif
    for (u32 e = 0; e < per; ++e) o[e] = p[e];
}

// Grid (n_heads * ceil(grid_splits / ATT_WARPS), n_rows), block 32 * ATT_WARPS, with
// grid_splits >= n_splits. Warp w of block (bx, i) is split (bx % groups) * ATT_WARPS + w
// of head bx / groups of row i; it covers [split * chunk, min((split + 1) * chunk, pos[i] + 1)).
KERNEL void attend_split(const float* q, const u64* kc, const u64* vc, const u32* pos, float* part,
                         u32 n_heads, u32 n_kv, u32 head_dim, float scale, const u32* plan,
                         u32 grid_splits) {
    u32 lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    u32 chunk = plan[0], n_splits = plan[1];
    u32 groups = (grid_splits + ATT_WARPS - 1) / ATT_WARPS;
    u32 h = blockIdx.x / groups, split = (blockIdx.x % groups) * ATT_WARPS + w, i = blockIdx.y;
    u32 visible = pos[i] + 1, t0 = split * chunk;
    if (split >= n_splits || t0 >= visible) return;  // whole warp: no shuffle is left waiting
    u32 t1 = t0 + chunk < visible ? t0 + chunk : visible;
    u32 per = head_dim / 32, kvw = n_kv * head_dim;
    u64 off = (u64)(h / (n_heads / n_kv)) * head_dim + per * lane;
    const float* k = (const float*)kc[i] + off;
    const float* v = (const float*)vc[i] + off;
    float qv[ATT_MAX_PER], acc[ATT_MAX_PER];
    att_load(q + ((u64)i * n_heads + h) * head_dim + per * lane, qv, per);
    for (u32 e = 0; e < ATT_MAX_PER; ++e) {
        qv[e] = e < per ? qv[e] * scale : 0.0f;
        acc[e] = 0.0f;
    }
    float m = AS_FLOAT(0xff800000u), l = 0.0f;  // -inf, 0
    for (u32 t = t0; t < t1; t += ATT_UNROLL) {
        u32 nt = t1 - t < ATT_UNROLL ? t1 - t : ATT_UNROLL;
        // Every K and V row of the step is requested before any is used: one memory
        // latency per step instead of one per row.
        float kv[ATT_UNROLL][ATT_MAX_PER], vv[ATT_UNROLL][ATT_MAX_PER];
        for (u32 j = 0; j < ATT_UNROLL; ++j) {
            if (j < nt) {
                att_load(k + (u64)(t + j) * kvw, kv[j], per);
                att_load(v + (u64)(t + j) * kvw, vv[j], per);
            }
        }
        float s[ATT_UNROLL];
        for (u32 j = 0; j < ATT_UNROLL; ++j) {
            s[j] = 0.0f;
            if (j < nt)
                for (u32 e = 0; e < per; ++e) s[j] += qv[e] * kv[j][e];
        }
        float mx = m;
        for (u32 j = 0; j < ATT_UNROLL; ++j) {
            s[j] = warp_sum(s[j]);
            if (j < nt && s[j] > mx) mx = s[j];
        }
        float corr = expf(m - mx);
        l *= corr;
        for (u32 e = 0; e < per; ++e) acc[e] *= corr;
        for (u32 j = 0; j < nt; ++j) {
            float p = expf(s[j] - mx);
            l += p;
            for (u32 e = 0; e < per; ++e) acc[e] += p * vv[j][e];
        }
        m = mx;
    }
    float* o = part + (((u64)i * n_heads + h) * n_splits + split) * (head_dim + 2);
    if (lane == 0) o[0] = m, o[1] = l;
    for (u32 e = 0; e < per; ++e) o[2 + per * lane + e] = acc[e];
}

// out[i][h] = merge of row i's valid partials of head h. Grid (n_heads, n_rows), block 32.
// The lanes find the largest partial max together, then every lane walks the splits
// ATT_UNROLL at a time with all their loads issued first (a decode row has ~40 splits:
// one load after another cost ~40 memory latencies).
KERNEL void attend_combine(const float* part, const u32* pos, float* out, u32 n_heads,
                           u32 head_dim, const u32* plan) {
    u32 lane = threadIdx.x & 31, h = blockIdx.x, i = blockIdx.y;
    u32 chunk = plan[0], n_splits = plan[1];
    u32 per = head_dim / 32, valid = (pos[i] + chunk) / chunk;  // ceil((pos + 1) / chunk)
    if (valid > n_splits) valid = n_splits;
    u32 stride = head_dim + 2;
    const float* p = part + ((u64)i * n_heads + h) * n_splits * stride;
    float mx = AS_FLOAT(0xff800000u);
    for (u32 s = lane; s < valid; s += 32) {
        float ms = p[(u64)s * stride];
        if (ms > mx) mx = ms;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float other = SHFL_XOR(mx, o);
        if (other > mx) mx = other;
    }
    float acc[ATT_MAX_PER], l = 0.0f;
    for (u32 e = 0; e < ATT_MAX_PER; ++e) acc[e] = 0.0f;
    for (u32 s0 = 0; s0 < valid; s0 += ATT_UNROLL) {
        u32 ns = valid - s0 < ATT_UNROLL ? valid - s0 : ATT_UNROLL;
        float ml[ATT_UNROLL][2], a[ATT_UNROLL][ATT_MAX_PER];
        for (u32 j = 0; j < ATT_UNROLL; ++j) {
            if (j < ns) {
                const float* ps = p + (u64)(s0 + j) * stride;
                ml[j][0] = ps[0];
                ml[j][1] = ps[1];
                for (u32 e = 0; e < per; ++e) a[j][e] = ps[2 + per * lane + e];
            }
        }
        for (u32 j = 0; j < ns; ++j) {
            float c = expf(ml[j][0] - mx);
            l += ml[j][1] * c;
            for (u32 e = 0; e < per; ++e) acc[e] += a[j][e] * c;
        }
    }
    float* o = out + ((u64)i * n_heads + h) * head_dim + per * lane;
    for (u32 e = 0; e < per; ++e) o[e] = acc[e] / l;
}
