// Tiled ("flash-attention") causal GQA attention for prefill calls of the device-resident
// dense path (GpuDense), appended after the other kernels (uses kernels.cu's ldf4,
// cp_async16, cp_commit, cp_wait, SYNCTHREADS, SHFL_XOR, AS_FLOAT, DEV, KERNEL);
// docs/notes/cuda-kernels.md, "Tiled prefill attention".
//
// attend_split gives every (row, head) its own warps, each reading its K/V rows from L2:
// a 512-row prefill reads the sequence's cache 512 x 32 times, and every score is a
// 5-shuffle warp_sum. Here a CTA takes ATT_TM query vectors of ONE sequence and ONE KV
// head (the (row, group head) pairs that share that KV head, GQA, flattened row-major),
// loads each block of ATT_TN cache positions into shared memory once, and computes the
// ATT_TM x ATT_TN scores and the P.V update as two small register-tiled matrix products:
// no shuffles in the inner loops, every K/V element reused ATT_TM times.
//
// Rows of a call may belong to several sequences (rows of one sequence are contiguous:
// each sequence appears once in a call). A tile of query vectors is cut into segments of
// equal cache address kc[row]; each segment walks its own sequence's cache (a tile that
// straddles a sequence boundary runs twice, with the other rows masked out). No host-side
// tile table: the grid depends only on the row count.
//
// Math in f32: online softmax (max m, sum l, unnormalised output), scale folded into q,
// causal mask by position (row at position p sees cache positions 0..=p).

#define ATT_TM 64         // query vectors per CTA (ATTEND_TILE_VECTORS in attend_tiled.rs)
#define ATT_TN 32         // cache positions per shared-memory block (ATTEND_TILE_POSITIONS)
#define ATT_THREADS 256   // threads per CTA (ATTEND_TILE_THREADS in attend_tiled.rs)
// K/V blocks in shared memory: 2 = the next block is copied (cp.async) while this one is
// used; 1 = copy, wait, use (less shared memory). ATTEND_TILE_STAGES in attend_tiled.rs is
// the default; hmoe-cuda-check attention times both.
#ifndef ATT_STAGES
#define ATT_STAGES 2
#endif

#ifdef HMOE_EMU
#define ATT_BOUNDS
DEV void att_st4(float* p, const float* v) {
    emu_align(p, 16);
    std::memcpy(p, v, 16);
}
#else
// 2 CTAs per SM (the shared memory allows two at head_dim 128): at most 128 registers.
#define ATT_BOUNDS __launch_bounds__(ATT_THREADS, 2)
DEV void att_st4(float* p, const float* v) { *(float4*)p = make_float4(v[0], v[1], v[2], v[3]); }
#endif

// Shared-memory layout (floats) for head size D: Q [TM][D + 4], K [STAGES][TN][D + 4] (rows
// padded so that 8 lanes reading 8 different rows hit 8 different bank groups),
// V [STAGES][TN][D], P [TM][TN + 8] (scores, then probabilities), corr [TM], l [TM]. Every
// array starts on a 16-byte boundary. The host computes the same size (attend_tiled.rs,
// tiled_smem_floats).
template <int D> struct AttTile {
    enum {
        QST = D + 4,
        KST = D + 4,
        PST = ATT_TN + 8,
        K_OFF = ATT_TM * QST,
        V_OFF = K_OFF + ATT_STAGES * ATT_TN * KST,
        P_OFF = V_OFF + ATT_STAGES * ATT_TN * D,
        C_OFF = P_OFF + ATT_TM * PST,
        L_OFF = C_OFF + ATT_TM,
        FLOATS = L_OFF + ATT_TM,
    };
};

// Starts the copy of K and V rows kb .. kb + TN - 1 into ks, vs (one stage); rows at or past
// the segment's visible end are zeros (never read from the cache: they may lie past its end).
template <int D>
DEV void att_load_kv(float* ks, float* vs, const float* kp, const float* vp, u32 kb, u32 vis,
                     u32 kvw) {
    const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (u32 e = threadIdx.x; e < ATT_TN * (D / 4); e += ATT_THREADS) {
        u32 j = e / (D / 4), c = e % (D / 4);
        float* kd = ks + j * AttTile<D>::KST + 4 * c;
        float* vd = vs + j * D + 4 * c;
        if (kb + j < vis) {
            cp_async16(kd, kp + (u64)(kb + j) * kvw + 4 * c);
            cp_async16(vd, vp + (u64)(kb + j) * kvw + 4 * c);
        } else {
            att_st4(kd, zero);
            att_st4(vd, zero);
        }
    }
    cp_commit();
}

