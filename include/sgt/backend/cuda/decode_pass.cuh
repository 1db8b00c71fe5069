// sgt/backend/cuda/decode_pass.cuh: a run of a decode step's attention passes (backend/cpu/decode.hpp's
// decode_passes) as one kernel of a thread-block cluster, for one sequence and a few heads.
//
// Why: at batch 1 a loop pass of SGT over |S| = 2 heads of gpt2 moves about 1 MB (0.8 MB of weights, its cache
// slot) but is three dependent steps: q, k, v from the residual; attention over the slot, which holds the new
// key; the output product into the residual, which the next pass normalises. As kernels (the few-row products and
// decode attention) each step boundary costs some microseconds whatever it moves, so a step's 9 loop passes took
// 30-38% of it for 3% of its FLOPs (docs/BENCHMARKS.md). Here a cluster of up to 16 blocks runs every pass of
// the run for its sequences, with the cluster's hardware barrier between the steps:
//   q, k, v    every block normalises the rows of x (rmsnorm_forward's rounding, its sums in another order); the
//              cluster's warps take the units of the few-row product (decode_products.cuh: rows j and j + HD/2 of
//              one head's q, k or v), rotate q and k, write k and v into the pass's slot, and q into every block's
//              shared memory, k and v into the block whose share of the keys holds the new one;
//   attention  each (sequence, head) is split along its keys over the blocks, and a block's share over a few of
//              its warps; a warp keeps an online softmax over its keys (8 lanes a key, 4 keys at a time, in base
//              2) and the block merges its warps into one partial (max, sum, unnormalised output), which it
//              writes into every block's shared memory;
//   output     every block merges the cluster's partials, rounds as decode_attention does, applies the pass's
//              gains as head_gain_forward does, and adds its share of the rows of W_O · o to x, writing the new
//              rows into every block's shared memory for the next pass (into x after the last).
// So the results are the composition's but for the order of the sums. Data moves between blocks only by writes
// into the readers' shared memory before a barrier, so no step waits on a load from L2 but those of the keys,
// and the first of those are issued while the barrier before attention completes. The weights of the run go
// into the blocks' shared memory once, with the rotations and the norm's weights, while the kernel before this one
// ends (a programmatic dependent launch, backend.cuh), and the older keys of every slot into L2. The last pass
// ends without a barrier. On an H200 at gpt2 size this took SGT's batch-1 decode overhead over vanilla from +31% /
// +37% (composed) to +24.5% / +21.9% (contexts 1024 / 4096), a pass from about 12 us to 9 us; it is bound by the
// latency of its instruction chains and barriers, not by bytes. It took up to 12 sequences (a cluster per two)
// until the composition's q/k/v went to the tensor cores (decode_products.cuh): then 2 sequences were 2-5% faster
// composed and 4 to 12 level, and the kernel for one sequence a cluster (pass_max_rows = 1) made batch-1 steps 2-3%
// faster than the one for two, so it takes one sequence (docs/BENCHMARKS.md, 2026-12-06). The code keeps the
// sequences of a cluster (pass_max_rows) and the clusters of a launch general.
#pragma once

#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>

#include "sgt/backend/cuda/backend.cuh"
#include "sgt/backend/cuda/rope.cuh"  // rotate_pair

