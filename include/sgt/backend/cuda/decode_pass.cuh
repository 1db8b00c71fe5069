// sgt/backend/cuda/decode_pass.cuh: a run of a decode step's attention passes (backend/cpu/decode.hpp's
// decode_passes) as one kernel of one thread-block cluster, for a few sequences and heads.
//
// Why: at batch 1 a loop pass of SGT over |S| = 2 heads of gpt2 moves about 1 MB (0.8 MB of weights, its cache
// slot) but is three dependent steps: q, k, v from the residual; attention over the slot, which holds the new
// key; the output product into the residual, which the next pass normalises. As kernels (the few-row products and
// decode attention) each step boundary costs some microseconds whatever it moves, so a step's 9 loop passes took
// 30-38% of it for 3% of its FLOPs (docs/BENCHMARKS.md). Here one cluster of up to 16 blocks runs every pass of
// the run, with the cluster's hardware barrier between the steps:
//   q, k, v    every block normalises the rows of x into its shared memory (rmsnorm_forward's rounding, its
//              sums in another order); the cluster's warps take the units of the few-row product (decode_products.cuh: rows j
//              and j + HD/2 of one head's q, k or v), rotate q and k, write k and v into the pass's slot and q, k,
//              v to the qkv scratch;
//   attention  each (sequence, head) is split along its keys over the blocks, and a block's share over some of
//              its warps; a warp keeps an online softmax over its keys (8 lanes a key, 4 keys at once, all their
//              loads issued together) and the block merges its warps into one partial (max, sum, unnormalised
//              output) in its shared memory;
//   output     every block merges the cluster's partials, read through distributed shared memory, rounds as
//              decode_attention does, applies the pass's gains as head_gain_forward does, and adds its share of
//              the rows of W_O · o to x.
// So the results are the composition's but for the order of the sums. Before it waits for the kernel before it
// (a programmatic dependent launch, backend.cuh), the kernel fetches into L2 the weights its warps will read and
// the older keys and values of every slot. Data another block wrote in this kernel is read past L1 (ld.cg).
// On an H200 at gpt2 size this took SGT's batch-1 decode overhead over vanilla from +31% / +37% to +27% / +24%
// (contexts 1024 / 4096); the kernel is bound by the latency of its instruction chains, not by bytes, and at 4 or
// 8 sequences it was slower than the composition, so it takes 1 or 2 (docs/BENCHMARKS.md).
#pragma once

#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {

constexpr int pass_threads = 512, pass_warps = pass_threads / 32;
constexpr int pass_max_slots = 8;    // passes per launch (a longer run takes several)
constexpr int pass_max_rows = 2;     // sequences (at 4 and 8 the composition was faster)
constexpr int pass_max_blocks = 16;  // a cluster's blocks
constexpr int pass_max_width = 256;  // n·HD: the heads a pass computes, times HD
constexpr std::size_t pass_smem_max = 48 << 10;

