// Reads a packed expert batch written by tests/emu.rs, runs the three kernels of
// src/kernels.cu in the emulator, writes the [n_tokens][hidden] output.
// Input (little-endian): u32 gate_up_type, down_type, hidden, ffn, n_tokens, n_weight_bytes,
// n_batch_bytes; weight bytes (the items' pointers are offsets into them); batch bytes
// (src/batch.rs layout); u32 section offsets items, rows, weights, tok_start, tok_pairs,
// n_items, n_pairs; f32 x[n_tokens * hidden].
#include "emu.h"
#include "../../src/kernels.cu"
#include "../../src/gemm.cu"
#include <algorithm>
#include <cstdio>

static u32 rd32(FILE* f) { u32 v = 0; if (fread(&v, 4, 1, f) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }

typedef void (*GateUpFn)(const u64*, const u32*, const float*, float*, u32, u32);
typedef void (*DownFn)(const u64*, const float*, const float*, float*, u32, u32);

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: harness IN OUT\n"); return 2; }
    FILE* f = fopen(argv[1], "rb");
    if (!f) { perror("open input"); return 2; }
    u32 tgu = rd32(f), tdn = rd32(f), hidden = rd32(f), ffn = rd32(f), n_tokens = rd32(f);
    u32 n_wbytes = rd32(f), n_bbytes = rd32(f);
    // 16 spare bytes: the async path copies whole 16-byte chunks (on the GPU, inside the
    // allocation, whose size is a multiple of 256).
    std::vector<u8> weights(n_wbytes + 16), batch(n_bbytes);
    if (fread(weights.data(), 1, n_wbytes, f) != n_wbytes || fread(batch.data(), 1, n_bbytes, f) != n_bbytes) { fprintf(stderr, "short input\n"); return 2; }
    u32 o_items = rd32(f), o_rows = rd32(f), o_wts = rd32(f), o_ts = rd32(f), o_tp = rd32(f);
    u32 n_items = rd32(f), n_pairs = rd32(f);
    std::vector<float> x((size_t)n_tokens * hidden);
    if (fread(x.data(), 4, x.size(), f) != x.size()) { fprintf(stderr, "short x\n"); return 2; }
    fclose(f);
    // Item pointers are offsets into `weights`: rebase them to host addresses.
    u64* items = (u64*)(batch.data() + o_items);
    for (u32 i = 0; i < n_items; ++i)
        for (int k = 0; k < 3; ++k) items[4 * i + k] += (u64)(uintptr_t)weights.data();
    const u32* rows = (const u32*)(batch.data() + o_rows);
    const float* wts = (const float*)(batch.data() + o_wts);
    const u32* ts = (const u32*)(batch.data() + o_ts);
    const u32* tp = (const u32*)(batch.data() + o_tp);
    std::vector<float> act((size_t)n_pairs * ffn + 1), y((size_t)n_pairs * hidden + 1), out((size_t)n_tokens * hidden, -7.0f);
    GateUpFn gu[] = {gate_up_f32, gate_up_f16, gate_up_bf16, gate_up_q8_0, gate_up_q4_k, gate_up_q5_k, gate_up_q6_k};
    DownFn dn[] = {down_f32, down_f16, down_bf16, down_q8_0, down_q4_k, down_q5_k, down_q6_k};
    if (tgu > 6 || tdn > 6) { fprintf(stderr, "bad type\n"); return 2; }
    // Activation rounding as src/gpu.rs does it (KernelType::act_format): x for gate/up,
    // the SwiGLU products for down.
    const u32 fmt[] = {0, 0, 1, 2, 3, 3, 3}, blk[] = {1, 1, 32, 32, 256, 256, 256};
    // x comes from another buffer (the dense path's hn): act_round_from, which copies
    // when the format takes no rounding (32-value blocks).
    {
        const std::vector<float> src = x;
        const u32 bx = fmt[tgu] ? blk[tgu] : 32;
        emu_launch(EmuDim{hidden / bx, n_tokens, 1}, EmuDim{32, 1, 1},
                   [&] { act_round_from(src.data(), x.data(), hidden, fmt[tgu]); });
    }
    const u32 gu_rows = WARPS * RPW_GU, dn_rows = WARPS * RPW_DN;  // per block, as src/gpu.rs
    emu_launch(EmuDim{(ffn + gu_rows - 1) / gu_rows, n_items, 1}, EmuDim{32 * WARPS, 1, 1},
               [&] { gu[tgu](items, rows, x.data(), act.data(), hidden, ffn); });
    // The tiled kernels (gemm.cu) take the items of GEMM_MIN_TOKENS tokens or more, as
    // src/gpu.rs launch_pass does: launched only when some item has that many.
    u32 max_n = 0;
    for (u32 i = 0; i < n_items; ++i) max_n = std::max(max_n, (u32)(items[4 * i + 3] >> 32));
    const u32 chunks = (max_n + GEMM_BN - 1) / GEMM_BN;
    const bool tiled = max_n >= GEMM_MIN_TOKENS;
    GateUpFn ggu[] = {gemm_gate_up_f32, gemm_gate_up_f16, gemm_gate_up_bf16, gemm_gate_up_q8_0, gemm_gate_up_q4_k, gemm_gate_up_q5_k, gemm_gate_up_q6_k};
    DownFn gdn[] = {gemm_down_f32, gemm_down_f16, gemm_down_bf16, gemm_down_q8_0, gemm_down_q4_k, gemm_down_q5_k, gemm_down_q6_k};
    if (tiled)
        emu_launch(EmuDim{(ffn + GEMM_BM / 2 - 1) / (GEMM_BM / 2), n_items, chunks}, EmuDim{256, 1, 1},
                   [&] { ggu[tgu](items, rows, x.data(), act.data(), hidden, ffn); });
    if (fmt[tdn])
        emu_launch(EmuDim{ffn / blk[tdn], n_pairs, 1}, EmuDim{32, 1, 1},
                   [&] { act_round(act.data(), ffn, fmt[tdn]); });
    emu_launch(EmuDim{(hidden + dn_rows - 1) / dn_rows, n_items, 1}, EmuDim{32 * WARPS, 1, 1},
               [&] { dn[tdn](items, wts, act.data(), y.data(), hidden, ffn); });
    if (tiled)
        emu_launch(EmuDim{(hidden + GEMM_BM - 1) / GEMM_BM, n_items, chunks}, EmuDim{256, 1, 1},
                   [&] { gdn[tdn](items, wts, act.data(), y.data(), hidden, ffn); });
    emu_launch(EmuDim{(hidden + 127) / 128, n_tokens, 1}, EmuDim{128, 1, 1},
               [&] { combine(ts, tp, y.data(), out.data(), hidden); });
    FILE* o = fopen(argv[2], "wb");
    if (!o || fwrite(out.data(), 4, out.size(), o) != out.size()) { perror("write output"); return 2; }
    fclose(o);
    return 0;
}