namespace sgt {

namespace detail {

constexpr int pass_threads = 512, pass_warps = pass_threads / 32;
constexpr int pass_max_slots = 8;    // passes per launch (a longer run takes several)
constexpr int pass_max_rows = 1;     // sequences a cluster takes (more take more clusters)
constexpr int pass_max_batch = 1;    // sequences a launch takes: since the composition's q/k/v took the tensor
                                     // cores (decode_products.cuh), 2 to 12 were as fast or faster composed
constexpr int pass_max_width = 256;  // n·HD: the heads a pass computes, times HD

template <class T>
struct pass_args {
    T* x;  // (B, C) residual stream, updated in place
    const T* norm;
    const T* w_qkv;  // (3·n·HD, C)
    const T* w_o;    // (C, n·HD)
    const accum_t<T>* cos_table;
    const accum_t<T>* sin_table;
    const std::int32_t* start;  // (B) the new token's position
    T* keys[pass_max_slots];
    T* values[pass_max_slots];
    const T* gains[pass_max_slots];
    int slots, B, C, n, HD, ctx;
    double eps;
};

// Who computes what, the same on the host (to size shared memory) and in the kernel. q, k, v: `units` of two rows
// each (rows j and j + HD/2 of one head's q, k or v, the pair RoPE rotates), unit u to the cluster's warp u mod
// warps, so a warp holds up to `per_warp` of them. The output product: `sub` lanes a row of W_O, `rows` rows a warp
// at once, the cluster's warps cover `round` rows together, `rounds` times.
struct pass_plan {
    int warps, units, per_warp, sub, rows, round, rounds;
    __host__ __device__ pass_plan(int C, int n, int HD, int blocks, int W) {
        warps = blocks * pass_warps;
        units = 3 * n * (HD / 2);
        per_warp = (units + warps - 1) / warps;
        sub = 1;
        while (sub < n * HD / W && sub < 32) sub *= 2;
        rows = 32 / sub;
        round = warps * rows;
        rounds = (C + round - 1) / round;
    }
    // Unit u: section sec (0 q, 1 k, 2 v), head i, rows j and j + HD/2.
    struct unit {
        int sec, i, j;
    };
    __host__ __device__ static unit unit_of(int u, int n, int half) { return {u / (n * half), (u / half) % n, u % half}; }
    // A warp's weights, in elements: its units' rows of W_QKV, then its rows of W_O.
    __host__ __device__ std::size_t warp_weights(int C, int nhd) const {
        return std::size_t(per_warp) * 2 * C + std::size_t(rounds) * rows * nhd;
    }
};

// A block's shared memory, 16-byte aligned parts: its warps' weights (pass_plan) and, in T, the residual rows xr
// (B, C), which the blocks that own each row write into every block after the output product, the normed rows xs,
// the RMSNorm weights nw (C), the queries qs (B, n·HD), which the warps that compute them write into every block,
// the attention output os, and the new keys and values kv (B, 2, n·HD), written into the block whose share of the
// keys holds them; in accum_t, every block's partial softmax per (sequence, head), (blocks, B·n, HD + 2), each
// written by its block, this block's warps' partials (B·n·G, HD + 2), the warps' sums of squares (warps,
// pass_max_rows), the warps' units' rotations (warps, per_warp, pass_max_rows, 2) and the passes' gains
// (pass_max_slots, n).
template <class T>
struct pass_smem {
    std::size_t xr, xs, nw, qs, os, kv, parts, wpart, red, rot, gain, total;
    __host__ __device__ static std::size_t up16(std::size_t b) { return (b + 15) / 16 * 16; }
    __host__ __device__ pass_smem(int B, int C, int n, int HD, int blocks) {
        using A = accum_t<T>;
        const pass_plan plan(C, n, HD, blocks, pack_width<T>);
        const std::size_t nhd = std::size_t(n) * HD, pairs = std::size_t(B) * n;
        xr = up16(pass_warps * plan.warp_weights(C, int(nhd)) * sizeof(T));
        xs = xr + up16(std::size_t(B) * C * sizeof(T));
        nw = xs + up16(std::size_t(B) * C * sizeof(T));
        qs = nw + up16(std::size_t(C) * sizeof(T));
        os = qs + up16(std::size_t(B) * nhd * sizeof(T));
        kv = os + up16(std::size_t(B) * nhd * sizeof(T));
        parts = kv + up16(std::size_t(B) * 2 * nhd * sizeof(T));
        wpart = parts + up16(std::size_t(blocks) * pairs * (HD + 2) * sizeof(A));
        red = wpart + up16((pairs > pass_warps ? pairs : pass_warps) * (HD + 2) * sizeof(A));
        rot = red + up16(std::size_t(pass_warps) * pass_max_rows * sizeof(A));
        gain = rot + up16(std::size_t(pass_warps) * plan.per_warp * pass_max_rows * 2 * sizeof(A));
        total = gain + up16(std::size_t(pass_max_slots) * n * sizeof(A));
    }
};

// A pack loaded past L1 (ld.global.cg): for data that another block of the cluster wrote in this kernel.
template <class P>
__device__ inline P load_cg(const P* ptr) {
    static_assert(sizeof(P) == 16 || sizeof(P) == 8 || sizeof(P) == 4 || sizeof(P) == 2);
    P out;
    if constexpr (sizeof(P) == 16) {
        const int4 v = __ldcg(reinterpret_cast<const int4*>(ptr));
        std::memcpy(&out, &v, 16);
    } else if constexpr (sizeof(P) == 8) {
        const int2 v = __ldcg(reinterpret_cast<const int2*>(ptr));
        std::memcpy(&out, &v, 8);
    } else if constexpr (sizeof(P) == 4) {
        const int v = __ldcg(reinterpret_cast<const int*>(ptr));
        std::memcpy(&out, &v, 4);
    } else {
        const unsigned short v = __ldcg(reinterpret_cast<const unsigned short*>(ptr));
        std::memcpy(&out, &v, 2);
    }
    return out;
}

// The cluster's barrier in two halves: arrive (this thread's writes, distributed shared memory included, become
// visible to the cluster) and wait (the cluster's writes before its arrivals are visible here). Work between
// them must not read what the barrier orders. Not the .aligned forms: a warp may reach them diverged.
__device__ inline void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release;" ::: "memory");
#endif
}
__device__ inline void cluster_arrive_relaxed() {  // orders nothing: only says that this block runs
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
#endif
}
__device__ inline void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.wait.acquire;" ::: "memory");
#endif
}

// 2^x: the softmax here works in base 2, its scores scaled by log2(e) with 1/√HD.
__device__ inline float exp2_of(float x) { return exp2f(x); }
__device__ inline double exp2_of(double x) { return exp2(x); }