template <class T>
struct pass_args {
    T* x;          // (B, C) residual stream, updated in place
    T* qkv;        // (B, 3, n, HD) scratch
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

// A block's shared memory: the normed rows xs (B, C) and the attention output os (B, n·HD) in T; the block's
// partial per (sequence, head), (B·n, HD + 2) in accum_t (read by the cluster); its warps' partials, (B·n, G, HD + 2);
// the warps' sums of squares, (warps, pass_max_rows).
template <class T>
struct pass_smem {
    std::size_t xs = 0, os, part, wpart, red, total;
    __host__ __device__ static std::size_t up16(std::size_t b) { return (b + 15) / 16 * 16; }
    __host__ __device__ pass_smem(int B, int C, int n, int HD) {
        using A = accum_t<T>;
        os = up16(std::size_t(B) * C * sizeof(T));
        part = os + up16(std::size_t(B) * n * HD * sizeof(T));
        wpart = part + up16(std::size_t(B) * n * (HD + 2) * sizeof(A));
        red = wpart + up16(std::size_t(B * n > pass_warps ? B * n : pass_warps) * (HD + 2) * sizeof(A));
        total = red + up16(std::size_t(pass_warps) * pass_max_rows * sizeof(A));
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

// Merges (m2, l2, a2) into (m, l, a), partials of one online softmax (m = −∞: empty).
template <class A, int D>
__device__ inline void merge_partial(A& m, A& l, A (&a)[D], A m2, A l2, const A (&a2)[D]) {
    const A mn = max(m, m2);
    const A f1 = m == -INFINITY ? A(0) : exp(m - mn), f2 = m2 == -INFINITY ? A(0) : exp(m2 - mn);
    l = l * f1 + l2 * f2;
#pragma unroll
    for (int d = 0; d < D; ++d) a[d] = a[d] * f1 + a2[d] * f2;
    m = mn;
}

// The warps of a block that take one (sequence, head) in attention: pass_warps / pairs of them where there are
// fewer pairs than warps (warp w takes pair w / G), else one (warp w takes pairs w, w + pass_warps, ...).
__device__ inline int pass_group(int pairs) { return pairs < pass_warps ? pass_warps / pairs : 1; }

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
    using P = pack<T, W>;
    using KP = pack<T, KW>;
    constexpr int U = 4;                     // keys a group of 8 lanes loads at once
    cg::cluster_group cluster = cg::this_cluster();
    const int rank = int(cluster.block_rank()), warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    const int blocks = int(cluster.num_blocks()), warps = blocks * pass_warps, gw = rank * pass_warps + warp;
    const int B = p.B, C = p.C, n = p.n, HD = p.HD, half = HD / 2, nhd = n * HD, pairs = B * n;
    const int G = pass_group(pairs);
    const int units = 3 * n * half, c_packs = C / W, o_packs = nhd / W;
    int sub = 1;  // lanes per row of W_O
    while (sub < o_packs && sub < 32) sub *= 2;
    const int rows_per_warp = 32 / sub;
    extern __shared__ __align__(16) unsigned char pass_smem_raw[];
    const pass_smem<T> lay(B, C, n, HD);
    T* xs = reinterpret_cast<T*>(pass_smem_raw + lay.xs);
    T* os = reinterpret_cast<T*>(pass_smem_raw + lay.os);
    A* part = reinterpret_cast<A*>(pass_smem_raw + lay.part);
    A* wpart = reinterpret_cast<A*>(pass_smem_raw + lay.wpart);
    A* red = reinterpret_cast<A*>(pass_smem_raw + lay.red);
    auto qkv_rows = [&](int u, int& sec, int& head, int& j) {
        sec = u / (n * half);
        head = (u / half) % n;
        j = u % half;
        return p.w_qkv + (std::int64_t(sec * n + head) * HD + j) * C;  // the second row is half·C further
    };
    auto prefetch = [&](const void* first, std::int64_t bytes) {
        for (std::int64_t l = lane; 128 * l < bytes; l += 32) prefetch_l2(static_cast<const char*>(first) + 128 * l);
    };

    // What the kernel before this one does not write: the weights, and every slot's keys and values before the
    // new token (the positions were copied from the host before the step).
    for (int u = gw; u < units; u += warps) {
        int sec, head, j;
        const T* r0 = qkv_rows(u, sec, head, j);
        prefetch(r0, std::int64_t(C) * sizeof(T));
        prefetch(r0 + std::int64_t(half) * C, std::int64_t(C) * sizeof(T));
    }
    for (int c = gw * rows_per_warp; c < C; c += warps * rows_per_warp)
        prefetch(p.w_o + std::int64_t(c) * nhd, std::int64_t(min(rows_per_warp, C - c)) * nhd * sizeof(T));
    for (int s = 0; s < p.slots; ++s)
        for (int pr = warp / G; pr < pairs; pr += pass_warps / G) {
            int k0, k1;
            pass_key_range(p.start[pr / n], rank, blocks, warp % G, G, k0, k1);  // the older keys: len − 1
            const std::int64_t at = (std::int64_t(pr) * p.ctx + k0) * HD;
            const std::int64_t bytes = std::int64_t(k1 - k0) * HD * sizeof(T);
            prefetch(p.keys[s] + at, bytes);
            prefetch(p.values[s] + at, bytes);
        }
    wait_for_prior_grids();
    allow_dependents();

    const A scale = A(1.0 / sqrt(double(HD)));
    for (int s = 0; s < p.slots; ++s) {
        T* const kc = p.keys[s];
        T* const vc = p.values[s];
        // 1. Every block: the rows of x as the pass before left them, normalised into xs. Thread t holds pack t of
        //    every row between the sum of squares and the scaling (one read of x); the sums go through the warps
        //    in a fixed order, so the result is the same at every call.
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
                xv[r] = load_cg(reinterpret_cast<const P*>(p.x + std::int64_t(r) * C) + c);
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
                const P wv = reinterpret_cast<const P*>(p.norm)[c];
#pragma unroll
                for (int r = 0; r < pass_max_rows; ++r) {
                    if (r >= B) break;
                    A total = 0;
                    for (int w = 0; w < pass_warps; ++w) total += red[w * pass_max_rows + r];
                    const A rs = load(store<T>(A(1.0 / sqrt(double(total) / C + p.eps))));
                    P y;
#pragma unroll
                    for (int k = 0; k < W; ++k) y.v[k] = store<T>(load(xv[r].v[k]) * rs * load(wv.v[k]));
                    reinterpret_cast<P*>(xs + std::int64_t(r) * C)[c] = y;
                }
            }
            __syncthreads();
        }
        // 2. q, k, v: the cluster's warps take the units (rows j and j + HD/2 of one head's q, k or v), two at a
        //    time with all their loads issued together; lane r then writes sequence r's outputs.
        for (int u0 = gw; u0 < units; u0 += 2 * warps) {  // the same trips for the whole warp
            constexpr int UN = 2;
            int sec[UN], head[UN], j[UN];
            const P* r0[UN];
            bool has[UN];
            A cs[UN], sn[UN];
            const std::int64_t pos = lane < B ? p.start[lane] : 0;
#pragma unroll
            for (int x = 0; x < UN; ++x) {
                const int u = u0 + x * warps;
                has[x] = u < units;
                r0[x] = reinterpret_cast<const P*>(qkv_rows(has[x] ? u : u0, sec[x], head[x], j[x]));
                cs[x] = 1, sn[x] = 0;
                if (lane < B && sec[x] < 2)
                    cs[x] = p.cos_table[pos * half + j[x]], sn[x] = p.sin_table[pos * half + j[x]];
            }
            A d0[UN][pass_max_rows] = {}, d1[UN][pass_max_rows] = {};
            for (int c = lane; c < c_packs; c += 32) {
#pragma unroll
                for (int x = 0; x < UN; ++x) {
                    if (!has[x]) continue;
                    const P a = r0[x][c], b = r0[x][std::int64_t(half) * c_packs + c];
#pragma unroll
                    for (int r = 0; r < pass_max_rows; ++r) {
                        if (r >= B) break;
                        const P xv = reinterpret_cast<const P*>(xs + std::int64_t(r) * C)[c];
#pragma unroll
                        for (int k = 0; k < W; ++k) {
                            d0[x][r] += load(xv.v[k]) * load(a.v[k]);
                            d1[x][r] += load(xv.v[k]) * load(b.v[k]);
                        }
                    }
                }
            }
#pragma unroll
            for (int x = 0; x < UN; ++x) {
                if (!has[x]) continue;
                A v0 = 0, v1 = 0;  // sequence `lane`'s sums
#pragma unroll
                for (int r = 0; r < pass_max_rows; ++r) {
                    if (r >= B) break;
                    const A a = warp_sum(d0[x][r]), b = warp_sum(d1[x][r]);
                    if (r == lane) v0 = a, v1 = b;
                }
                if (lane >= B) continue;
                T t0 = store<T>(v0), t1 = store<T>(v1);
                if (sec[x] < 2) {  // RoPE on q and k, as rope_kv_write_kernel
                    const A a0 = load(t0), a1 = load(t1);
                    t0 = store<T>(a0 * cs[x] - a1 * sn[x]);
                    t1 = store<T>(a1 * cs[x] + a0 * sn[x]);
                }
                T* row = p.qkv + std::int64_t(lane) * 3 * nhd + std::int64_t(sec[x] * n + head[x]) * HD;
                row[j[x]] = t0;
                row[j[x] + half] = t1;
                if (sec[x] > 0) {
                    T* slot = (sec[x] == 1 ? kc : vc) + ((std::int64_t(lane) * n + head[x]) * p.ctx + pos) * HD;
                    slot[j[x]] = t0;
                    slot[j[x] + half] = t1;
                }
            }
        }
        cluster.sync();  // q, k, v and the new key and value written, for every block to read

