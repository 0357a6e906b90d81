// Split-context ("flash-decoding") attention of the device-resident dense path (GpuDense),
// appended after kernels.cu and dense.cu (uses warp_sum, AS_FLOAT, DEV, KERNEL).
//
// session 3's attention walked a row's whole context in one warp: in decode that is 32
// warps (one per head) walking ~1k positions one after another, ~1.5 us each, about 2 ms
// per layer. Here the context is cut into chunks: warp (row, head, split) reduces its chunk
// to a partial softmax state (max m, sum l, unnormalised output acc), and attend_combine
// merges a row's partials. Each warp also works on ATT_UNROLL positions at a time, so that
// many K/V loads are in flight. No shared memory.
//
// The plan (chunk, n_splits) is read from device memory (plan[0], plan[1]) so that a
// captured CUDA graph stays valid while the context grows: the grid is sized for a split
// count rounded up (grid_splits), and warps past n_splits return at once.
//
// The per-lane arrays are sized and indexed by a compile-time PER = head_dim / 32 (the
// kernels switch to a template instance): indexed by a run-time bound they went to local
// memory, and the attention took ~50 us per decode layer on an H200.
//
// Partial layout: part[((row * n_heads + head) * n_splits + split) * (head_dim + 2) ...]
// = m, l, acc[head_dim]. Row i has ceil((pos[i] + 1) / chunk) valid splits; the others
// are neither written nor read.

#define ATT_WARPS 4   // warps per block; must match ATT_WARPS in gpu/resident.rs
#define ATT_UNROLL 8  // positions per warp step (K and V rows in flight)

// Loads PER consecutive floats: lane L owns elements PER*L .. PER*L+PER-1, so a warp reads
// a head's row in one coalesced sweep (16-byte loads when PER is a multiple of 4).
template <int PER> DEV void att_load(const float* p, float* o) {
#ifndef HMOE_EMU
    if (PER % 4 == 0) {
        for (int c = 0; c < PER / 4; ++c) ldf4(p + 4 * c, o + 4 * c);
        return;
    }
#endif
    for (int e = 0; e < PER; ++e) o[e] = p[e];
}

// A warp serves HPW consecutive query heads of one KV head (grouped-query attention:
// n_heads / n_kv query heads read the same K and V rows). Each K and V row it loads is used
// HPW times, so the cache is read n_heads / (n_kv * HPW) times per call instead of
// n_heads / n_kv times: at HPW = 1 a decode layer of Qwen3-30B-A3B (32 heads, 4 KV heads)
// read its ~5 MB of cache 8 times over from L2. Per head the arithmetic is the same
// whatever HPW is, in the same order, so every HPW gives bit-identical partials.
template <int PER, int HPW>
DEV void attend_split_heads(const float* q, const u64* kc, const u64* vc, const u32* pos,
                            float* part, u32 n_heads, u32 n_kv, float scale, const u32* plan,
                            u32 grid_splits) {
    const u32 head_dim = 32 * PER;
    u32 lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    u32 chunk = plan[0], n_splits = plan[1];
    u32 groups = (grid_splits + ATT_WARPS - 1) / ATT_WARPS;
    u32 h0 = (blockIdx.x / groups) * HPW, i = blockIdx.y;
    u32 split = (blockIdx.x % groups) * ATT_WARPS + w;
    u32 visible = pos[i] + 1, t0 = split * chunk;
    if (split >= n_splits || t0 >= visible) return;  // whole warp: no shuffle is left waiting
    u32 t1 = t0 + chunk < visible ? t0 + chunk : visible;
    u32 kvw = n_kv * head_dim;
    u64 off = (u64)(h0 / (n_heads / n_kv)) * head_dim + PER * lane;
    const float* k = (const float*)kc[i] + off;
    const float* v = (const float*)vc[i] + off;
    float qv[HPW][PER], acc[HPW][PER], m[HPW], l[HPW];
    for (int g = 0; g < HPW; ++g) {
        att_load<PER>(q + ((u64)i * n_heads + h0 + g) * head_dim + PER * lane, qv[g]);
        for (int e = 0; e < PER; ++e) {
            qv[g][e] *= scale;
            acc[g][e] = 0.0f;
        }
        m[g] = AS_FLOAT(0xff800000u);  // -inf
        l[g] = 0.0f;
    }
    for (u32 t = t0; t < t1; t += ATT_UNROLL) {
        u32 nt = t1 - t < ATT_UNROLL ? t1 - t : ATT_UNROLL;
        // Every K and V row of the step is requested before any is used: one memory
        // latency per step instead of one per row.
        float kv[ATT_UNROLL][PER], vv[ATT_UNROLL][PER];
        for (int j = 0; j < ATT_UNROLL; ++j) {
            if ((u32)j < nt) {
                att_load<PER>(k + (u64)(t + j) * kvw, kv[j]);
                att_load<PER>(v + (u64)(t + j) * kvw, vv[j]);
            } else {
                for (int e = 0; e < PER; ++e) kv[j][e] = vv[j][e] = 0.0f;
            }
        }
        for (int g = 0; g < HPW; ++g) {
            float s[ATT_UNROLL];
            for (int j = 0; j < ATT_UNROLL; ++j) {
                s[j] = 0.0f;
                for (int e = 0; e < PER; ++e) s[j] += qv[g][e] * kv[j][e];
            }
            float mx = m[g];
            for (int j = 0; j < ATT_UNROLL; ++j) {
                s[j] = warp_sum(s[j]);
                if ((u32)j < nt && s[j] > mx) mx = s[j];
            }
            float corr = expf(m[g] - mx);
            l[g] *= corr;
            for (int e = 0; e < PER; ++e) acc[g][e] *= corr;
            for (int j = 0; j < ATT_UNROLL; ++j) {
                float p = (u32)j < nt ? expf(s[j] - mx) : 0.0f;
                l[g] += p;
                for (int e = 0; e < PER; ++e) acc[g][e] += p * vv[j][e];
            }
            m[g] = mx;
        }
    }
    for (int g = 0; g < HPW; ++g) {
        float* o = part + (((u64)i * n_heads + h0 + g) * n_splits + split) * (head_dim + 2);
        if (lane == 0) o[0] = m[g], o[1] = l[g];
        for (int e = 0; e < PER; ++e) o[2 + PER * lane + e] = acc[g][e];
    }
}