// Merges (m2, l2, a2) into (m, l, a), partials of one online softmax in base 2 (m = −∞: empty).
template <class A, int D>
__device__ inline void merge_partial(A& m, A& l, A (&a)[D], A m2, A l2, const A (&a2)[D]) {
    const A mn = max(m, m2);
    const A f1 = m == -INFINITY ? A(0) : exp2_of(m - mn), f2 = m2 == -INFINITY ? A(0) : exp2_of(m2 - mn);
    l = l * f1 + l2 * f2;
#pragma unroll
    for (int d = 0; d < D; ++d) a[d] = a[d] * f1 + a2[d] * f2;
    m = mn;
}

// The warps of a block that take one (sequence, head) in attention, G: where there are fewer pairs than warps, as
// many as take `trip` keys each of the block's share of the longest sequence's, at most pass_warps / pairs (warp w
// takes pair w / G); else one (warp w takes pairs w, w + pass_warps, ...). Fewer warps a pair, fewer to merge.
__device__ inline int pass_group(int pairs, int per_block, int trip) {
    if (pairs >= pass_warps) return 1;
    const int want = (per_block + trip - 1) / trip;
    return want < 1 ? 1 : want < pass_warps / pairs ? want : pass_warps / pairs;
}

// Keys [k0, k1) of len that part `sub` of `parts` of block `rank`'s share (of `blocks`) holds.
__device__ inline void pass_key_range(int len, int rank, int blocks, int sub, int parts, int& k0, int& k1) {
    const int per_block = (len + blocks - 1) / blocks;
    const int b0 = min(len, rank * per_block), b1 = min(len, b0 + per_block);
    const int per = (b1 - b0 + parts - 1) / parts;
    k0 = min(b1, b0 + sub * per);
    k1 = min(b1, k0 + per);
}

