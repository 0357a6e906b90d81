// Runs rms_norm_rows (src/norm.cu) in the emulator. Input (little-endian u32 unless noted):
//   n_rows cols | f32 eps | f32 x[n_rows*cols] | f32 w[cols]  -> f32 y[n_rows*cols]
#include "emu.h"
#include <algorithm>
#include "../../src/kernels.cu"
#include "../../src/dense.cu"
#include "../../src/attend.cu"
#include "../../src/norm.cu"
#include <cstdio>

static FILE* in;
static u32 rd32() { u32 v = 0; if (fread(&v, 4, 1, in) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }
static std::vector<float> rdv(size_t n) {
    std::vector<float> v(n);
    if (n && fread(v.data(), 4, n, in) != n) { fprintf(stderr, "short array\n"); exit(2); }
    return v;
}

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: norm_harness IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    if (!in) { perror("open input"); return 2; }
    u32 n_rows = rd32(), cols = rd32();
    u32 e = rd32();
    float eps;
    memcpy(&eps, &e, 4);
    auto x = rdv((size_t)n_rows * cols);
    auto w = rdv(cols);
    fclose(in);
    std::vector<float> y(x.size(), -7.0f);
    emu_launch(EmuDim{(n_rows + WARPS - 1) / WARPS, 1, 1}, EmuDim{32 * WARPS, 1, 1},
               [&] { rms_norm_rows(x.data(), w.data(), y.data(), n_rows, cols, eps); });
    // In place, as the dense path runs the per-head norms.
    std::vector<float> z = x;
    emu_launch(EmuDim{(n_rows + WARPS - 1) / WARPS, 1, 1}, EmuDim{32 * WARPS, 1, 1},
               [&] { rms_norm_rows(z.data(), w.data(), z.data(), n_rows, cols, eps); });
    y.insert(y.end(), z.begin(), z.end());
    FILE* o = fopen(argv[2], "wb");
    if (!o || fwrite(y.data(), 4, y.size(), o) != y.size()) { perror("write output"); return 2; }
    fclose(o);
    return 0;
}