// Thread roles (256 threads, 8 warps): in the score and P.V products thread (ty, tx),
// ty = 4 * (warp / 2) + lane / 8, tx = 8 * (warp % 2) + lane % 8, owns query vectors
// ty + 16a (a < 4) and cache positions tx + 16c (c < 2) of the scores, or output elements
// 4 tx + 64 b .. + 3 (b < D / 64) of P.V; a warp then reads 4 distinct Q/P rows and 8
// distinct K rows or 8 consecutive V chunks per shared load (one wavefront each). In the
// softmax, threads 4i .. 4i + 3 own vector i, 8 positions each.
template <int D>
DEV void attend_tiled_d(const float* q, const u64* kc, const u64* vc, const u32* pos, float* out,
                        u32 n, u32 n_heads, u32 n_kv, float scale, float* sm) {
    typedef AttTile<D> L;
    const int NB = D / 64;
    float* qs = sm;
    float* ks = sm + L::K_OFF;
    float* vs = sm + L::V_OFF;
    float* ps = sm + L::P_OFF;
    float* cs = sm + L::C_OFF;
    float* ls = sm + L::L_OFF;
    const float NEG_INF = AS_FLOAT(0xff800000u);
    const u32 g_n = n_heads / n_kv, kvh = blockIdx.y, kvw = n_kv * D;
    const u32 v0 = blockIdx.x * ATT_TM, nv = n * g_n;
    const u32 v1 = v0 + ATT_TM < nv ? v0 + ATT_TM : nv;
    const u32 t = threadIdx.x, lane = t & 31, w = t >> 5;
    const u32 ty = 4 * (w >> 1) + (lane >> 3), tx = 8 * (w & 1) + (lane & 7);
    const u32 si = t >> 2, sub = t & 3;  // softmax: vector si, positions 8 sub .. 8 sub + 7
    for (u32 sv = v0; sv < v1;) {
        // The segment: vectors [sv, ev) whose rows share the cache of row sv / g_n.
        const u32 r0 = sv / g_n;
        const u64 kbase = kc[r0], vbase = vc[r0];
        u32 r = r0, vis = 0;
        while (r * g_n < v1 && kc[r] == kbase) {
            if (pos[r] + 1 > vis) vis = pos[r] + 1;
            ++r;
        }
        const u32 ev = r * g_n < v1 ? r * g_n : v1;
        for (u32 e = t; e < ATT_TM * (D / 4); e += ATT_THREADS) {
            u32 i = e / (D / 4), c = e % (D / 4), v = v0 + i;
            float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (v >= sv && v < ev) {
                u32 row = v / g_n, h = kvh * g_n + v % g_n;
                ldf4(q + ((u64)row * n_heads + h) * D + 4 * c, x);
                for (int k = 0; k < 4; ++k) x[k] *= scale;
            }
            att_st4(qs + i * L::QST + 4 * c, x);
        }
        // Positions vector si may see: pos + 1, or 0 outside the segment.
        const u32 mv = v0 + si;
        const u32 lim = mv >= sv && mv < ev ? pos[mv / g_n] + 1 : 0;
        float m = NEG_INF, l = 0.0f;
        float o[4][NB][4];
        for (int a = 0; a < 4; ++a)
            for (int b = 0; b < NB; ++b)
                for (int k = 0; k < 4; ++k) o[a][b][k] = 0.0f;
        const float* kp = (const float*)kbase + (u64)kvh * D;
        const float* vp = (const float*)vbase + (u64)kvh * D;
        if (ATT_STAGES == 2) att_load_kv<D>(ks, vs, kp, vp, 0, vis, kvw);
        for (u32 kb = 0, it = 0; kb < vis; kb += ATT_TN, ++it) {
            const u32 st = ATT_STAGES == 2 ? it & 1 : 0;
            const float* kt = ks + st * (ATT_TN * L::KST);
            const float* vt = vs + st * (ATT_TN * D);
            if (ATT_STAGES == 2) {
                // Block it + 1 goes to the other stage (free: every thread has passed the
                // barrier that ended block it - 1); then wait for block it only.
                if (kb + ATT_TN < vis) {
                    att_load_kv<D>(ks + (st ^ 1) * (ATT_TN * L::KST), vs + (st ^ 1) * (ATT_TN * D),
                                   kp, vp, kb + ATT_TN, vis, kvw);
                    cp_wait<1>();
                } else {
                    cp_wait<0>();
                }
            } else {
                att_load_kv<D>(ks, vs, kp, vp, kb, vis, kvw);
                cp_wait<0>();
            }
            SYNCTHREADS();  // every thread's copies (and the segment's q) are visible
            // Scores S = Q K^T (q already scaled).
            float s[4][2];
            for (int a = 0; a < 4; ++a) s[a][0] = s[a][1] = 0.0f;
            for (int d = 0; d < D; d += 4) {
                float qa[4][4], kk[2][4];
                for (int a = 0; a < 4; ++a) ldf4(qs + (ty + 16 * a) * L::QST + d, qa[a]);
                for (int c = 0; c < 2; ++c) ldf4(kt + (tx + 16 * c) * L::KST + d, kk[c]);
                for (int a = 0; a < 4; ++a)
                    for (int c = 0; c < 2; ++c)
                        for (int k = 0; k < 4; ++k) s[a][c] += qa[a][k] * kk[c][k];
            }
            for (int a = 0; a < 4; ++a)
                for (int c = 0; c < 2; ++c) ps[(ty + 16 * a) * L::PST + tx + 16 * c] = s[a][c];
            SYNCTHREADS();
            // Online softmax of vector si over this block; masked positions get p = 0.
            {
                float x[8];
                float* pr = ps + si * L::PST + 8 * sub;
                ldf4(pr, x);
                ldf4(pr + 4, x + 4);
                float bm = NEG_INF;
                for (int k = 0; k < 8; ++k)
                    if (kb + 8 * sub + k < lim && x[k] > bm) bm = x[k];
                float other = SHFL_XOR(bm, 1);
                if (other > bm) bm = other;
                other = SHFL_XOR(bm, 2);
                if (other > bm) bm = other;
                float mn = bm > m ? bm : m;
                // mn = -inf only for a vector outside the segment (it sees nothing).
                float corr = mn == NEG_INF ? 1.0f : expf(m - mn), sum = 0.0f;
                for (int k = 0; k < 8; ++k) {
                    x[k] = kb + 8 * sub + k < lim ? expf(x[k] - mn) : 0.0f;
                    sum += x[k];
                }
                sum += SHFL_XOR(sum, 1);
                sum += SHFL_XOR(sum, 2);
                l = l * corr + sum;
                m = mn;
                att_st4(pr, x);
                att_st4(pr + 4, x + 4);
                if (sub == 0) cs[si] = corr;
            }
            SYNCTHREADS();
            // O = O * corr + P V.
            for (int a = 0; a < 4; ++a) {
                float c = cs[ty + 16 * a];
                for (int b = 0; b < NB; ++b)
                    for (int k = 0; k < 4; ++k) o[a][b][k] *= c;
            }
            for (int j = 0; j < ATT_TN; j += 4) {
                float pa[4][4];
                for (int a = 0; a < 4; ++a) ldf4(ps + (ty + 16 * a) * L::PST + j, pa[a]);
                for (int jj = 0; jj < 4; ++jj) {
                    float vv[NB][4];
                    for (int b = 0; b < NB; ++b) ldf4(vt + (j + jj) * D + 4 * tx + 64 * b, vv[b]);
                    for (int a = 0; a < 4; ++a)
                        for (int b = 0; b < NB; ++b)
                            for (int k = 0; k < 4; ++k) o[a][b][k] += pa[a][jj] * vv[b][k];
                }
            }
            SYNCTHREADS();  // this stage's K, V and P are refilled later
        }
        if (sub == 0) ls[si] = l;
        SYNCTHREADS();
        for (int a = 0; a < 4; ++a) {
            u32 i = ty + 16 * a, v = v0 + i;
            if (v < sv || v >= ev) continue;
            float li = ls[i];
            u32 row = v / g_n, h = kvh * g_n + v % g_n;
            float* dst = out + ((u64)row * n_heads + h) * D + 4 * tx;
            for (int b = 0; b < NB; ++b) {
                float y[4];
                for (int k = 0; k < 4; ++k) y[k] = o[a][b][k] / li;
                att_st4(dst + 64 * b, y);
            }
        }
        SYNCTHREADS();  // ls and qs are rewritten by the next segment
        sv = ev;
    }
}

