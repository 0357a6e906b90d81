// Runs a packed expert batch through the unfused pass (act_round, gate_up, act_round,
// down, combine) and the fused decode pass (gate_up_fused, down_combine; src/fused.cu)
// of the same x in the emulator, the fused one twice (the second launch reuses the
// arrival counters the first left), and writes what tests/emu_fuse.rs compares.
// Input: pass_input.h (written by tests/emu/expert_io.rs `fused_pass_input`).
// Output: f32 out_unfused, out_fused, out_fused_again [n_tokens * hidden]; f32
// act_unfused, act_fused [n_pairs * ffn] (the rounded products); u32 counters left
// non-zero after the two fused passes.
#include "emu.h"
#include "../../src/kernels.cu"
#include "../../src/fused.cu"
#include <cstdio>
#include <limits>
#include "pass_input.h"

typedef void (*GateUpFn)(const u64*, const u32*, const float*, float*, u32, u32);
typedef void (*DownFn)(const u64*, const float*, const float*, float*, u32, u32);
typedef void (*GateUpFusedFn)(const u64*, const u32*, const float*, float*, u32, u32, u32*);
typedef void (*DownCombineFn)(const u64*, const u32*, const u32*, const float*, const float*, float*, u32, u32);

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: fuse_harness IN OUT\n"); return 2; }
    PassInput p;
    read_pass_input(argv[1], p);
    u32 tgu = p.tgu, tdn = p.tdn, hidden = p.hidden, ffn = p.ffn, n_tokens = p.n_tokens;
    u32 split = p.split, n_items = p.n_items, n_pairs = p.n_pairs;
    if (tgu > 6 || tdn > 6 || split > n_items) { fprintf(stderr, "bad type or split\n"); return 2; }
    GateUpFn gu[] = {gate_up_f32, gate_up_f16, gate_up_bf16, gate_up_q8_0, gate_up_q4_k, gate_up_q5_k, gate_up_q6_k};
    DownFn dn[] = {down_f32, down_f16, down_bf16, down_q8_0, down_q4_k, down_q5_k, down_q6_k};
#define FUSED_ROW(n) {gate_up_fused_##n##_bf16, gate_up_fused_##n##_q8_0, gate_up_fused_##n##_q8_k}
    GateUpFusedFn guf[7][3] = {FUSED_ROW(f32), FUSED_ROW(f16), FUSED_ROW(bf16), FUSED_ROW(q8_0), FUSED_ROW(q4_k), FUSED_ROW(q5_k), FUSED_ROW(q6_k)};
    DownCombineFn dc[] = {down_combine_f32, down_combine_f16, down_combine_bf16, down_combine_q8_0, down_combine_q4_k, down_combine_q5_k, down_combine_q6_k};
    // KernelType::act_format of each type.
    const u32 fmt[] = {0, 0, 1, 2, 3, 3, 3}, blk[] = {1, 1, 32, 32, 256, 256, 256};
    if (fmt[tgu])
        emu_launch(EmuDim{hidden / blk[tgu], n_tokens, 1}, EmuDim{32, 1, 1},
                   [&] { act_round(p.x.data(), hidden, fmt[tgu]); });
    const u32 gu_rows = WARPS * RPW_GU, dn_rows = WARPS * RPW_DN;  // per block, as src/gpu.rs
    const u32 gu_grid = (ffn + gu_rows - 1) / gu_rows;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    size_t n_out = (size_t)n_tokens * hidden, n_act = (size_t)n_pairs * ffn;
    // Unfused.
    std::vector<float> act(n_act + 1, nan), y((size_t)n_pairs * hidden + 1, nan), out(n_out, -7.0f);
    emu_launch(EmuDim{gu_grid, n_items, 1}, EmuDim{32 * WARPS, 1, 1},
               [&] { gu[tgu](p.items, p.rows, p.x.data(), act.data(), hidden, ffn); });
    if (fmt[tdn])
        emu_launch(EmuDim{ffn / blk[tdn], n_pairs, 1}, EmuDim{32, 1, 1},
                   [&] { act_round(act.data(), ffn, fmt[tdn]); });
    emu_launch(EmuDim{(hidden + dn_rows - 1) / dn_rows, n_items, 1}, EmuDim{32 * WARPS, 1, 1},
               [&] { dn[tdn](p.items, p.wts, act.data(), y.data(), hidden, ffn); });
    emu_launch(EmuDim{(hidden + 127) / 128, n_tokens, 1}, EmuDim{128, 1, 1},
               [&] { combine(p.ts, p.tp, y.data(), out.data(), hidden); });
    // Fused, twice; the counters start zeroed once (as the backend allocates them).
    std::vector<u32> cnt((size_t)n_items * (ffn / 32) + 1, 0);
    std::vector<float> outs[2], act_f;
    for (int pass = 0; pass < 2; ++pass) {
        std::vector<float> a(n_act + 1, nan), o(n_out, -7.0f);
        for (auto [lo, hi] : {std::pair<u32, u32>{0, split}, {split, n_items}}) {
            if (lo == hi) continue;
            emu_launch(EmuDim{gu_grid, hi - lo, 1}, EmuDim{32 * WARPS, 1, 1}, [&] {
                // Products of f32/f16 down weights are not rounded: the plain gate_up.
                if (fmt[tdn]) guf[tgu][fmt[tdn] - 1](p.items + 4 * lo, p.rows, p.x.data(), a.data(), hidden, ffn, cnt.data());
                else gu[tgu](p.items + 4 * lo, p.rows, p.x.data(), a.data(), hidden, ffn);
            });
        }
        emu_launch(EmuDim{hidden, n_tokens, 1}, EmuDim{32 * WARPS, 1, 1},
                   [&] { dc[tdn](p.td, p.ts, p.tp, p.wts, a.data(), o.data(), hidden, ffn); });
        outs[pass] = o;
        if (pass == 0) act_f = a;
    }
    u32 nonzero = 0;
    for (u32 c : cnt) nonzero += c != 0;
    FILE* o = fopen(argv[2], "wb");
    bool ok = o && fwrite(out.data(), 4, n_out, o) == n_out &&
              fwrite(outs[0].data(), 4, n_out, o) == n_out &&
              fwrite(outs[1].data(), 4, n_out, o) == n_out &&
              fwrite(act.data(), 4, n_act, o) == n_act &&
              fwrite(act_f.data(), 4, n_act, o) == n_act && fwrite(&nonzero, 4, 1, o) == 1;
    if (!ok) { perror("write output"); return 2; }
    fclose(o);
    return 0;
}
