// Runs a packed expert batch through the f32 fused decode pass (act_round, gate_up_fused,
// down_combine; src/fused.cu) and the int8 pass (gate_up_q8, down_combine_q8;
// src/fused_q8.cu) in the emulator, and writes what tests/emu_fused_q8.rs compares. The
// int8 pass runs twice on the same arrival counters: on x as given (it quantises x
// itself) and on x already rounded by act_round (as before gpu.rs skips that launch).
// Input: pass_input.h (written by tests/emu/expert_io.rs `fused_pass_input`).
// Output: f32 out_fused, out_q8, out_q8_rounded_x [n_tokens * hidden]; f32
// act_fused, act_q8 [n_pairs * ffn] (the rounded products); u32 counters left non-zero.
#include "emu.h"
#include "../../src/kernels.cu"
#include "../../src/fused.cu"
#include "../../src/fused_q8.cu"
#include <cstdio>
#include <limits>
#include "pass_input.h"

typedef void (*GateUpFusedFn)(const u64*, const u32*, const float*, float*, u32, u32, u32*);
typedef void (*DownCombineFn)(const u64*, const u32*, const u32*, const float*, const float*, float*, u32, u32);
typedef void (*GateUpQ8Fn)(const u64*, const u32*, const float*, float*, i8*, float*, u32, u32, u32*);
typedef void (*DownCombineQ8Fn)(const u64*, const u32*, const u32*, const float*, const i8*, const float*, float*, u32, u32);

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: fused_q8_harness IN OUT\n"); return 2; }
    PassInput p;
    read_pass_input(argv[1], p);
    u32 tgu = p.tgu, tdn = p.tdn, hidden = p.hidden, ffn = p.ffn, n_tokens = p.n_tokens;
    u32 split = p.split, n_items = p.n_items, n_pairs = p.n_pairs;
    // The int8 kernels exist for Q8_0, Q4_K, Q5_K, Q6_K (type codes 3 ..= 6).
    if (tgu < 3 || tgu > 6 || tdn < 3 || tdn > 6 || split > n_items || hidden > Q8_MAX_HIDDEN) { fprintf(stderr, "bad type, split or hidden\n"); return 2; }
#define FUSED_ROW(n) {gate_up_fused_##n##_q8_0, gate_up_fused_##n##_q8_k}
    GateUpFusedFn guf[4][2] = {FUSED_ROW(q8_0), FUSED_ROW(q4_k), FUSED_ROW(q5_k), FUSED_ROW(q6_k)};
    DownCombineFn dc[] = {down_combine_q8_0, down_combine_q4_k, down_combine_q5_k, down_combine_q6_k};
#define Q8_ROW(n) {gate_up_q8_##n##_q8_0, gate_up_q8_##n##_q8_k}
    GateUpQ8Fn guq[4][2] = {Q8_ROW(q8_0), Q8_ROW(q4_k), Q8_ROW(q5_k), Q8_ROW(q6_k)};
    DownCombineQ8Fn dcq[] = {down_combine_q8_q8_0, down_combine_q8_q4_k, down_combine_q8_q5_k, down_combine_q8_q6_k};
    // KernelType::act_format of each type: Q8_0 -> Q8_0 (fmt 2, blocks of 32), k-quants ->
    // Q8_K (fmt 3, 256); column 0 / 1 of the tables above.
    auto fmt = [](u32 t) { return t == 3 ? 2u : 3u; };
    auto blk = [](u32 t) { return t == 3 ? 32u : 256u; };
    u32 g = tgu - 3, d = tdn - 3, col = fmt(tdn) - 2;
    std::vector<float> x_rounded = p.x;
    emu_launch(EmuDim{hidden / blk(tgu), n_tokens, 1}, EmuDim{32, 1, 1},
               [&] { act_round(x_rounded.data(), hidden, fmt(tgu)); });
    const u32 gu_fused_grid = (ffn + WARPS * RPW_GU - 1) / (WARPS * RPW_GU);
    const u32 gu_q8_grid = (ffn + WARPS - 1) / WARPS;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    size_t n_out = (size_t)n_tokens * hidden, n_act = (size_t)n_pairs * ffn;
    std::vector<u32> cnt((size_t)n_items * (ffn / 32) + 1, 0);
    auto splits = {std::pair<u32, u32>{0, split}, {split, n_items}};
    // The f32 fused pass on rounded x.
    std::vector<float> act_f(n_act + 1, nan), out_f(n_out, -7.0f);
    for (auto [lo, hi] : splits) {
        if (lo == hi) continue;
        emu_launch(EmuDim{gu_fused_grid, hi - lo, 1}, EmuDim{32 * WARPS, 1, 1}, [&] {
            guf[g][col](p.items + 4 * lo, p.rows, x_rounded.data(), act_f.data(), hidden, ffn, cnt.data());
        });
    }
    emu_launch(EmuDim{hidden, n_tokens, 1}, EmuDim{32 * WARPS, 1, 1},
               [&] { dc[d](p.td, p.ts, p.tp, p.wts, act_f.data(), out_f.data(), hidden, ffn); });
    // The int8 pass, twice on the same counters.
    std::vector<float> outs[2], act_q;
    const std::vector<float>* xs[2] = {&p.x, &x_rounded};
    for (int pass = 0; pass < 2; ++pass) {
        std::vector<float> a(n_act + 1, nan), o(n_out, -7.0f), ad((size_t)n_pairs * (ffn / 32) + 1, nan);
        std::vector<i8> aq(n_act + 4, 0x55);
        for (auto [lo, hi] : splits) {
            if (lo == hi) continue;
            emu_launch(EmuDim{gu_q8_grid, hi - lo, 1}, EmuDim{32 * WARPS, 1, 1}, [&] {
                guq[g][col](p.items + 4 * lo, p.rows, xs[pass]->data(), a.data(), aq.data(), ad.data(), hidden, ffn, cnt.data());
            });
        }
        emu_launch(EmuDim{(hidden + Q8_DN_ROWS - 1) / Q8_DN_ROWS, n_tokens, 1}, EmuDim{32 * WARPS, 1, 1},
                   [&] { dcq[d](p.td, p.ts, p.tp, p.wts, aq.data(), ad.data(), o.data(), hidden, ffn); });
        outs[pass] = o;
        if (pass == 0) act_q = a;
    }
    u32 nonzero = 0;
    for (u32 c : cnt) nonzero += c != 0;
    FILE* o = fopen(argv[2], "wb");
    bool ok = o && fwrite(out_f.data(), 4, n_out, o) == n_out;
    for (int pass = 0; pass < 2; ++pass) ok = ok && fwrite(outs[pass].data(), 4, n_out, o) == n_out;
    ok = ok && fwrite(act_f.data(), 4, n_act, o) == n_act && fwrite(act_q.data(), 4, n_act, o) == n_act &&
         fwrite(&nonzero, 4, 1, o) == 1;
    if (!ok) { perror("write output"); return 2; }
    fclose(o);
    return 0;
}
