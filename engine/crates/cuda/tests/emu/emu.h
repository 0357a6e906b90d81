// Runs CUDA kernels written for src/kernels.cu on the host: every CUDA thread of a block
// is a host thread; warp shuffles go through a per-warp exchange with a 32-thread barrier.
// Only what the kernels use is emulated; blocks run one after another, in grid order
// (shared memory as function-local statics, see SHARED; the block barrier as
// SYNCTHREADS / emu_syncthreads).
#pragma once
#define HMOE_EMU 1
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct EmuDim { u32 x = 0, y = 0, z = 0; };
thread_local EmuDim threadIdx, blockIdx;
static EmuDim blockDim, gridDim;

// Two exchange buffers used in turn: one barrier per shuffle. A lane can only write a
// buffer again two shuffles later, after the barrier of the shuffle in between, which every
// lane reaches only once it has read this one.
struct EmuWarp {
    std::barrier<> bar{32};
    float v[2][32];
};
thread_local EmuWarp* emu_warp = nullptr;
thread_local std::barrier<>* emu_block = nullptr;  // the block's threads (__syncthreads)
thread_local u32 emu_phase = 0;

static inline float emu_shfl_xor(float v, int m) {
    u32 lane = threadIdx.x & 31;
    float* buf = emu_warp->v[emu_phase];
    emu_phase ^= 1;
    buf[lane] = v;
    emu_warp->bar.arrive_and_wait();
    return buf[lane ^ (u32)m];
}

