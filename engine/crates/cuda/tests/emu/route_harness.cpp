// Runs route_resident (src/route.cu) once. Input (little-endian u32): n_experts top_k
// renorm | f32 logits[n_experts] | u32 map[n_experts] (slot + 1, or 0) -> as u32 words
// (the harness writes them as they are; the test reads their bits): res[3 + 2 * top_k],
// then the index tables' items (4 u64 as 8 u32 each, top_k of them), rows[top_k],
// weights[top_k], tok_start[2], tok_pairs[top_k], tok_down (2 u32 each, top_k), seq.
// The slot arena starts at 0x100000 with slots of 0x1000 bytes, gate matrices of 0x400.
#include "emu.h"
#include <algorithm>
#include "../../src/kernels.cu"
#include "../../src/route.cu"
#include <cstdio>

static FILE* in;
static u32 rd32() { u32 v = 0; if (fread(&v, 4, 1, in) != 1) { fprintf(stderr, "short input\n"); exit(2); } return v; }

int main(int argc, char** argv) {
    if (argc != 3) { fprintf(stderr, "usage: route_harness IN OUT\n"); return 2; }
    in = fopen(argv[1], "rb");
    if (!in) { perror("open input"); return 2; }
    u32 ne = rd32(), k = rd32(), renorm = rd32();
    std::vector<float> logits(ne);
    if (fread(logits.data(), 4, ne, in) != ne) { fprintf(stderr, "short logits\n"); return 2; }
    std::vector<u32> map(ne);
    if (fread(map.data(), 4, ne, in) != ne) { fprintf(stderr, "short map\n"); return 2; }
    fclose(in);
    // The layout batch.rs gives top_k one-row items (16-byte aligned sections).
    auto al = [](u32 v) { return (v + 15) / 16 * 16; };
    u32 off_rows = al(k * 32), off_w = al(off_rows + 4 * k), off_ts = al(off_w + 4 * k);
    u32 off_tp = al(off_ts + 8), off_td = al(off_tp + 4 * k), bytes = al(off_td + 8 * k);
    std::vector<u64> meta_words(bytes / 8, 0x5a5a5a5a5a5a5a5aull);
    unsigned char* meta = (unsigned char*)meta_words.data();
    std::vector<u32> res(3 + 2 * k, 0xdeadbeefu);
    u32 seq = 41;
    emu_launch(EmuDim{1, 1, 1}, EmuDim{32, 1, 1}, [&] {
        route_resident(logits.data(), ne, k, renorm, map.data(), 0x100000, 0x1000, 0x400, meta,
                       off_rows, off_w, off_ts, off_tp, off_td, res.data(), &seq);
    });
    FILE* out = fopen(argv[2], "wb");
    if (!out) { perror("open output"); return 2; }
    fwrite(res.data(), 4, res.size(), out);
    fwrite(meta, 1, k * 32, out);
    fwrite(meta + off_rows, 4, k, out);
    fwrite(meta + off_w, 4, k, out);
    fwrite(meta + off_ts, 4, 2, out);
    fwrite(meta + off_tp, 4, k, out);
    fwrite(meta + off_td, 8, k, out);
    fwrite(&seq, 4, 1, out);
    fclose(out);
    return 0;
}
