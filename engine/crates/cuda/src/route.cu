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
//
// Latency is all that matters here (one warp on the layer's critical path; ncu timed the
// first version at ~10 us on an H100). So the map, which lives in host memory across PCIe,
// is read by every lane at once with the logits, before the top-k (one round trip, not
// one per chosen expert); each rank's expert, slot and weight stay in registers (the
// rank loop has a constant bound, so it unrolls: no local-memory arrays); and lane r
// writes rank r's results, so the host-memory stores leave in parallel.
KERNEL void route_resident(const float* logits, u32 n_experts, u32 top_k, u32 renorm,
                           const volatile u32* map, u64 slot_base, u64 slot_bytes,
                           u64 gate_bytes, unsigned char* meta, u32 off_rows, u32 off_weights,
                           u32 off_tok_start, u32 off_tok_pairs, u32 off_tok_down,
                           volatile u32* res, u32* seq) {
    u32 lane = threadIdx.x & 31;
    const float ninf = AS_FLOAT(0xff800000u);
    const u32 none = 0xffffffffu;
    float v[ROUTE_MAX_PER_LANE];
    u32 slot[ROUTE_MAX_PER_LANE];
    for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j) {
        u32 e = lane + 32 * j;
        v[j] = e < n_experts ? logits[e] : ninf;
        slot[j] = e < n_experts ? map[e] : 0;
    }
    float mx = ninf;
    for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j)
        if (v[j] > mx) mx = v[j];
    for (int o = 16; o > 0; o >>= 1) {
        float other = SHFL_XOR(mx, o);
        if (other > mx) mx = other;
    }
    float sum = 0.0f;
    for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j)
        if (lane + 32 * j < n_experts) sum += expf(v[j] - mx);
    sum = warp_sum(sum);
    u32 k = top_k < ROUTE_MAX_K ? top_k : ROUTE_MAX_K;
    // This lane's rank (lane < k): its expert, slot + 1, probability and index among the
    // hits; and over all ranks the hit count, hit mask and chosen probability mass.
    u32 my_id = 0, my_slot = 0, my_hit = 0, hits = 0, mask = 0;
    float my_p = 0.0f, chosen = 0.0f;
    for (u32 r = 0; r < ROUTE_MAX_K; ++r) {
        if (r >= k) continue;  // uniform over the warp; a constant-bound loop unrolls
        // The lane's best remaining logit, then the warp's (ties to the lower index).
        float bv = ninf;
        u32 bi = none, bs = 0;
        for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j) {
            u32 e = lane + 32 * j;
            if (e < n_experts && (v[j] > bv || bi == none)) bv = v[j], bi = e, bs = slot[j];
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = SHFL_XOR(bv, o);
            u32 oi = AS_UINT(SHFL_XOR(AS_FLOAT(bi), o));  // the bits, moved exactly
            u32 os = AS_UINT(SHFL_XOR(AS_FLOAT(bs), o));
            if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi, bs = os;
        }
        // Taken: -inf never wins against a remaining logit (n_experts >= top_k).
        for (int j = 0; j < ROUTE_MAX_PER_LANE; ++j)
            if (lane + 32 * j == bi) v[j] = ninf;
        float p = expf(bv - mx) / sum;
        chosen += p;
        if (lane == r) my_id = bi, my_slot = bs, my_p = p, my_hit = hits;
        if (bs != 0) mask |= 1u << r, ++hits;
    }
    u64* items = (u64*)meta;
    u32* rows = (u32*)(meta + off_rows);
    float* wts = (float*)(meta + off_weights);
    if (lane < k) {
        float w = renorm ? my_p / chosen : my_p;
        res[3 + lane] = my_id;
        res[3 + k + lane] = AS_UINT(w);
        if (my_slot != 0) {
            u64 base = slot_base + (u64)(my_slot - 1) * slot_bytes;
            u64* it = items + 4 * my_hit;
            it[0] = base;
            it[1] = base + gate_bytes;
            it[2] = base + 2 * gate_bytes;
            it[3] = (u64)my_hit | ((u64)1 << 32);
            rows[my_hit] = 0;
            wts[my_hit] = w;
            ((u32*)(meta + off_tok_pairs))[my_hit] = my_hit;
            ((u64*)(meta + off_tok_down))[my_hit] = base + 2 * gate_bytes;
        }
        if (lane >= hits) {  // the items after the hits: the misses, with no pairs
            u64* it = items + 4 * lane;
            it[0] = it[1] = it[2] = slot_base;  // never read: no pairs
            it[3] = (u64)hits;
        }
    }
    if (lane == 0) {
        u32* tok_start = (u32*)(meta + off_tok_start);
        tok_start[0] = 0;
        tok_start[1] = hits;
        res[1] = hits;
        res[2] = mask;
    }
    FENCE_SYSTEM();  // each lane's results before the sequence number the host polls
    SYNCWARP();
    if (lane != 0) return;
    u32 s = seq[0] + 1;
    seq[0] = s;  // device memory, read by the next launch (stream order)
    res[0] = s;
}