// DL: a lane's dimensions of a head row in attention (8 lanes a key: HD = 8·DL).
template <class T, int DL>
__global__ void __launch_bounds__(pass_threads, 1) decode_pass_kernel(const pass_args<T> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    __trap();  // clusters need sm_90: pass_cluster_size finds this build and decode_passes never launches it
#else
    namespace cg = cooperative_groups;
    using A = accum_t<T>;
    constexpr int W = pack_width<T>;         // products: 16-byte packs
    constexpr int KW = DL < W ? DL : W;      // attention: a lane's DL dimensions in packs of KW
    constexpr int NK = DL / KW;
    using P = pack<T, W>;
    using KP = pack<T, KW>;
    constexpr int U = DL >= 16 ? 2 : 4;      // keys a group of 8 lanes takes at once (registers: at most 32 packs)
    cg::cluster_group cluster = cg::this_cluster();
    const int rank = int(cluster.block_rank()), warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    const int blocks = int(cluster.num_blocks()), gw = rank * pass_warps + warp;
    // This cluster's sequences: rows [row0, row0 + B) of x, of the positions and of every slot; below, a row is
    // one of these.
    const int row0 = int(blockIdx.x) / blocks * pass_max_rows;
    const int B = min(pass_max_rows, p.B - row0), C = p.C, n = p.n, HD = p.HD, half = HD / 2, nhd = n * HD;
    const int pairs = B * n, c_packs = C / W, o_packs = nhd / W;
    T* const xg = p.x + std::int64_t(row0) * C;  // x in global memory
    const std::int64_t slot_at = std::int64_t(row0) * n * p.ctx * HD;
    const pass_plan plan(C, n, HD, blocks, W);
    int pos[pass_max_rows] = {}, longest = 0;  // the new tokens' positions (the host wrote them before the step)
#pragma unroll
    for (int r = 0; r < pass_max_rows; ++r)
        if (r < B) pos[r] = p.start[row0 + r], longest = max(longest, pos[r] + 1);
    const int G = pass_group(pairs, (longest + blocks - 1) / blocks, 4 * U);
    extern __shared__ __align__(16) unsigned char pass_smem_raw[];
    const pass_smem<T> lay(min(pass_max_rows, p.B), C, n, HD, blocks);  // as the host sized it
    T* const wq = reinterpret_cast<T*>(pass_smem_raw) + std::size_t(warp) * plan.warp_weights(C, nhd);
    T* const wo = wq + std::size_t(plan.per_warp) * 2 * C;
    T* xr = reinterpret_cast<T*>(pass_smem_raw + lay.xr);
    T* kv = reinterpret_cast<T*>(pass_smem_raw + lay.kv);
    A* rot = reinterpret_cast<A*>(pass_smem_raw + lay.rot) + std::size_t(warp) * plan.per_warp * pass_max_rows * 2;
    A* gain = reinterpret_cast<A*>(pass_smem_raw + lay.gain);
    T* xs = reinterpret_cast<T*>(pass_smem_raw + lay.xs);
    T* nw = reinterpret_cast<T*>(pass_smem_raw + lay.nw);
    T* qs = reinterpret_cast<T*>(pass_smem_raw + lay.qs);
    T* os = reinterpret_cast<T*>(pass_smem_raw + lay.os);
    A* parts = reinterpret_cast<A*>(pass_smem_raw + lay.parts);
    A* wpart = reinterpret_cast<A*>(pass_smem_raw + lay.wpart);
    A* red = reinterpret_cast<A*>(pass_smem_raw + lay.red);
    const int wo_sub = lane % plan.sub, wo_row = lane / plan.sub;  // the output product: this lane's packs and row

    // Before the kernel before this one has finished (it writes x and nothing else this reads but the slots' new
    // keys; the host wrote the positions before the step): this warp's weights, the RMSNorm weights and the
    // rotations at the new positions into shared memory, once for all passes, and every slot's older keys and
    // values into L2. Each lane copies exactly the packs it reads later, so its own wait orders them.
    if (int(threadIdx.x) < c_packs)  // thread t's pack of the RMSNorm weights, a group of its own
        async_copy16(nw + std::size_t(threadIdx.x) * W, p.norm + std::size_t(threadIdx.x) * W);
    asm volatile("cp.async.commit_group;" ::: "memory");
    for (int x = 0; x < plan.per_warp && gw + x * plan.warps < plan.units; ++x) {
        const auto [sec, i, j] = pass_plan::unit_of(gw + x * plan.warps, n, half);
        const T* r0 = p.w_qkv + (std::int64_t(sec * n + i) * HD + j) * C;  // the second row is half·C further
        for (int c = lane; c < c_packs; c += 32) {
            async_copy16(wq + (std::size_t(x) * 2 * C + std::size_t(c) * W), r0 + std::int64_t(c) * W);
            async_copy16(wq + (std::size_t(x) * 2 * C + C + std::size_t(c) * W), r0 + (std::int64_t(half) * C + c * W));
        }
        if (lane < B) {  // lane b's rotation at its sequence's position (q and k; v: none)
            const std::int64_t at = std::int64_t(pos[lane]) * half + j;
            rot[(x * pass_max_rows + lane) * 2] = sec < 2 ? p.cos_table[at] : A(1);
            rot[(x * pass_max_rows + lane) * 2 + 1] = sec < 2 ? p.sin_table[at] : A(0);
        }
    }
    for (int t = 0; t < plan.rounds; ++t) {
        const int c = gw * plan.rows + t * plan.round + wo_row;
        if (c >= C) continue;
        for (int k = wo_sub; k < o_packs; k += plan.sub)
            async_copy16(wo + (std::size_t(t * plan.rows + wo_row) * nhd + std::size_t(k) * W),
                         p.w_o + (std::int64_t(c) * nhd + std::int64_t(k) * W));
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
    cluster_arrive_relaxed();  // waited for before the first write into another block's shared memory
    for (int s = 0; s < p.slots; ++s)
        for (int pr = warp / G; pr < pairs; pr += pass_warps / G) {
            int k0, k1;
            pass_key_range(pos[pr / n], rank, blocks, warp % G, G, k0, k1);  // the older keys: len − 1
            const std::int64_t at = slot_at + (std::int64_t(pr) * p.ctx + k0) * HD;
            const std::int64_t bytes = std::int64_t(k1 - k0) * HD * sizeof(T);
            for (std::int64_t l = lane; 128 * l < bytes; l += 32) {
                prefetch_l2(reinterpret_cast<const char*>(p.keys[s] + at) + 128 * l);
                prefetch_l2(reinterpret_cast<const char*>(p.values[s] + at) + 128 * l);
            }
        }
    wait_for_prior_grids();
    allow_dependents();
    for (int idx = int(threadIdx.x); idx < p.slots * n; idx += pass_threads)  // no gains: 1, which changes nothing
        gain[idx] = p.gains[idx / n] ? load(p.gains[idx / n][idx % n]) : A(1);

    const A scale = A(1.0 / sqrt(double(HD)) * 1.4426950408889634);  // 1/√HD · log2(e)
    for (int s = 0; s < p.slots; ++s) {
        T* const kc = p.keys[s] + slot_at;
        T* const vc = p.values[s] + slot_at;
        const bool last = s == p.slots - 1;
        // 1. Every block: the rows of x as the pass before left them (from x at the first pass, then from xr, which
        //    the pass before wrote into every block), normalised into xs. Thread t holds pack t of every row
        //    between the sum of squares and the scaling; the sums go through the warps in a fixed order, so the
        //    result is the same at every call.
        {
            const int c = int(threadIdx.x);
            const bool mine = c < c_packs;
            P xv[pass_max_rows];
            A ss[pass_max_rows];
#pragma unroll
            for (int r = 0; r < pass_max_rows; ++r) {
                if (r >= B) break;
                ss[r] = 0;
                if (!mine) continue;
                P* own = reinterpret_cast<P*>(xr + std::int64_t(r) * C) + c;
                if (s == 0) {
                    xv[r] = load_cg(reinterpret_cast<const P*>(xg + std::int64_t(r) * C) + c);
                    *own = xv[r];
                } else {
                    xv[r] = *own;
                }
#pragma unroll
                for (int k = 0; k < W; ++k) ss[r] += load(xv[r].v[k]) * load(xv[r].v[k]);
            }
#pragma unroll
            for (int r = 0; r < pass_max_rows; ++r) {
                if (r >= B) break;
                ss[r] = warp_sum(ss[r]);
                if (lane == 0) red[warp * pass_max_rows + r] = ss[r];
            }
            __syncthreads();
            if (mine) {
                if (s == 0) asm volatile("cp.async.wait_group 1;" ::: "memory");  // this thread's pack of nw
                const P wv = reinterpret_cast<const P*>(nw)[c];
#pragma unroll
                for (int r = 0; r < pass_max_rows; ++r) {
                    if (r >= B) break;
                    A total = 0;
                    for (int w = 0; w < pass_warps; ++w) total += red[w * pass_max_rows + r];
                    const A rs = load(store<T>(A(1.0 / sqrt(double(total) / C + p.eps))));
                    // this thread's pack of the row again, from xr (held in registers across the barrier, it
                    // spilled to local memory in the 16-block bf16 kernel)
                    const P xw = reinterpret_cast<const P*>(xr + std::int64_t(r) * C)[c];
                    P y;
#pragma unroll
                    for (int k = 0; k < W; ++k) y.v[k] = store<T>(load(xw.v[k]) * rs * load(wv.v[k]));
                    reinterpret_cast<P*>(xs + std::int64_t(r) * C)[c] = y;
                }
            }
            __syncthreads();
        }
        // 2. q, k, v: each warp its units, from the weights in its shared memory; lane r holds sequence r's two
        //    outputs, rotates q and k, writes k and v into the pass's slot and q into every block's qs.
        if (s == 0) async_copy_wait(), cluster_wait();  // this thread's weights; every block started
        for (int x = 0; x < plan.per_warp && gw + x * plan.warps < plan.units; ++x) {
            const auto [sec, i, j] = pass_plan::unit_of(gw + x * plan.warps, n, half);
            const P* w0 = reinterpret_cast<const P*>(wq + std::size_t(x) * 2 * C);
            A d0[pass_max_rows] = {}, d1[pass_max_rows] = {};
            for (int c = lane; c < c_packs; c += 32) {
                const P a = w0[c], b = w0[c_packs + c];
#pragma unroll
                for (int r = 0; r < pass_max_rows; ++r) {
                    if (r >= B) break;
                    const P xv = reinterpret_cast<const P*>(xs + std::int64_t(r) * C)[c];
#pragma unroll
                    for (int k = 0; k < W; ++k) {
                        d0[r] += load(xv.v[k]) * load(a.v[k]);
                        d1[r] += load(xv.v[k]) * load(b.v[k]);
                    }
                }
            }
            A v0 = 0, v1 = 0;  // sequence `lane`'s outputs, rounded to T
#pragma unroll
            for (int r = 0; r < pass_max_rows; ++r) {
                if (r >= B) break;
                const A a = warp_sum(d0[r]), b = warp_sum(d1[r]);
                if (r == lane) v0 = a, v1 = b;
            }
            T t0 = store<T>(v0), t1 = store<T>(v1);
            if (sec < 2 && lane < B) {  // RoPE on q and k, as rope_kv_write_kernel
                const A cs = rot[(x * pass_max_rows + lane) * 2], sn = rot[(x * pass_max_rows + lane) * 2 + 1];
                A a0 = load(t0), a1 = load(t1);
                rotate_pair(a0, a1, cs, sn);
                t0 = store<T>(a0);
                t1 = store<T>(a1);
            }
            if (sec == 0) {  // q: lane b·blocks + r writes sequence b's into block r
                const int b = lane / blocks, r = lane % blocks;
                const A q0 = __shfl_sync(0xffffffffu, load(t0), b), q1 = __shfl_sync(0xffffffffu, load(t1), b);
                if (b < B) {
                    T* dst = cluster.map_shared_rank(qs, r) + std::int64_t(b) * nhd + std::int64_t(i) * HD;
                    dst[j] = store<T>(q0);
                    dst[j + half] = store<T>(q1);
                }
            } else if (lane < B) {  // k, v: into the slot, and into the block whose keys hold them
                T* slot = (sec == 1 ? kc : vc) + ((std::int64_t(lane) * n + i) * p.ctx + pos[lane]) * HD;
                slot[j] = t0;
                slot[j + half] = t1;
                const int len = pos[lane] + 1, owner = (len - 1) / ((len + blocks - 1) / blocks);
                T* dst = cluster.map_shared_rank(kv, owner) + (std::int64_t(lane) * 2 + sec - 1) * nhd + i * HD;
                dst[j] = t0;
                dst[j + half] = t1;
            }
        }
        cluster_arrive();  // q, k, v and the new key and value written, for every block to read

        // 3. Attention: block `rank` takes its share of the keys of every (sequence, head), G of its warps a
        //    (sequence, head) (pass_group), each a part of that share; lane (g, e) of a warp takes keys g, g + 4, ...
        //    of its part and the dimensions [e·DL, (e + 1)·DL). The first keys of the warp's first part are loaded
        //    while the cluster's barrier completes (all but the new key, which this pass wrote: loaded after it).
        const int g = lane / 8, e = lane % 8;
        KP kr[U][NK], vr[U][NK];
        auto load_keys = [&](int base, int k0, int k1, std::int64_t head_at) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int key = base + g + 4 * u < k1 ? base + g + 4 * u : k0;  // past the range: a valid row
                const KP* kp = reinterpret_cast<const KP*>(kc + head_at + std::int64_t(key) * HD);
                const KP* vp = reinterpret_cast<const KP*>(vc + head_at + std::int64_t(key) * HD);
#pragma unroll
                for (int c = 0; c < NK; ++c) kr[u][c] = load_cg(kp + c), vr[u][c] = load_cg(vp + c);
            }
        };
        {
            const int pr = warp / G;
            if (pr < pairs) {
                int k0, k1;
                pass_key_range(pos[pr / n] + 1, rank, blocks, warp % G, G, k0, k1);
                if (k0 < k1) load_keys(k0, k0, k1, std::int64_t(pr) * p.ctx * HD + e * DL);
            }
        }
        cluster_wait();
        for (int pr = warp / G; pr < pairs; pr += pass_warps / G) {
            const int b = pr / n, i = pr % n, len = pos[b] + 1;
            int k0, k1;
            pass_key_range(len, rank, blocks, warp % G, G, k0, k1);
            const std::int64_t head_at = std::int64_t(pr) * p.ctx * HD + e * DL;
            A qv[DL];
            {
                const KP* q = reinterpret_cast<const KP*>(qs + std::int64_t(b) * nhd + std::int64_t(i) * HD + e * DL);
#pragma unroll
                for (int c = 0; c < NK; ++c) {
                    const KP v = q[c];
#pragma unroll
                    for (int w = 0; w < KW; ++w) qv[c * KW + w] = load(v.v[w]) * scale;
                }
            }
            const bool first = pr == warp / G;
            const KP* new_k = reinterpret_cast<const KP*>(kv + std::int64_t(b) * 2 * nhd + i * HD + e * DL);
            const KP* new_v = new_k + nhd / KW;
            A m = -INFINITY, l = 0, acc[DL] = {};
            for (int base = k0; base < k1; base += 4 * U) {  // the same trips for the whole warp
                if (!first || base != k0) load_keys(base, k0, k1, head_at);
#pragma unroll
                for (int u = 0; u < U; ++u)  // the new key and value, from this block's kv (only it holds them)
                    if (base + g + 4 * u == len - 1 && len - 1 < k1)
#pragma unroll
                        for (int c = 0; c < NK; ++c) kr[u][c] = new_k[c], vr[u][c] = new_v[c];
                A sc[U];
                A mn = m;
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    A d = 0;
#pragma unroll
                    for (int c = 0; c < NK; ++c)
#pragma unroll
                        for (int w = 0; w < KW; ++w) d += qv[c * KW + w] * load(kr[u][c].v[w]);
#pragma unroll
                    for (int o = 1; o < 8; o *= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
                    sc[u] = base + g + 4 * u < k1 ? d : A(-INFINITY);
                    mn = max(mn, sc[u]);
                }
                if (mn != -INFINITY) {  // else no key of this group yet
                    const A corr = exp2_of(m - mn);  // m = −∞ gives 0
                    l *= corr;
#pragma unroll
                    for (int d = 0; d < DL; ++d) acc[d] *= corr;
#pragma unroll
                    for (int u = 0; u < U; ++u) {
                        const A pe = exp2_of(sc[u] - mn);  // 0 past the range
                        l += pe;
#pragma unroll
                        for (int c = 0; c < NK; ++c)
#pragma unroll
                            for (int w = 0; w < KW; ++w) acc[c * KW + w] += pe * load(vr[u][c].v[w]);
                    }
                    m = mn;
                }
            }
#pragma unroll
            for (int o = 8; o < 32; o *= 2) {  // the warp's four groups of lanes into one
                A a2[DL];
#pragma unroll
                for (int d = 0; d < DL; ++d) a2[d] = __shfl_xor_sync(0xffffffffu, acc[d], o);
                const A m2 = __shfl_xor_sync(0xffffffffu, m, o), l2 = __shfl_xor_sync(0xffffffffu, l, o);
                merge_partial(m, l, acc, m2, l2, a2);
            }
            A* wp = wpart + (pr * G + warp % G) * (HD + 2);
            if (lane < 8) {
#pragma unroll
                for (int d = 0; d < DL; ++d) wp[e * DL + d] = acc[d];
                if (lane == 0) wp[HD] = m, wp[HD + 1] = l;
            }
        }
        __syncthreads();
        // The block's partial per (sequence, head), its warps' merged, written into every block's `parts`.
        for (int idx = int(threadIdx.x); idx < pairs * (HD + 2); idx += pass_threads) {
            const int pr = idx / (HD + 2), d = idx % (HD + 2);
            const A* wp = wpart + pr * G * (HD + 2);
            A M = -INFINITY;
#pragma unroll 4
            for (int w = 0; w < G; ++w) M = max(M, wp[w * (HD + 2) + HD]);
            A v = M;
            if (d != HD) {
                v = 0;
#pragma unroll 4
                for (int w = 0; w < G; ++w) {
                    const A mw = wp[w * (HD + 2) + HD];
                    if (mw != -INFINITY) v += wp[w * (HD + 2) + d] * exp2_of(mw - M);
                }
            }
            const std::int64_t at = (std::int64_t(rank) * pairs + pr) * (HD + 2) + d;
            for (int r = 0; r < blocks; ++r) cluster.map_shared_rank(parts, r)[at] = v;
        }
        cluster.sync();  // every block's partials in every block

        // 4. Every block: o = Σ_r e^{m_r − M} o_r / Σ_r e^{m_r − M} l_r over the cluster's blocks r, rounded as
        //    decode_attention rounds it, times the head's gain as head_gain_forward applies it.
        for (int idx = int(threadIdx.x); idx < pairs * HD; idx += pass_threads) {
            const int pr = idx / HD, d = idx % HD;
            const A* pp = parts + pr * (HD + 2);
            const std::int64_t stride = std::int64_t(pairs) * (HD + 2);  // from one block's partials to the next's
            A M = -INFINITY;
#pragma unroll 4
            for (int r = 0; r < blocks; ++r) M = max(M, pp[r * stride + HD]);
            A o = 0, sum = 0;
#pragma unroll 4
            for (int r = 0; r < blocks; ++r) {
                const A mr = pp[r * stride + HD];
                const A f = mr == -INFINITY ? A(0) : exp2_of(mr - M);
                o += pp[r * stride + d] * f;
                sum += pp[r * stride + HD + 1] * f;
            }
            T ot = store<T>(o / sum);
            ot = store<T>(load(ot) * gain[s * n + pr % n]);  // as head_gain_forward (a gain of 1 changes nothing)
            os[idx] = ot;  // (B, n·HD): idx = (b·n + i)·HD + d
        }
        __syncthreads();
        // 5. x += W_O · o: `sub` lanes a row of W_O (from this warp's shared memory), `rows` rows a warp at once.
        //    The sum goes into x at the last pass, else into every block's xr for the next; the last pass ends
        //    without a cluster barrier, as no block reads another's shared memory after the one above.
        for (int t = 0; t < plan.rounds; ++t) {  // the same trips for the whole warp
            const int c = gw * plan.rows + t * plan.round + wo_row;
            const bool has = c < C;
            A d[pass_max_rows] = {}, xo[pass_max_rows] = {};
            if (has) {
                const P* w = reinterpret_cast<const P*>(wo + std::size_t(t * plan.rows + wo_row) * nhd);
                for (int k = wo_sub; k < o_packs; k += plan.sub) {
                    const P wk = w[k];
#pragma unroll
                    for (int r = 0; r < pass_max_rows; ++r) {
                        if (r >= B) break;
                        const P ov = reinterpret_cast<const P*>(os + std::int64_t(r) * nhd)[k];
#pragma unroll
                        for (int q = 0; q < W; ++q) d[r] += load(ov.v[q]) * load(wk.v[q]);
                    }
                }
                if (wo_sub == 0)
#pragma unroll
                    for (int r = 0; r < pass_max_rows; ++r)
                        if (r < B) xo[r] = load(xr[std::int64_t(r) * C + c]);
            }
#pragma unroll
            for (int r = 0; r < pass_max_rows; ++r) {
                if (r >= B) break;
                for (int o = plan.sub / 2; o > 0; o /= 2) d[r] += __shfl_xor_sync(0xffffffffu, d[r], o);
                // the row's first lane adds the residual; its other lanes take the sum from it (after its read
                // of xr, on which the value depends, so before any write of that element below)
                const T xn = store<T>(__shfl_sync(0xffffffffu, d[r] + xo[r], wo_row * plan.sub));
                if (has && last && wo_sub == 0) xg[std::int64_t(r) * C + c] = xn;
                if (has && !last)  // lane wo_sub writes blocks rank + wo_sub, ...: the reader of xr its own
                    for (int b = wo_sub; b < blocks; b += plan.sub)
                        cluster.map_shared_rank(xr, (rank + b) % blocks)[std::int64_t(r) * C + c] = xn;
            }
        }
        if (!last) cluster.sync();  // xr complete for the next pass; the partials and queries free again
    }