        // 3. Attention: block `rank` takes its share of the keys of every (sequence, head), G of its warps a
        //    (sequence, head) (pass_group), each a part of that share; lane (g, e) of a warp takes keys g, g + 4, ...
        //    of its part and the dimensions [e·DL, (e + 1)·DL).
        const int g = lane / 8, e = lane % 8;
        for (int pr = warp / G; pr < pairs; pr += pass_warps / G) {
            const int b = pr / n, i = pr % n;
            int k0, k1;
            pass_key_range(p.start[b] + 1, rank, blocks, warp % G, G, k0, k1);
            A qv[DL];
            {
                const KP* q =
                    reinterpret_cast<const KP*>(p.qkv + std::int64_t(b) * 3 * nhd + std::int64_t(i) * HD + e * DL);
#pragma unroll
                for (int c = 0; c < DL / KW; ++c) {
                    const KP v = load_cg(q + c);
#pragma unroll
                    for (int w = 0; w < KW; ++w) qv[c * KW + w] = load(v.v[w]) * scale;
                }
            }
            A m = -INFINITY, l = 0, acc[DL] = {};
            const std::int64_t head_at = std::int64_t(pr) * p.ctx * HD + e * DL;
            for (int base = k0; base < k1; base += 4 * U) {  // the same trips for the whole warp
                KP kr[U][DL / KW], vr[U][DL / KW];
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const int key = base + g + 4 * u < k1 ? base + g + 4 * u : k0;  // past the range: a valid row
                    const KP* kp = reinterpret_cast<const KP*>(kc + head_at + std::int64_t(key) * HD);
                    const KP* vp = reinterpret_cast<const KP*>(vc + head_at + std::int64_t(key) * HD);
#pragma unroll
                    for (int c = 0; c < DL / KW; ++c) kr[u][c] = load_cg(kp + c), vr[u][c] = load_cg(vp + c);
                }
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    A sc = 0;
#pragma unroll
                    for (int c = 0; c < DL / KW; ++c)
#pragma unroll
                        for (int w = 0; w < KW; ++w) sc += qv[c * KW + w] * load(kr[u][c].v[w]);
#pragma unroll
                    for (int o = 1; o < 8; o *= 2) sc += __shfl_xor_sync(0xffffffffu, sc, o);
                    if (base + g + 4 * u >= k1) continue;
                    const A mn = max(m, sc), corr = exp(m - mn), pe = exp(sc - mn);
                    l = l * corr + pe;
#pragma unroll
                    for (int c = 0; c < DL / KW; ++c)
#pragma unroll
                        for (int w = 0; w < KW; ++w)
                            acc[c * KW + w] = acc[c * KW + w] * corr + pe * load(vr[u][c].v[w]);
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
        for (int idx = int(threadIdx.x); idx < pairs * HD; idx += pass_threads) {  // the block's partials
            const int pr = idx / HD, d = idx % HD;
            const A* wp = wpart + pr * G * (HD + 2);
            A M = -INFINITY;
            for (int w = 0; w < G; ++w) M = max(M, wp[w * (HD + 2) + HD]);
            A o = 0, sum = 0;
            for (int w = 0; w < G; ++w) {
                const A mw = wp[w * (HD + 2) + HD];
                if (mw == -INFINITY) continue;
                const A f = exp(mw - M);
                o += wp[w * (HD + 2) + d] * f;
                sum += wp[w * (HD + 2) + HD + 1] * f;
            }
            A* pp = part + pr * (HD + 2);
            pp[d] = o;
            if (d == 0) pp[HD] = M, pp[HD + 1] = sum;
        }
        cluster.sync();  // every block's partials ready

        // 4. Every block: o = Σ_r e^{m_r − M} o_r / Σ_r e^{m_r − M} l_r over the cluster's blocks r, rounded as
        //    decode_attention rounds it, times the head's gain as head_gain_forward applies it. The partials of all
        //    blocks are requested at once (one round trip through distributed shared memory, not one per block).
        const T* gains = p.gains[s];
        for (int idx = int(threadIdx.x); idx < pairs * HD; idx += pass_threads) {
            const int pr = idx / HD, d = idx % HD;
            A mr[pass_max_blocks], lr[pass_max_blocks], orr[pass_max_blocks];
#pragma unroll
            for (int r = 0; r < pass_max_blocks; ++r) {
                mr[r] = -INFINITY, lr[r] = 0, orr[r] = 0;
                if (r < blocks) {
                    const A* pp = cluster.map_shared_rank(part, r) + pr * (HD + 2);
                    mr[r] = pp[HD], lr[r] = pp[HD + 1], orr[r] = pp[d];
                }
            }
            A M = -INFINITY;
#pragma unroll
            for (int r = 0; r < pass_max_blocks; ++r) M = max(M, mr[r]);
            A o = 0, sum = 0;
#pragma unroll
            for (int r = 0; r < pass_max_blocks; ++r) {
                if (mr[r] == -INFINITY) continue;
                const A f = exp(mr[r] - M);
                o += orr[r] * f;
                sum += lr[r] * f;
            }
            T ot = store<T>(o / sum);
            if (gains) ot = store<T>(load(ot) * load(gains[pr % n]));
            os[idx] = ot;  // (B, n·HD): idx = (b·n + i)·HD + d
        }
        __syncthreads();
        // 5. x += W_O · o: `sub` lanes a row of W_O, rows_per_warp rows a warp at once, the loads of R such rounds
        //    issued together.
        constexpr int R = 4;
        const int round = warps * rows_per_warp;
        for (int c00 = gw * rows_per_warp; c00 < C; c00 += R * round) {  // the same trips for the whole warp
            const int k0 = lane % sub;
            A d[R][pass_max_rows] = {}, xo[R][pass_max_rows] = {};
#pragma unroll
            for (int q = 0; q < R; ++q) {
                const int c = c00 + q * round + lane / sub;
                if (c >= C) continue;
                if (k0 == 0)
#pragma unroll
                    for (int r = 0; r < pass_max_rows; ++r) {
                        if (r >= B) break;
                        xo[q][r] = load(load_cg(p.x + std::int64_t(r) * C + c));
                    }
                for (int k = k0; k < o_packs; k += sub) {
                    const P w = reinterpret_cast<const P*>(p.w_o + std::int64_t(c) * nhd)[k];
#pragma unroll
                    for (int r = 0; r < pass_max_rows; ++r) {
                        if (r >= B) break;
                        const P ov = reinterpret_cast<const P*>(os + std::int64_t(r) * nhd)[k];
#pragma unroll
                        for (int t = 0; t < W; ++t) d[q][r] += load(ov.v[t]) * load(w.v[t]);
                    }
                }
            }
#pragma unroll
            for (int q = 0; q < R; ++q)
#pragma unroll
                for (int r = 0; r < pass_max_rows; ++r) {
                    if (r >= B) break;
                    for (int o = sub / 2; o > 0; o /= 2) d[q][r] += __shfl_xor_sync(0xffffffffu, d[q][r], o);
                }
            if (k0 != 0) continue;
#pragma unroll
            for (int q = 0; q < R; ++q) {
                const int c = c00 + q * round + lane / sub;
                if (c >= C) continue;
#pragma unroll
                for (int r = 0; r < pass_max_rows; ++r) {
                    if (r >= B) break;
                    p.x[std::int64_t(r) * C + c] = store<T>(d[q][r] + xo[q][r]);
                }
            }
        }
        cluster.sync();  // x complete for the next pass; the partials free again
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
        if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess || fa.binaryVersion < 90) {
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
            cfg.dynamicSmemBytes = pass_smem_max;
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
    cfg.gridDim = dim3(unsigned(cs));
    cfg.blockDim = dim3(pass_threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream();
    cfg.attrs = attrs;
    cfg.numAttrs = 2;
    SGT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_pass_kernel<T, DL>, p));
}

}  // namespace detail

