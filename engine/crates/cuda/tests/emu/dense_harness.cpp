// Runs one dense-path kernel of src/dense.cu in the emulator. Input (little-endian u32
// unless noted) starts with the op code:
//   0 linear:  type rows cols n wbytes | w[wbytes] | f32 x[n*cols]            -> f32 y[n*rows]
//   1 rms_norm: n_rows cols | f32 eps | f32 x[n_rows*cols] | f32 w[cols]     -> f32 y
//   2 rope:    n_tokens n_heads head_dim | u32 pos[n_tokens] | f32 inv_freq[head_dim/2]
//              | f32 x[n_tokens*n_heads*head_dim]                             -> f32 x
//   3 attend:  n start n_heads n_kv head_dim | f32 scale | f32 q[n*n_heads*head_dim]
//              | f32 k[(start+n)*n_kv*head_dim] | f32 v[same]                 -> f32 out
#include "emu.h"
#include "../../src/kernels.cu"
#include "../../src/dense.cu"
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
    switch (rd32()) {
    case 0: {
        u32 ty = rd32(), rows = rd32(), cols = rd32(), n = rd32(), wb = rd32();
        auto w = rdv<u8>(wb);
        auto x = rdv<float>((size_t)n * cols);
        out.assign((size_t)n * rows, -7.0f);
        LinearFn f[] = {linear_f32, linear_f16, linear_bf16, linear_q8_0, linear_q4_k, linear_q5_k, linear_q6_k};
        if (ty > 6) return 2;
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
        emu_launch(EmuDim{(n_rows + WARPS - 1) / WARPS, 1, 1}, EmuDim{32 * WARPS, 1, 1},
                   [&] { rms_norm(x.data(), w.data(), out.data(), n_rows, cols, eps); });
        break;
    }
    case 2: {
        u32 nt = rd32(), nh = rd32(), hd = rd32();
        auto pos = rdv<u32>(nt);
        auto inv = rdv<float>(hd / 2);
        out = rdv<float>((size_t)nt * nh * hd);
        u32 total = nt * nh * (hd / 2);
        emu_launch(EmuDim{(total + 127) / 128, 1, 1}, EmuDim{128, 1, 1},
                   [&] { rope_neox(out.data(), pos.data(), inv.data(), nt, nh, hd); });
        break;
    }
    case 3: {
        u32 n = rd32(), start = rd32(), nh = rd32(), nkv = rd32(), hd = rd32();
        float scale = rdf();
        auto q = rdv<float>((size_t)n * nh * hd);
        auto k = rdv<float>((size_t)(start + n) * nkv * hd);
        auto v = rdv<float>((size_t)(start + n) * nkv * hd);
        out.assign(q.size(), -7.0f);
        emu_launch(EmuDim{nh, n, 1}, EmuDim{32, 1, 1},
                   [&] { attend(q.data(), k.data(), v.data(), out.data(), n, start, nh, nkv, hd, scale); });
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
