// Device-side routing of a decode layer (gpu/routed.rs), appended after the other kernels
// (uses SHFL_XOR, AS_FLOAT, DEV, KERNEL, u32/u64).
//
// In decode the GPU used to wait for the host between a layer's router and its experts:
// the host read the logits, routed, planned and launched the expert pass (~20 us a layer,
// ~1 ms a token). route_resident routes on the device instead and writes the index tables
// of an expert pass over the selected experts that are resident in VRAM (a slot map the
// host keeps in mapped memory), so that the pass runs right after the router. The host
// learns the selection from `res` and handles only the rest (CPU share, copies).
//
// One warp. Softmax over the n_experts logits, the top_k by logit (ties to the lower index,
// as the host's route()), weights p / sum of the chosen p when renorm (Qwen3), else p.

#ifndef HMOE_EMU
#define FENCE_SYSTEM() __threadfence_system()
#else
#define FENCE_SYSTEM() THREADFENCE()
#endif

#define ROUTE_MAX_PER_LANE 8  // n_experts <= 256
#define ROUTE_MAX_K 16

// Index tables at `meta` (batch.rs's layout for top_k one-token items: items, rows,
// weights, tok_start, tok_pairs, tok_down at the given byte offsets): the hits first (in
// rank order, one pair each), then the misses with no pairs. `map[e]`: slot + 1 of the
// layer's expert e, or 0 when its weights are not (known to be) in VRAM. `res` (mapped
// host memory): res[1] hits, res[2] bit r set when rank r was a hit, res[3 + r] the expert
// of rank r, res[3 + k + r] its weight's bits; res[0] is written last, = the launch count
// kept at seq[0] (device memory), which the host polls for.
KERNEL void route_resident(const float* logits, u32 n_experts, u32 top_k, u32 renorm,
                           const volatile u32* map, u64 slot_base, u64 slot_bytes,
                           u64 gate_bytes, unsigned char* meta, u32 off_rows, u32 off_weights,
                           u32 off_tok_start, u32 off_tok_pairs, u32 off_tok_down,
                           volatile u32* res, u32* seq) {
    u32 lane = threadIdx.x & 31;
    const float ninf = AS_FLOAT(0xff800000u);
    float v[ROUTE_MAX_PER_LANE];
    float mx = ninf;
    for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j) {
        u32 e = lane + 32 * j;
        v[j] = e < n_experts ? logits[e] : ninf;
        if (v[j] > mx) mx = v[j];
    }
    for (int o = 16; o > 0; o >>= 1) {
        float other = SHFL_XOR(mx, o);
        if (other > mx) mx = other;
    }
    float sum = 0.0f;
    for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j)
        if (lane + 32 * j < n_experts) sum += expf(v[j] - mx);
    sum = warp_sum(sum);
    u32 k = top_k < ROUTE_MAX_K ? top_k : ROUTE_MAX_K;
    u32 ids[ROUTE_MAX_K];
    float probs[ROUTE_MAX_K], chosen = 0.0f;
    for (u32 r = 0; r < k; ++r) {
        // The lane's best remaining logit, then the warp's (ties to the lower index).
        float bv = ninf;
        u32 bi = 0xffffffffu;
        for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j) {
            u32 e = lane + 32 * j;
            if (e < n_experts && (v[j] > bv || bi == 0xffffffffu)) bv = v[j], bi = e;
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = SHFL_XOR(bv, o);
            u32 oi = AS_UINT(SHFL_XOR(AS_FLOAT(bi), o));  // the bits, moved exactly
            if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
        }
        // Taken: -inf never wins against a remaining logit (n_experts >= top_k).
        if (bi % 32 == lane) v[bi / 32] = ninf;
        ids[r] = bi;
        probs[r] = expf(bv - mx) / sum;
        chosen += probs[r];
    }
    if (lane != 0) return;
    u64* items = (u64*)meta;
    u32* rows = (u32*)(meta + off_rows);
    float* wts = (float*)(meta + off_weights);
    u32* tok_start = (u32*)(meta + off_tok_start);
    u32* tok_pairs = (u32*)(meta + off_tok_pairs);
    u64* tok_down = (u64*)(meta + off_tok_down);
    u32 hits = 0, mask = 0, slot1[ROUTE_MAX_K];
    for (u32 r = 0; r < k; ++r) slot1[r] = map[ids[r]];
    for (u32 r = 0; r < k; ++r) {
        float w = renorm ? probs[r] / chosen : probs[r];
        res[3 + r] = ids[r];
        res[3 + k + r] = AS_UINT(w);
        if (slot1[r] == 0) continue;
        u64 base = slot_base + (u64)(slot1[r] - 1) * slot_bytes;
        u64* it = items + 4 * hits;
        it[0] = base;
        it[1] = base + gate_bytes;
        it[2] = base + 2 * gate_bytes;
        it[3] = (u64)hits | ((u64)1 << 32);
        rows[hits] = 0;
        wts[hits] = w;
        tok_pairs[hits] = hits;
        tok_down[hits] = base + 2 * gate_bytes;
        mask |= 1u << r;
        ++hits;
    }
    for (u32 h = hits; h < k; ++h) {
        u64* it = items + 4 * h;
        it[0] = it[1] = it[2] = slot_base;  // never read: no pairs
        it[3] = (u64)hits;
    }
    tok_start[0] = 0;
    tok_start[1] = hits;
    res[1] = hits;
    res[2] = mask;
    u32 s = seq[0] + 1;
    seq[0] = s;
    FENCE_SYSTEM();  // the results before the sequence number the host polls
    res[0] = s;
}
