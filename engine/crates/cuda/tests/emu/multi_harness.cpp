// Runs linear_multi (src/dense.cu) on up to three matrices of one type that share their
// input, or linear_mix when the third has another type, then the same matrices through
// three `linear` launches. Input (little-endian u32): types cols n r0 r1 r2 | w0 w1 w2
// (raw rows, r_i x row bytes each) | f32 x[n*cols], where types = t | (t2 + 1) << 8 (t2:
// the third matrix's type; 0 above the low byte: t too) -> f32 multi y0[n*r0] y1[n*r1]
// y2[n*r2], then the three linear outputs likewise.
#include "emu.h"
#include <algorithm>
#include "../../src/kernels.cu"
#include "../../src/dense.cu"
#include <cstdio>

static FILE* in;
static u32 rd32() { u32 v = 0; if (fread(&v, 4, 1, in) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }

typedef void (*LinearFn)(const u8*, const float*, float*, u32, u32, u32);
typedef void (*MultiFn)(const u8*, const u8*, const u8*, float*, float*, float*, u32, u32, u32,
                        const float*, u32, u32);

// The instantiated linear_mix pairs (type indices as KernelType::ALL).
static MultiFn mix_fn(u32 a, u32 b) {
    if (a == 4 && b == 6) return linear_mix_q4_k_q6_k;
    if (a == 5 && b == 6) return linear_mix_q5_k_q6_k;
    if (a == 4 && b == 5) return linear_mix_q4_k_q5_k;
    if (a == 4 && b == 3) return linear_mix_q4_k_q8_0;
    if (a == 5 && b == 3) return linear_mix_q5_k_q8_0;
    if (a == 6 && b == 3) return linear_mix_q6_k_q8_0;
    return nullptr;
}

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: multi_harness IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    if (!in) { perror("open input"); return 2; }
    u32 types = rd32(), cols = rd32(), n = rd32();
    u32 r[3] = {rd32(), rd32(), rd32()};
    u32 ty = types & 0xff, t2 = types >> 8 ? (types >> 8) - 1 : ty;
    if (ty > 6 || t2 > 6) return 2;
    u32 tk[3] = {ty, ty, t2};
    const u32 bytes[] = {4, 2, 2, 34, 144, 176, 210}, elems[] = {1, 1, 1, 32, 256, 256, 256};
    std::vector<std::vector<u8>> w(3);
    for (int k = 0; k < 3; ++k) {
        u64 rb = (u64)cols / elems[tk[k]] * bytes[tk[k]];
        w[k].resize(r[k] * rb + 16);  // whole 16-byte chunks past the end (see harness.cpp)
        if (r[k] && fread(w[k].data(), 1, r[k] * rb, in) != r[k] * rb) { fprintf(stderr, "short w\n"); return 2; }
    }
    std::vector<float> x((size_t)n * cols);
    if (fread(x.data(), 4, x.size(), in) != x.size()) { fprintf(stderr, "short x\n"); return 2; }
    fclose(in);
    std::vector<std::vector<float>> ym(3), yl(3);
    for (int k = 0; k < 3; ++k) {
        ym[k].assign((size_t)n * r[k] + 1, -7.0f);
        yl[k].assign((size_t)n * r[k] + 1, -7.0f);
    }
    MultiFn m[] = {linear_multi_f32, linear_multi_f16, linear_multi_bf16, linear_multi_q8_0,
                   linear_multi_q4_k, linear_multi_q5_k, linear_multi_q6_k};
    LinearFn f[] = {linear_f32, linear_f16, linear_bf16, linear_q8_0, linear_q4_k, linear_q5_k, linear_q6_k};
    MultiFn mf = t2 == ty ? m[ty] : mix_fn(ty, t2);
    if (!mf) { fprintf(stderr, "no linear_mix for types %u, %u\n", ty, t2); return 2; }
    u32 blocks = 0;
    for (int k = 0; k < 3; ++k) blocks += (r[k] + WARPS - 1) / WARPS;
    emu_launch(EmuDim{blocks, (n + TT - 1) / TT, 1}, EmuDim{32 * WARPS, 1, 1}, [&] {
        mf(w[0].data(), w[1].data(), w[2].data(), ym[0].data(), ym[1].data(), ym[2].data(),
              r[0], r[1], r[2], x.data(), cols, n);
    });
    for (int k = 0; k < 3; ++k)
        if (r[k])
            emu_launch(EmuDim{(r[k] + WARPS - 1) / WARPS, (n + TT - 1) / TT, 1}, EmuDim{32 * WARPS, 1, 1},
                       [&] { f[tk[k]](w[k].data(), x.data(), yl[k].data(), r[k], cols, n); });
    FILE* o = fopen(argv[2], "wb");
    if (!o) { perror("open output"); return 2; }
    for (auto* ys : {&ym, &yl})
        for (int k = 0; k < 3; ++k)
            if (fwrite((*ys)[k].data(), 4, (size_t)n * r[k], o) != (size_t)n * r[k]) { perror("write"); return 2; }
    fclose(o);
    return 0;
}