#endif
}

// Blocks per cluster: 16 where the GPU can place such a cluster (Hopper, a non-portable size), else 8; 0 where
// the kernel was built for an architecture without clusters (below sm_90).
template <class T, int DL>
int pass_cluster_size() {
    static const int size = [] {
        auto* kernel = decode_pass_kernel<T, DL>;
        cudaFuncAttributes fa{};
        if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess || fa.binaryVersion < 90 ||
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_optin_limit())) !=
                cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess) {
            cudaLaunchAttribute a{};
            a.id = cudaLaunchAttributeClusterDimension;
            a.val.clusterDim.x = 16, a.val.clusterDim.y = 1, a.val.clusterDim.z = 1;
            cudaLaunchConfig_t cfg{};
            cfg.gridDim = dim3(16);
            cfg.blockDim = dim3(pass_threads);
            cfg.dynamicSmemBytes = smem_optin_limit();
            cfg.attrs = &a;
            cfg.numAttrs = 1;
            int clusters = 0;
            if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters > 0) return 16;
        }
        (void)cudaGetLastError();  // a refusal above is not an error of a later call
        return 8;
    }();
    return size;
}

template <class T>
int pass_cluster_size_for(int dl) {
    switch (dl) {
        case 1: return pass_cluster_size<T, 1>();
        case 2: return pass_cluster_size<T, 2>();
        case 4: return pass_cluster_size<T, 4>();
        case 8: return pass_cluster_size<T, 8>();
        case 16: return pass_cluster_size<T, 16>();
        default: return 0;
    }
}