static inline float emu_as_float(u32 u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

static inline u32 emu_as_uint(float f) {
    u32 u;
    std::memcpy(&u, &f, 4);
    return u;
}

// CUDA's __byte_perm (selector nibbles 0-7; the sign-replicate bit is not used by the
// kernels) and __funnelshift_r (shift taken modulo 32).
static inline u32 emu_prmt(u32 a, u32 b, u32 s) {
    u64 v = ((u64)b << 32) | a;
    u32 r = 0;
    for (u32 i = 0; i < 4; ++i) r |= (u32)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
    return r;
}
static inline u32 emu_fshr(u32 lo, u32 hi, u32 s) { return (u32)((((u64)hi << 32) | lo) >> (s & 31u)); }
// CUDA's __dp4a(int, int, int): c plus the dot of the four signed bytes of a and b.
static inline int __dp4a(int a, int b, int c) {
    for (int k = 0; k < 4; ++k) c += (int)(i8)(u8)((u32)a >> (8 * k)) * (int)(i8)(u8)((u32)b >> (8 * k));
    return c;
}

// Loads with the alignment the device needs checked, so a layout the GPU would fault on
// fails here too (the kernels use these instead of pointer casts).
static inline void emu_align(const void* p, uintptr_t a) {
    if ((uintptr_t)p % a) {
        fprintf(stderr, "misaligned %zu-byte load at %p\n", (size_t)a, p);
        abort();
    }
}
// Shared memory: the emulator runs one block at a time, so a function-local static is the
// block's shared array (the kernels give each warp its own part of it). cp.async copies
// at once; __syncwarp is the warp's barrier.
#define SHARED static
static inline void cp_async16(void* s, const void* g) {
    emu_align(s, 16);
    emu_align(g, 16);
    std::memcpy(s, g, 16);
}
static inline void cp_commit() {}
template <int N> static inline void cp_wait() {}
#define SYNCWARP() emu_warp->bar.arrive_and_wait()
#define SYNCTHREADS() emu_block->arrive_and_wait()
// Blocks run one at a time, so the fused pass's "last block to arrive" is always the
// block of its counter's highest index; the fence and the atomic keep the CUDA code's
// shape (and order the host threads).
#define THREADFENCE() std::atomic_thread_fence(std::memory_order_seq_cst)
#define ATOMIC_ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define LD_CG(p) (*(p))
#define NO_UNROLL

static inline u32 ld16(const u8* p) { emu_align(p, 2); u16 v; std::memcpy(&v, p, 2); return v; }
static inline u32 ld32(const u8* p) { emu_align(p, 4); u32 v; std::memcpy(&v, p, 4); return v; }
static inline void ld2x32(const u8* p, u32* o) { emu_align(p, 8); std::memcpy(o, p, 8); }
static inline void ldf4(const float* p, float* o) { emu_align(p, 16); std::memcpy(o, p, 16); }
static inline void ld4x32(const u8* p, u32* o) { emu_align(p, 16); std::memcpy(o, p, 16); }

#define DEV inline
#define KERNEL extern "C"
#define SHFL_XOR(v, m) emu_shfl_xor((v), (m))
#define AS_FLOAT(u) emu_as_float(u)
#define AS_UINT(f) emu_as_uint(f)
#define PRMT(a, b, s) emu_prmt((a), (b), (s))
#define FSHR(lo, hi, s) emu_fshr((lo), (hi), (s))
// expf comes from <math.h> (via <cmath>).

// The block barrier (__syncthreads): every thread of the block, the same barrier that
// emu_launch uses between blocks (so a kernel must reach it uniformly, as on the device).
thread_local std::barrier<>* emu_block_bar = nullptr;
static inline void emu_syncthreads() { emu_block_bar->arrive_and_wait(); }

// Launches `f` over grid x block (block.x must be a multiple of 32): block.x host threads
// walk the blocks together, with a barrier between blocks (which also makes the warp
// exchanges reusable); the same barrier is the blocks' __syncthreads.
template <class F> void emu_launch(EmuDim grid, EmuDim block, F f) {
    gridDim = grid;
    blockDim = block;
    std::vector<std::unique_ptr<EmuWarp>> warps;
    for (u32 w = 0; w < block.x / 32; ++w) warps.emplace_back(new EmuWarp());
    std::barrier<> all((std::ptrdiff_t)block.x);
    std::vector<std::thread> th;
    for (u32 t = 0; t < block.x; ++t)
        th.emplace_back([&, t] {
            threadIdx = EmuDim{t, 0, 0};
            emu_warp = warps[t / 32].get();
            emu_block = &all;
            emu_phase = 0;
            emu_block_bar = &all;
            for (u32 bz = 0; bz < (grid.z ? grid.z : 1); ++bz)
                for (u32 by = 0; by < grid.y; ++by)
                    for (u32 bx = 0; bx < grid.x; ++bx) {
                        blockIdx = EmuDim{bx, by, bz};
                        f();
                        all.arrive_and_wait();
                    }
        });
    for (auto& x : th) x.join();
}

// mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 with C = c in every element, as the warp collective it
// is on the device: every lane publishes its A (4 words) and B (2 words) fragment registers
// in the PTX ISA's layout, the warp meets at its barrier, each lane computes its own 4
// D elements from the other lanes' registers, and the warp meets again before the
// exchange is reused. g = lane / 4, t = lane % 4: A regs A[g][4t..], A[g+8][4t..],
// A[g][16+4t..], A[g+8][16+4t..]; B regs B[4t..][g], B[16+4t..][g]; D (g, 2t),
// (g, 2t+1), (g+8, 2t), (g+8, 2t+1). Blocks run one at a time: one exchange per warp.
struct EmuMma {
    u32 a[32][4];
    u32 b[32][2];
};
static EmuMma emu_mma_x[32];

static inline int emu_s8(u32 w, u32 k) { return (int)(signed char)(u8)(w >> (8 * (k & 3))); }

static inline void emu_mma_s8(const u32 (&a)[4], const u32 (&b)[2], int c, int (&d)[4]) {
    u32 lane = threadIdx.x & 31;
    EmuMma& x = emu_mma_x[threadIdx.x >> 5];
    for (u32 i = 0; i < 4; ++i) x.a[lane][i] = a[i];
    for (u32 i = 0; i < 2; ++i) x.b[lane][i] = b[i];
    emu_warp->bar.arrive_and_wait();
    u32 g = lane >> 2, t = lane & 3;
    for (u32 i = 0; i < 4; ++i) {
        u32 row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        int s = c;
        for (u32 k = 0; k < 32; ++k) {
            // A[row][k]: lane 4 (row % 8) + (k % 16) / 4, reg (row >= 8) + 2 (k >= 16).
            u32 aw = x.a[4 * (row & 7) + ((k & 15) >> 2)][(row >> 3) + 2 * (k >> 4)];
            // B[k][col]: lane 4 col + (k % 16) / 4, reg (k >= 16).
            u32 bw = x.b[4 * col + ((k & 15) >> 2)][k >> 4];
            s += emu_s8(aw, k) * emu_s8(bw, k);
        }
        d[i] = s;
    }
    emu_warp->bar.arrive_and_wait();
}