// The shape's part of the choice: a few rows and heads (pass_max_rows, pass_max_width), HD = 8·DL with a kernel
// for DL, rows in whole 16-byte packs, the shared memory without an opt-in, a kernel built for Hopper; decode_passes
// also needs its buffers aligned to 16 bytes.
template <class T>
bool decode_passes_one_kernel(cuda, int B, int C, int n, int HD) {
    using namespace detail;
    constexpr int W = pack_width<T>;
    const int dl = HD / 8;
    return context().fuse_few_rows && context().fuse_decode_passes && dependent_launch_supported() && B >= 1 &&
           B <= pass_max_rows && HD % 8 == 0 && (dl == 1 || dl == 2 || dl == 4 || dl == 8 || dl == 16) &&
           n >= 1 && n * HD <= pass_max_width && C % W == 0 && C / W <= pass_threads && (n * HD) % W == 0 &&
           pass_smem<T>(B, C, n, HD).total <= pass_smem_max && pass_cluster_size_for<T>(dl) > 0;
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
    if (!one_kernel) {
        for (const decode_slot<T>& s : slots) {  // the composition, as on the CPU
            normed_qkv_write_at(cuda{}, qkv, s.keys, s.values, a, rstd, x, norm, w_qkv, cos_table, sin_table, start,
                                B, C, n, HD, ctx, eps);
            decode_attention(cuda{}, o, qkv, s.keys, s.values, start, B, n, HD, ctx, workspace);
            if (s.gains) head_gain_forward(cuda{}, o, s.gains, std::int64_t(B), n, HD, false);
            normed_matmul_forward(cuda{}, x, a, rstd, o, static_cast<const T*>(nullptr), w_o, B, n * HD, C, 0.0,
                                  true);
        }
        return;
    }
    detail::pass_args<T> p{};
    p.x = x, p.qkv = qkv, p.norm = norm, p.w_qkv = w_qkv, p.w_o = w_o, p.cos_table = cos_table;
    p.sin_table = sin_table, p.start = start, p.B = B, p.C = C, p.n = n, p.HD = HD, p.ctx = ctx, p.eps = eps;
    const std::size_t smem = detail::pass_smem<T>(B, C, n, HD).total;
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
