// Runs one dense-path kernel of src/dense.cu in the emulator. Input (little-endian u32
// unless noted) starts with the op code:
//   0 linear:  type rows cols n wbytes | w[wbytes] | f32 x[n*cols]            -> f32 y[n*rows]
//   1 rms_norm: n_rows cols | f32 eps | f32 x[n_rows*cols] | f32 w[cols]
//              -> f32 y out of place, then f32 y computed in place
//   4 attend_split + attend_combine (a batch of sequences, kvw = n_kv*head_dim; the new
//              rows' keys and values are copied into their caches first, as
//              qk_norm_rope_kv leaves them):
//              n_seq n_heads n_kv head_dim | f32 scale | chunk n_splits grid_splits hpw
//              | per seq: start m cap
//              | per seq: f32 K history[start*kvw], V history[start*kvw]
//              | f32 q[n*n_heads*head_dim] | f32 k[n*kvw] | f32 v[n*kvw]
//              -> f32 out[n*n_heads*head_dim], then per seq K[(start+m)*kvw], V[same]
//   5 add_to:  len | f32 x[len] | f32 y[len]                                  -> f32 x + y
//   6 attend_tiled, and attend_split + attend_combine on the same caches: the
//              input of 4 followed by u32 smem_floats (the host's shared-memory size)
//              -> f32 tiled out[n*n_heads*head_dim], f32 split out[same], then the caches as 4
#include "emu.h"
#include <algorithm>
#include "../../src/kernels.cu"
#include "../../src/dense.cu"
#include "../../src/attend.cu"
#include "../../src/gemm.cu"
#include "../../src/attend_tiled.cu"
#include <cstdio>