template <class T, int DL>
void launch_decode_pass(const pass_args<T>& p, std::size_t smem) {
    const int cs = pass_cluster_size<T, DL>();
    cudaLaunchAttribute attrs[2]{};
    attrs[0].id = cudaLaunchAttributeClusterDimension;
    attrs[0].val.clusterDim.x = unsigned(cs), attrs[0].val.clusterDim.y = 1, attrs[0].val.clusterDim.z = 1;
    attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[1].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(unsigned(cs * ((p.B + pass_max_rows - 1) / pass_max_rows)));  // a cluster per 2 sequences
    cfg.blockDim = dim3(pass_threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream();
    cfg.attrs = attrs;
    cfg.numAttrs = 2;
    SGT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_pass_kernel<T, DL>, p));
}

// The shared memory a launch for B rows of this shape takes, at the cluster size it launches with; 0 where no
// cluster kernel was built for HD (below sm_90, or HD / 8 without an instance).
template <class T>
std::size_t pass_smem_bytes(int B, int C, int n, int HD) {
    const int blocks = pass_cluster_size_for<T>(HD / 8);
    return blocks > 0 ? pass_smem<T>(std::min(B, pass_max_rows), C, n, HD, blocks).total : 0;
}

}  // namespace detail

// The shape's part of the choice: a few rows and heads (pass_max_batch, pass_max_width), HD = 8·DL with a kernel
// for DL, rows in whole 16-byte packs, a kernel built for Hopper, and the weights of the passes with the rest in
// the blocks' shared memory (gpt2's 2 heads: 64 KB a block in bf16); decode_passes also needs its buffers aligned
// to 16 bytes.
template <class T>
bool decode_passes_one_kernel(cuda, int B, int C, int n, int HD) {
    using namespace detail;
    constexpr int W = pack_width<T>;
    const int dl = HD / 8;
    if (!(context().fuse_few_rows && context().fuse_decode_passes && dependent_launch_supported() && B >= 1 &&
          B <= pass_max_batch && HD % 8 == 0 && (dl == 1 || dl == 2 || dl == 4 || dl == 8 || dl == 16) && n >= 1 &&
          n * HD <= pass_max_width && C % W == 0 && C / W <= pass_threads && (n * HD) % W == 0))
        return false;
    const std::size_t bytes = pass_smem_bytes<T>(B, C, n, HD);
    return bytes > 0 && bytes <= smem_optin_limit();
}