// Grouped heads (hpw 2, 4 or 8) of one head size.
template <int PER>
DEV void attend_split_grouped(const float* q, const u64* kc, const u64* vc, const u32* pos,
                              float* part, u32 n_heads, u32 n_kv, float scale, const u32* plan,
                              u32 grid_splits, u32 hpw) {
    switch (hpw) {
    case 2: attend_split_heads<PER, 2>(q, kc, vc, pos, part, n_heads, n_kv, scale, plan, grid_splits); break;
    case 4: attend_split_heads<PER, 4>(q, kc, vc, pos, part, n_heads, n_kv, scale, plan, grid_splits); break;
    case 8: attend_split_heads<PER, 8>(q, kc, vc, pos, part, n_heads, n_kv, scale, plan, grid_splits); break;
    default: break;
    }
}

// Grid ((n_heads / hpw) * ceil(grid_splits / ATT_WARPS), n_rows), block 32 * ATT_WARPS,
// with grid_splits >= n_splits. Warp w of block (bx, i) is split
// (bx % groups) * ATT_WARPS + w of heads (bx / groups) * hpw .. + hpw - 1 of row i; it
// covers [split * chunk, min((split + 1) * chunk, pos[i] + 1)).
//
// One entry point per head size, and the grouped forms (hpw 2, 4, 8: gpu/attend.rs picks
// hpw, which divides n_heads / n_kv) apart from one head a warp: a kernel gets the
// registers of its largest instance, and one entry for every form took 198 registers a
// thread (2 blocks an SM, two waves for a decode row: 17 us on an H100, ncu, session 8)
// where the single-head instance needs far fewer. `head_dim` must be the entry's.
#define ATTEND_SPLIT_ENTRY(PER, HD)                                                            \
    KERNEL void attend_split_##HD(const float* q, const u64* kc, const u64* vc, const u32* pos,  \
                                  float* part, u32 n_heads, u32 n_kv, u32 head_dim, float scale, \
                                  const u32* plan, u32 grid_splits, u32 hpw) {                  \
        if (hpw == 1 && head_dim == HD)                                                         \
            attend_split_heads<PER, 1>(q, kc, vc, pos, part, n_heads, n_kv, scale, plan,        \
                                       grid_splits);                                            \
    }                                                                                           \
    KERNEL void attend_split_##HD##_g(const float* q, const u64* kc, const u64* vc,             \
                                      const u32* pos, float* part, u32 n_heads, u32 n_kv,       \
                                      u32 head_dim, float scale, const u32* plan,               \
                                      u32 grid_splits, u32 hpw) {                               \
        if (head_dim == HD)                                                                     \
            attend_split_grouped<PER>(q, kc, vc, pos, part, n_heads, n_kv, scale, plan,         \
                                      grid_splits, hpw);                                        \
    }
