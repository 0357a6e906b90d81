// Runs a fused dense-path kernel of src/dense.cu in the emulator. Input (little-endian u32
// unless noted) starts with the op code:
//   0 qk_norm_rope_kv: n nh nkv hd cap | f32 eps | u32 pos[n] | f32 inv_freq[hd/2]
//       | f32 qnw[hd] | f32 knw[hd] | f32 q[n*nh*hd] | f32 k[n*nkv*hd] | f32 v[n*nkv*hd]
//       -> q, k, K cache[cap*nkv*hd], V cache[same]; the caches start as NaN.
//   1 add_rms_norm: rows cols | f32 eps | f32 x[rows*cols] | f32 y[same] | f32 w[cols]
//       -> x (the residual written back), out
#include "emu.h"
#include <algorithm>
#include "../../src/kernels.cu"
#include "../../src/dense.cu"
#include "../../src/attend.cu"
#include <cstdio>

static FILE* in;
static u32 rd32() { u32 v = 0; if (fread(&v, 4, 1, in) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }
static float rdf() { u32 v = rd32(); float f; memcpy(&f, &v, 4); return f; }
template <class T> static std::vector<T> rdv(size_t n) {
    std::vector<T> v(n);
    if (n && fread(v.data(), sizeof(T), n, in) != n) { fprintf(stderr, "short array\n"); exit(2); }
    return v;
}
static void put(std::vector<float>& out, const std::vector<float>& v) { out.insert(out.end(), v.begin(), v.end()); }
static EmuDim warps_grid(u32 warps) { return EmuDim{(warps + WARPS - 1) / WARPS, 1, 1}; }

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: fused_harness IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    if (!in) { perror("open input"); return 2; }
    std::vector<float> out;
    const EmuDim block{32 * WARPS, 1, 1};
    switch (rd32()) {
    case 0: {
        u32 n = rd32(), nh = rd32(), nkv = rd32(), hd = rd32(), cap = rd32();
        float eps = rdf();
        auto pos = rdv<u32>(n);
        auto inv = rdv<float>(hd / 2);
        auto qnw = rdv<float>(hd), knw = rdv<float>(hd);
        auto q = rdv<float>((size_t)n * nh * hd);
        auto k = rdv<float>((size_t)n * nkv * hd), v = rdv<float>((size_t)n * nkv * hd);
        u32 kvw = nkv * hd;
        std::vector<float> kc((size_t)cap * kvw, NAN), vc((size_t)cap * kvw, NAN);
        std::vector<u64> kt(n, (u64)(uintptr_t)kc.data()), vt(n, (u64)(uintptr_t)vc.data());
        emu_launch(warps_grid(n * (nh + 2 * nkv)), block, [&] {
            qk_norm_rope_kv(q.data(), k.data(), v.data(), qnw.data(), knw.data(), pos.data(),
                            inv.data(), kt.data(), vt.data(), n, nh, nkv, hd, eps);
        });
        put(out, q), put(out, k), put(out, kc), put(out, vc);
        break;
    }
    case 1: {
        u32 rows = rd32(), cols = rd32();
        float eps = rdf();
        auto x = rdv<float>((size_t)rows * cols), y = rdv<float>((size_t)rows * cols);
        auto w = rdv<float>(cols);
        std::vector<float> o(x.size(), -7.0f);
        emu_launch(EmuDim{rows, 1, 1}, EmuDim{NORM_THREADS, 1, 1},
                   [&] { add_rms_norm(x.data(), y.data(), w.data(), o.data(), rows, cols, eps); });
        put(out, x), put(out, o);
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