template <class T>
void decode_passes(cuda, T* x, T* qkv, T* o, T* a, T* rstd, std::span<const decode_slot<T>> slots, const T* norm,
                   const T* w_qkv, const T* w_o, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                   const std::int32_t* start, int B, int C, int n, int HD, int ctx, double eps,
                   accum_t<T>* workspace) {
    if (B <= 0 || n <= 0 || slots.empty()) return;
    bool one_kernel = decode_passes_one_kernel<T>(cuda{}, B, C, n, HD);
    for (const void* ptr : std::initializer_list<const void*>{x, qkv, norm, w_qkv, w_o})
        one_kernel = one_kernel && detail::aligned16(ptr);
    for (const decode_slot<T>& s : slots)
        one_kernel = one_kernel && detail::aligned16(s.keys) && detail::aligned16(s.values);
    if (!one_kernel) {  // the composition, as on the CPU
        detail::compose_decode_passes(cuda{}, x, qkv, o, a, rstd, slots, norm, w_qkv, w_o, cos_table, sin_table, start,
                                      B, C, n, HD, ctx, eps, workspace);
        return;
    }
    detail::pass_args<T> p{};
    p.x = x, p.norm = norm, p.w_qkv = w_qkv, p.w_o = w_o, p.cos_table = cos_table, p.sin_table = sin_table;
    p.start = start, p.B = B, p.C = C, p.n = n, p.HD = HD, p.ctx = ctx, p.eps = eps;
    const std::size_t smem = detail::pass_smem_bytes<T>(B, C, n, HD);
    for (std::size_t first = 0; first < slots.size(); first += detail::pass_max_slots) {
        p.slots = int(std::min<std::size_t>(detail::pass_max_slots, slots.size() - first));
        for (int s = 0; s < p.slots; ++s) {
            p.keys[s] = slots[first + std::size_t(s)].keys;
            p.values[s] = slots[first + std::size_t(s)].values;
            p.gains[s] = slots[first + std::size_t(s)].gains;
        }
        switch (HD / 8) {
            case 1: detail::launch_decode_pass<T, 1>(p, smem); break;
            case 2: detail::launch_decode_pass<T, 2>(p, smem); break;
            case 4: detail::launch_decode_pass<T, 4>(p, smem); break;
            case 8: detail::launch_decode_pass<T, 8>(p, smem); break;
            default: detail::launch_decode_pass<T, 16>(p, smem); break;
        }
    }
}

}  // namespace sgt
