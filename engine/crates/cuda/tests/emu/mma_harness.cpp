// The int8 mma GEMM kernels (src/gemm_mma.cu) beside the f32 tiled ones (src/gemm.cu) in
// the emulator, on the same inputs (tests/emu_mma.rs). Build with -DGEMM_MIN_TOKENS=1:
// every item is tiled (no row kernels run here).
// Input (little-endian u32 unless said): op.
// op 0, linear: type, rows, cols, n, n_weight_bytes; weight bytes; f32 x[n][cols]. Rounds
// x with the type's act_round format, then writes f32 x_rounded[n][cols],
// y_tiled[n][rows], y_mma[n][rows].
// op 1, experts: tests/emu/harness.cpp's input. Writes act_tiled and act_mma
// ([n_pairs][ffn], gate_up of the rounded x, before rounding), y_tiled and y_mma
// ([n_pairs][hidden], down of act_tiled rounded: the same input for both), and out_mma
// ([n_tokens][hidden], the whole pass with the mma kernels: its own act rounded, combine).
// A type the mma kernels do not cover takes the f32 tiled kernel in the mma pass (as
// src/gpu/gemm.rs falls back).
#include "emu.h"
#include "../../src/kernels.cu"
#include "../../src/gemm.cu"
#include "../../src/gemm_mma.cu"
#include <algorithm>
#include <cstdio>

