// Runs the split-context attention of src/attend.cu in the emulator: kv_write of the new
// rows, attend_split, attend_combine. Input (little-endian u32 unless noted):
//   n_seq n_heads n_kv head_dim | f32 scale | chunk n_splits grid_splits | per seq: start m cap
//   | per seq: f32 K history[start*kvw], V history[start*kvw]
//   | f32 q[n*n_heads*head_dim] | f32 k[n*kvw] | f32 v[n*kvw]
// -> f32 out[n*n_heads*head_dim]
#include "emu.h"
#include <algorithm>
#include "../../src/kernels.cu"
#include "../../src/dense.cu"
#include "../../src/attend.cu"
#include <cstdio>

static FILE* in;
static u32 rd32() { u32 v = 0; if (fread(&v, 4, 1, in) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }
static float rdf() { u32 v = rd32(); float f; memcpy(&f, &v, 4); return f; }
static std::vector<float> rdv(size_t n) {
    std::vector<float> v(n);
    if (n && fread(v.data(), 4, n, in) != n) { fprintf(stderr, "short array\n"); exit(2); }
    return v;
}

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: attend_harness IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    if (!in) { perror("open input"); return 2; }
    u32 ns = rd32(), nh = rd32(), nkv = rd32(), hd = rd32();
    float scale = rdf();
    u32 chunk = rd32(), n_splits = rd32(), grid_splits = rd32();
    u32 plan[2] = {chunk, n_splits};
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
        auto kh = rdv((size_t)start[s] * kvw), vh = rdv((size_t)start[s] * kvw);
        std::copy(kh.begin(), kh.end(), kc[s].begin());
        std::copy(vh.begin(), vh.end(), vc[s].begin());
    }
    auto q = rdv((size_t)n * nh * hd);
    auto k = rdv((size_t)n * kvw);
    auto v = rdv((size_t)n * kvw);
    fclose(in);
    std::vector<u64> kt, vt;
    std::vector<u32> pos;
    for (u32 s = 0; s < ns; ++s)
        for (u32 i = 0; i < m[s]; ++i) {
            kt.push_back((u64)(uintptr_t)kc[s].data());
            vt.push_back((u64)(uintptr_t)vc[s].data());
            pos.push_back(start[s] + i);
        }
    emu_launch(EmuDim{(kvw + 127) / 128, n, 1}, EmuDim{128, 1, 1},
               [&] { kv_write(k.data(), v.data(), kt.data(), vt.data(), pos.data(), kvw); });
    // Partials start as NaN: a merge of a split that was never written poisons the output.
    std::vector<float> part((size_t)n * nh * n_splits * (hd + 2), NAN);
    u32 groups = (grid_splits + ATT_WARPS - 1) / ATT_WARPS;
    emu_launch(EmuDim{nh * groups, n, 1}, EmuDim{32 * ATT_WARPS, 1, 1}, [&] {
        attend_split(q.data(), kt.data(), vt.data(), pos.data(), part.data(), nh, nkv, hd, scale,
                     plan, grid_splits);
    });
    std::vector<float> out(q.size(), -7.0f);
    emu_launch(EmuDim{nh, n, 1}, EmuDim{32, 1, 1}, [&] {
        attend_combine(part.data(), pos.data(), out.data(), nh, hd, plan);
    });
    FILE* o = fopen(argv[2], "wb");
    if (!o || fwrite(out.data(), 4, out.size(), o) != out.size()) { perror("write output"); return 2; }
    fclose(o);
    return 0;
}