ATTEND_SPLIT_ENTRY(1, 32)
ATTEND_SPLIT_ENTRY(2, 64)
ATTEND_SPLIT_ENTRY(4, 128)
ATTEND_SPLIT_ENTRY(8, 256)

#ifdef HMOE_EMU
// Every form behind one call, for the emulator's harness (the device launches the entries).
DEV void attend_split(const float* q, const u64* kc, const u64* vc, const u32* pos, float* part,
                      u32 n_heads, u32 n_kv, u32 head_dim, float scale, const u32* plan,
                      u32 grid_splits, u32 hpw) {
    switch (head_dim * 16 + (hpw > 1)) {
    case 32 * 16: attend_split_32(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    case 32 * 16 + 1: attend_split_32_g(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    case 64 * 16: attend_split_64(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    case 64 * 16 + 1: attend_split_64_g(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    case 128 * 16: attend_split_128(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    case 128 * 16 + 1: attend_split_128_g(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    case 256 * 16: attend_split_256(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    case 256 * 16 + 1: attend_split_256_g(q, kc, vc, pos, part, n_heads, n_kv, head_dim, scale, plan, grid_splits, hpw); break;
    default: break;
    }
}
#endif

// Merges row i's valid partials of head h. The lanes find the largest partial max
// together, then every lane walks the splits ATT_UNROLL at a time with all their loads
// issued first (a decode row has ~40 splits).
template <int PER>
DEV void attend_combine_head(const float* part, const u32* pos, float* out, u32 n_heads,
                             const u32* plan) {
    const u32 head_dim = 32 * PER, stride = head_dim + 2;
    u32 lane = threadIdx.x & 31, h = blockIdx.x, i = blockIdx.y;
    u32 chunk = plan[0], n_splits = plan[1];
    u32 valid = (pos[i] + chunk) / chunk;  // ceil((pos + 1) / chunk)
    if (valid > n_splits) valid = n_splits;
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
    float acc[PER], l = 0.0f;
    for (int e = 0; e < PER; ++e) acc[e] = 0.0f;
    for (u32 s0 = 0; s0 < valid; s0 += ATT_UNROLL) {
        u32 ns = valid - s0 < ATT_UNROLL ? valid - s0 : ATT_UNROLL;
        float ml[ATT_UNROLL][2], a[ATT_UNROLL][PER];
        for (int j = 0; j < ATT_UNROLL; ++j) {
            if ((u32)j < ns) {
                const float* ps = p + (u64)(s0 + j) * stride;
                ml[j][0] = ps[0];
                ml[j][1] = ps[1];
                for (int e = 0; e < PER; ++e) a[j][e] = ps[2 + PER * lane + e];
            } else {
                ml[j][0] = mx;
                ml[j][1] = 0.0f;
                for (int e = 0; e < PER; ++e) a[j][e] = 0.0f;
            }
        }
        for (int j = 0; j < ATT_UNROLL; ++j) {
            float c = expf(ml[j][0] - mx);
            l += ml[j][1] * c;
            for (int e = 0; e < PER; ++e) acc[e] += a[j][e] * c;
        }
    }
    float* o = out + ((u64)i * n_heads + h) * head_dim + PER * lane;
    for (int e = 0; e < PER; ++e) o[e] = acc[e] / l;
}

// out[i][h] = merge of row i's valid partials of head h. Grid (n_heads, n_rows), block 32.
KERNEL void attend_combine(const float* part, const u32* pos, float* out, u32 n_heads,
                           u32 head_dim, const u32* plan) {
    switch (head_dim) {
    case 32: attend_combine_head<1>(part, pos, out, n_heads, plan); break;
    case 64: attend_combine_head<2>(part, pos, out, n_heads, plan); break;
    case 128: attend_combine_head<4>(part, pos, out, n_heads, plan); break;
    case 256: attend_combine_head<8>(part, pos, out, n_heads, plan); break;
    default: break;
    }
}