static u32 rd32(FILE* f) { u32 v = 0; if (fread(&v, 4, 1, f) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }
static void rd(FILE* f, void* p, size_t n) { if (fread(p, 1, n, f) != n) { fprintf(stderr, "short input\n"); exit(2); } }
static void wr(FILE* o, const std::vector<float>& v, size_t n) {
    if (fwrite(v.data(), 4, n, o) != n) { perror("write output"); exit(2); }
}

typedef void (*GateUpFn)(const u64*, const u32*, const float*, float*, u32, u32);
typedef void (*DownFn)(const u64*, const float*, const float*, float*, u32, u32);
typedef void (*LinFn)(const u8*, const float*, float*, u32, u32, u32);

static const u32 FMT[] = {0, 0, 1, 2, 3, 3, 3}, BLK[] = {1, 1, 32, 32, 256, 256, 256};
static GateUpFn GGU[] = {gemm_gate_up_f32, gemm_gate_up_f16, gemm_gate_up_bf16, gemm_gate_up_q8_0, gemm_gate_up_q4_k, gemm_gate_up_q5_k, gemm_gate_up_q6_k};
static DownFn GDN[] = {gemm_down_f32, gemm_down_f16, gemm_down_bf16, gemm_down_q8_0, gemm_down_q4_k, gemm_down_q5_k, gemm_down_q6_k};
static LinFn GLIN[] = {gemm_linear_f32, gemm_linear_f16, gemm_linear_bf16, gemm_linear_q8_0, gemm_linear_q4_k, gemm_linear_q5_k, gemm_linear_q6_k};
static GateUpFn MGU[] = {nullptr, nullptr, nullptr, mma_gate_up_q8_0, mma_gate_up_q4_k, nullptr, mma_gate_up_q6_k};
static DownFn MDN[] = {nullptr, nullptr, nullptr, mma_down_q8_0, mma_down_q4_k, nullptr, mma_down_q6_k};
static LinFn MLIN[] = {nullptr, nullptr, nullptr, mma_linear_q8_0, mma_linear_q4_k, nullptr, mma_linear_q6_k};

static void round_rows(std::vector<float>& a, u32 rows, u32 width, u32 t) {
    if (FMT[t])
        emu_launch(EmuDim{width / BLK[t], rows, 1}, EmuDim{32, 1, 1},
                   [&] { act_round(a.data(), width, FMT[t]); });
}

static int linear(FILE* f, FILE* o) {
    u32 t = rd32(f), rows = rd32(f), cols = rd32(f), n = rd32(f), nb = rd32(f);
    if (t > 6 || !MLIN[t]) { fprintf(stderr, "type %u has no mma kernel\n", t); return 2; }
    std::vector<u8> w(nb + 16);
    rd(f, w.data(), nb);
    std::vector<float> x((size_t)n * cols), yt((size_t)n * rows, -7.0f), ym((size_t)n * rows, -7.0f);
    rd(f, x.data(), 4 * x.size());
    round_rows(x, n, cols, t);
    EmuDim grid{(rows + GEMM_BM - 1) / GEMM_BM, (n + GEMM_BN - 1) / GEMM_BN, 1};
    emu_launch(grid, EmuDim{256, 1, 1}, [&] { GLIN[t](w.data(), x.data(), yt.data(), rows, cols, n); });
    emu_launch(grid, EmuDim{256, 1, 1}, [&] { MLIN[t](w.data(), x.data(), ym.data(), rows, cols, n); });
    wr(o, x, x.size());
    wr(o, yt, yt.size());
    wr(o, ym, ym.size());
    return 0;
}

static int experts(FILE* f, FILE* o) {
    u32 tgu = rd32(f), tdn = rd32(f), hidden = rd32(f), ffn = rd32(f), n_tokens = rd32(f);
    u32 n_wbytes = rd32(f), n_bbytes = rd32(f);
    if (tgu > 6 || tdn > 6) { fprintf(stderr, "bad type\n"); return 2; }
    std::vector<u8> weights(n_wbytes + 16), batch(n_bbytes);
    rd(f, weights.data(), n_wbytes);
    rd(f, batch.data(), n_bbytes);
    u32 o_items = rd32(f), o_rows = rd32(f), o_wts = rd32(f), o_ts = rd32(f), o_tp = rd32(f);
    u32 n_items = rd32(f), n_pairs = rd32(f);
    std::vector<float> x((size_t)n_tokens * hidden);
    rd(f, x.data(), 4 * x.size());
    u64* items = (u64*)(batch.data() + o_items);
    for (u32 i = 0; i < n_items; ++i)
        for (int k = 0; k < 3; ++k) items[4 * i + k] += (u64)(uintptr_t)weights.data();
    const u32* rows = (const u32*)(batch.data() + o_rows);
    const float* wts = (const float*)(batch.data() + o_wts);
    const u32* ts = (const u32*)(batch.data() + o_ts);
    const u32* tp = (const u32*)(batch.data() + o_tp);
    u32 max_n = 0;
    for (u32 i = 0; i < n_items; ++i) max_n = std::max(max_n, (u32)(items[4 * i + 3] >> 32));
    const u32 chunks = (max_n + GEMM_BN - 1) / GEMM_BN;
    const EmuDim gu_grid{(ffn + GEMM_BM / 2 - 1) / (GEMM_BM / 2), n_items, chunks};
    const EmuDim dn_grid{(hidden + GEMM_BM - 1) / GEMM_BM, n_items, chunks};
    GateUpFn mgu = MGU[tgu] ? MGU[tgu] : GGU[tgu];
    DownFn mdn = MDN[tdn] ? MDN[tdn] : GDN[tdn];
    const size_t na = (size_t)n_pairs * ffn, ny = (size_t)n_pairs * hidden;
    std::vector<float> at(na + 1, -7.0f), am(na + 1, -7.0f), yt(ny + 1, -7.0f), ym(ny + 1, -7.0f);
    round_rows(x, n_tokens, hidden, tgu);
    emu_launch(gu_grid, EmuDim{256, 1, 1}, [&] { GGU[tgu](items, rows, x.data(), at.data(), hidden, ffn); });
    emu_launch(gu_grid, EmuDim{256, 1, 1}, [&] { mgu(items, rows, x.data(), am.data(), hidden, ffn); });
    wr(o, at, na);
    wr(o, am, na);
    round_rows(at, n_pairs, ffn, tdn);
    emu_launch(dn_grid, EmuDim{256, 1, 1}, [&] { GDN[tdn](items, wts, at.data(), yt.data(), hidden, ffn); });
    emu_launch(dn_grid, EmuDim{256, 1, 1}, [&] { mdn(items, wts, at.data(), ym.data(), hidden, ffn); });
    wr(o, yt, ny);
    wr(o, ym, ny);
    // The whole mma pass: its own products rounded, down, combine.
    round_rows(am, n_pairs, ffn, tdn);
    emu_launch(dn_grid, EmuDim{256, 1, 1}, [&] { mdn(items, wts, am.data(), ym.data(), hidden, ffn); });
    std::vector<float> out((size_t)n_tokens * hidden, -7.0f);
    emu_launch(EmuDim{(hidden + 127) / 128, n_tokens, 1}, EmuDim{128, 1, 1},
               [&] { combine(ts, tp, ym.data(), out.data(), hidden); });
    wr(o, out, out.size());
    return 0;
}

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: mma_harness IN OUT\n"); return 2; }
    FILE* f = fopen(argv[1], "rb");
    FILE* o = fopen(argv[2], "wb");
    if (!f || !o) { perror("open"); return 2; }
    u32 op = rd32(f);
    int rc = op == 0 ? linear(f, o) : op == 1 ? experts(f, o) : 2;
    fclose(f);
    if (fclose(o) != 0) { perror("close output"); return 2; }
    return rc;
}