// out[i][h] = causal attention of row i, head h (rows of several sequences: row i's K/V
// cache of this layer at kc[i], vc[i], position pos[i]; rows of a sequence contiguous).
// Grid (ceil(n * (n_heads / n_kv) / ATT_TM), n_kv), block ATT_THREADS, dynamic shared
// memory smem_floats * 4 bytes, at least AttTile<head_dim>::FLOATS (else nothing is
// written: a host/kernel layout mismatch fails the checks instead of corrupting memory).
// head_dim 64 or 128 (others: attend_split).
KERNEL ATT_BOUNDS void attend_tiled(const float* q, const u64* kc, const u64* vc, const u32* pos,
                                    float* out, u32 n, u32 n_heads, u32 n_kv, u32 head_dim,
                                    float scale, u32 smem_floats) {
#ifdef HMOE_EMU
    // One block at a time in the emulator: a static array is the block's shared memory.
    alignas(16) static float sm[AttTile<128>::FLOATS];
#else
    extern __shared__ __align__(16) float sm[];
#endif
    switch (head_dim) {
    case 64:
        if (smem_floats >= (u32)AttTile<64>::FLOATS)
            attend_tiled_d<64>(q, kc, vc, pos, out, n, n_heads, n_kv, scale, sm);
        break;
    case 128:
        if (smem_floats >= (u32)AttTile<128>::FLOATS)
            attend_tiled_d<128>(q, kc, vc, pos, out, n, n_heads, n_kv, scale, sm);
        break;
    default: break;
    }
}