static FILE* in;
static u32 rd32() { u32 v = 0; if (fread(&v, 4, 1, in) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }
static float rdf() { u32 v = rd32(); float f; memcpy(&f, &v, 4); return f; }
template <class T> static std::vector<T> rdv(size_t n) {
    std::vector<T> v(n);
    if (n && fread(v.data(), sizeof(T), n, in) != n) { fprintf(stderr, "short array\n"); exit(2); }
    return v;
}

typedef void (*LinearFn)(const u8*, const float*, float*, u32, u32, u32);

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: dense_harness IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    if (!in) { perror("open input"); return 2; }
    std::vector<float> out;
    u32 op = rd32();
    switch (op) {
    case 0: {
        u32 ty = rd32(), rows = rd32(), cols = rd32(), n = rd32(), wb = rd32();
        auto w = rdv<u8>(wb);
        w.resize(wb + 16);  // whole 16-byte chunks for the async path (see harness.cpp)
        auto x = rdv<float>((size_t)n * cols);
        out.assign((size_t)n * rows, -7.0f);
        LinearFn f[] = {linear_f32, linear_f16, linear_bf16, linear_q8_0, linear_q4_k, linear_q5_k, linear_q6_k};
        LinearFn g[] = {gemm_linear_f32, gemm_linear_f16, gemm_linear_bf16, gemm_linear_q8_0, gemm_linear_q4_k, gemm_linear_q5_k, gemm_linear_q6_k};
        if (ty > 6) return 2;
        // GEMM_MIN_TOKENS or more tokens: the tiled kernel, as src/gpu/gemm.rs launches it.
        if (n >= GEMM_MIN_TOKENS)
            emu_launch(EmuDim{(rows + GEMM_BM - 1) / GEMM_BM, (n + GEMM_BN - 1) / GEMM_BN, 1}, EmuDim{256, 1, 1},
                       [&] { g[ty](w.data(), x.data(), out.data(), rows, cols, n); });
        else
            emu_launch(EmuDim{(rows + WARPS - 1) / WARPS, (n + TT - 1) / TT, 1}, EmuDim{32 * WARPS, 1, 1},
                       [&] { f[ty](w.data(), x.data(), out.data(), rows, cols, n); });
        break;
    }
    case 1: {
        u32 n_rows = rd32(), cols = rd32();
        float eps = rdf();
        auto x = rdv<float>((size_t)n_rows * cols);
        auto w = rdv<float>(cols);
        out.assign(x.size(), -7.0f);
        emu_launch(EmuDim{n_rows, 1, 1}, EmuDim{NORM_THREADS, 1, 1},
                   [&] { rms_norm(x.data(), w.data(), out.data(), n_rows, cols, eps); });
        // In place, as the dense path runs the per-head norms.
        emu_launch(EmuDim{n_rows, 1, 1}, EmuDim{NORM_THREADS, 1, 1},
                   [&] { rms_norm(x.data(), w.data(), x.data(), n_rows, cols, eps); });
        out.insert(out.end(), x.begin(), x.end());
        break;
    }
    case 4:
    case 6: {
        bool tiled = op == 6;
        u32 ns = rd32(), nh = rd32(), nkv = rd32(), hd = rd32();
        float scale = rdf();
        u32 plan[2] = {rd32(), rd32()};  // chunk, n_splits
        u32 grid_splits = rd32(), hpw = rd32();
        u32 kvw = nkv * hd;
        std::vector<u32> start(ns), m(ns), cap(ns);
        u32 n = 0;
        for (u32 s = 0; s < ns; ++s) {
            start[s] = rd32(), m[s] = rd32(), cap[s] = rd32();
            n += m[s];
        }
        std::vector<std::vector<float>> kc(ns), vc(ns);
        for (u32 s = 0; s < ns; ++s) {
            // NaN beyond the history: a read past a row's context poisons its output.
            kc[s].assign((size_t)cap[s] * kvw, NAN);
            vc[s].assign((size_t)cap[s] * kvw, NAN);
            auto kh = rdv<float>((size_t)start[s] * kvw), vh = rdv<float>((size_t)start[s] * kvw);
            std::copy(kh.begin(), kh.end(), kc[s].begin());
            std::copy(vh.begin(), vh.end(), vc[s].begin());
        }
        auto q = rdv<float>((size_t)n * nh * hd);
        auto k = rdv<float>((size_t)n * kvw);
        auto v = rdv<float>((size_t)n * kvw);
        u32 smem_floats = tiled ? rd32() : 0;
        std::vector<u64> kt, vt;
        std::vector<u32> pos;
        for (u32 s = 0; s < ns; ++s)
            for (u32 i = 0; i < m[s]; ++i) {
                kt.push_back((u64)(uintptr_t)kc[s].data());
                vt.push_back((u64)(uintptr_t)vc[s].data());
                pos.push_back(start[s] + i);
            }
        for (u32 i = 0; i < n; ++i) {
            std::copy(k.begin() + (size_t)i * kvw, k.begin() + (size_t)(i + 1) * kvw,
                      (float*)(uintptr_t)kt[i] + (size_t)pos[i] * kvw);
            std::copy(v.begin() + (size_t)i * kvw, v.begin() + (size_t)(i + 1) * kvw,
                      (float*)(uintptr_t)vt[i] + (size_t)pos[i] * kvw);
        }
        // Partials start as NaN: a merge of a split that was never written poisons the output.
        std::vector<float> part((size_t)n * nh * plan[1] * (hd + 2), NAN);
        u32 groups = (grid_splits + ATT_WARPS - 1) / ATT_WARPS;
        emu_launch(EmuDim{nh / hpw * groups, n, 1}, EmuDim{32 * ATT_WARPS, 1, 1}, [&] {
            attend_split(q.data(), kt.data(), vt.data(), pos.data(), part.data(), nh, nkv, hd,
                         scale, plan, grid_splits, hpw);
        });
        std::vector<float> split(q.size(), -7.0f);
        emu_launch(EmuDim{nh, n, 1}, EmuDim{32, 1, 1}, [&] {
            attend_combine(part.data(), pos.data(), split.data(), nh, hd, plan);
        });
        if (tiled) {
            // -7 stays where the kernel writes nothing (a layout it refuses, a missed row).
            out.assign(q.size(), -7.0f);
            u32 tiles = (n * (nh / nkv) + ATT_TM - 1) / ATT_TM;
            emu_launch(EmuDim{tiles, nkv, 1}, EmuDim{ATT_THREADS, 1, 1}, [&] {
                attend_tiled(q.data(), kt.data(), vt.data(), pos.data(), out.data(), n, nh, nkv,
                             hd, scale, smem_floats);
            });
        }
        out.insert(out.end(), split.begin(), split.end());
        for (u32 s = 0; s < ns; ++s) {
            size_t used = (size_t)(start[s] + m[s]) * kvw;
            out.insert(out.end(), kc[s].begin(), kc[s].begin() + used);
            out.insert(out.end(), vc[s].begin(), vc[s].begin() + used);
        }
        break;
    }
    case 5: {
        u32 len = rd32();
        out = rdv<float>(len);
        auto y = rdv<float>(len);
        emu_launch(EmuDim{(len + 255) / 256, 1, 1}, EmuDim{256, 1, 1},
                   [&] { add_to(out.data(), y.data(), (u64)len); });
        break;
    }
    default: fprintf(stderr, "bad op\n"); return 2;
    }
    fclose(in);
    FILE* o = fopen(argv[2], "wb");
    if (!o || fwrite(out.data(), 4, out.size(), o) != out.size()) { perror("write output"); return 2; }
    fclose(o);
    return 0;
}
