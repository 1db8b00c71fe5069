// sgt/backend/cuda/decode.cuh: the leaf ops of cached decoding on the GPU (backend/cpu/decode.hpp gives the
// layouts): a decode step's RoPE at per-sequence positions together with its cache write (rope_kv_write_at, one
// kernel), a prefill's cache write (kv_cache_write), and decode attention.
//
// Decode attention is split along the keys, as flash-decoding does: one query per (sequence, head) against up
// to max_context cached keys is too little work for one block, so block (s, b·n + i) takes the keys of chunk s
// (decode_chunk keys, or 2 or 4 times that where there are blocks enough), computes all their scores at once,
// their max and sum, and their weighted value sum, and writes its partial (max, sum, unnormalised output); the
// last block of a head to finish (a ticket per head, counted atomically) merges the head's chunks, so a decode
// pass takes one kernel for its attention. The number of chunks is fixed by max_context, not by the current
// length (chunks past the length write nothing that is read), so a recorded decode step replays at every length.
// Arithmetic in accum_t<T>.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "sgt/backend/cuda/backend.cuh"
#include "sgt/backend/cuda/rope.cuh"  // rotate_pair

namespace sgt {

namespace detail {

constexpr int decode_threads = 2 * decode_chunk;  // two threads per key of a chunk
constexpr int decode_max_hd = 256;

template <class T>
__global__ void kv_cache_write_kernel(T* k_cache, T* v_cache, const T* qkv, const std::int32_t* start, int B, int T_,
                                      int n, int HD, int ctx) {
    const std::int64_t total = std::int64_t(B) * T_ * n * HD, row = 3 * std::int64_t(n) * HD;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
         i += std::int64_t(gridDim.x) * blockDim.x) {
        const int d = int(i % HD);
        const std::int64_t rest = i / HD;
        const int h = int(rest % n);
        const std::int64_t bt = rest / n;
        const int b = int(bt / T_), t = int(bt % T_);
        const std::int64_t dst = ((std::int64_t(b) * n + h) * ctx + start[b] + t) * HD + d;
        const T* src = qkv + bt * row + std::int64_t(h) * HD + d;
        k_cache[dst] = src[std::int64_t(n) * HD];
        v_cache[dst] = src[2 * std::int64_t(n) * HD];
    }
}

// RoPE at per-sequence positions (backend/cpu/decode.hpp's rope_forward_at) on q and k, and the cache write, in
// one pass: thread (b, t, i, j) rotates the pairs (j, j + HD/2) of head i's query and key, writes the rotated key
// to the row and the slot, and copies the value pair.
template <class T>
__global__ void rope_kv_write_kernel(T* qkv, T* k_cache, T* v_cache, const accum_t<T>* cos_table,
                                     const accum_t<T>* sin_table, const std::int32_t* start, int B, int T_, int n,
                                     int HD, int ctx) {
    using A = accum_t<T>;
    const int half = HD / 2;
    const std::int64_t total = std::int64_t(B) * T_ * n * half, nhd = std::int64_t(n) * HD;
    for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
         idx += std::int64_t(gridDim.x) * blockDim.x) {
        const int j = int(idx % half);
        const std::int64_t rest = idx / half;
        const int i = int(rest % n);
        const std::int64_t bt = rest / n;
        const int b = int(bt / T_), t = int(bt % T_);
        const std::int64_t pos = std::int64_t(start[b]) + t;
        const A c = cos_table[pos * half + j], s = sin_table[pos * half + j];
        T* q = qkv + bt * 3 * nhd + std::int64_t(i) * HD;
        T* k = q + nhd;
        const T* v = k + nhd;
        A q1 = load(q[j]), q2 = load(q[j + half]), k1 = load(k[j]), k2 = load(k[j + half]);
        rotate_pair(q1, q2, c, s);
        rotate_pair(k1, k2, c, s);
        q[j] = store<T>(q1);
        q[j + half] = store<T>(q2);
        const T r1 = store<T>(k1), r2 = store<T>(k2);
        k[j] = r1;
        k[j + half] = r2;
        const std::int64_t dst = ((std::int64_t(b) * n + i) * ctx + pos) * HD;
        k_cache[dst + j] = r1;
        k_cache[dst + j + half] = r2;
        v_cache[dst + j] = v[j];
        v_cache[dst + j + half] = v[j + half];
    }
}

template <class A>
__device__ inline A warp_max(A x) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) x = max(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// The widest pack (16, 8, 4 or 2 bytes, or one element) that divides a head row and the given pointers.
template <class T>
int decode_pack_width(int HD, std::initializer_list<const void*> ptrs) {
    for (int bytes = 16; bytes > int(sizeof(T)); bytes /= 2) {
        const int w = bytes / int(sizeof(T));
        bool ok = HD % w == 0;
        for (const void* p : ptrs) ok = ok && reinterpret_cast<std::uintptr_t>(p) % std::uintptr_t(bytes) == 0;
        if (ok) return w;
    }
    return 1;
}

// One m16n8k16 product on the tensor cores, bf16 in and fp32 accumulated in place (PTX's fragment layouts: lane
// L = 4·g + c holds A's rows g and g + 8 at columns 2c, 2c + 1 (a0, a1) and 2c + 8, 2c + 9 (a2, a3), B's column g
// at rows 2c, 2c + 1 (b0) and 2c + 8, 2c + 9 (b1), and D's rows g and g + 8 at columns 2c, 2c + 1).
__device__ inline void mma_bf16(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 2^x by the special function unit (relative error about 2^-22; 2^-inf = 0), where P is rounded to bf16 after.
__device__ inline float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// The transpose of an 8 x 8 matrix of 16-bit elements held a pair a lane (lane 4·g + c: row g, columns 2c, 2c + 1).
__device__ inline unsigned transposed_pairs(unsigned x) {
    unsigned y;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
    return y;
}

// Block bh merges the chunks below the length: out = gain · Σ_s e^{m_s − M} o_s / Σ_s e^{m_s − M} l_s (gain 1
// without gains). The partials are other blocks' writes, read past L1. The merge is the tail of the kernel, so
// its loads are issued together, not one chunk after another: thread t combines the (max, sum) pairs of chunks
// t, t + threads, ... online, the warps' pairs are combined by shuffles and the block's four in warp order; then
// item (g, d) sums dimension d over the chunks g, g + G, ... (G = threads / HD groups of a head row) and the
// groups' sums are added in group order. Same order every run.
template <class T>
__device__ void decode_merge(T* out, const accum_t<T>* ml, const accum_t<T>* po, int used, const T* gain, int bh,
                             int HD, int splits) {
    using A = accum_t<T>;
    constexpr int warps = decode_threads / 32;
    __shared__ A s_m[warps], s_l[warps], s_sum[decode_max_hd];  // G·HD ≤ max(threads, HD) ≤ decode_max_hd
    static_assert(decode_threads <= decode_max_hd);
    const int t = threadIdx.x;
    const A* m = ml + std::int64_t(bh) * splits * 2;
    auto combine = [](A& M, A& L, A m2, A l2) {  // (M, L) ← the pair of both parts, L = Σ l e^{m − M}
        const A M2 = max(M, m2);
        if (M2 == A(-INFINITY)) return;  // both empty
        L = L * exp(M - M2) + l2 * exp(m2 - M2);
        M = M2;
    };
    A M = -INFINITY, L = 0;
    for (int s = t; s < used; s += decode_threads) combine(M, L, __ldcg(m + 2 * s), __ldcg(m + 2 * s + 1));
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
        const A m2 = __shfl_xor_sync(0xffffffffu, M, o), l2 = __shfl_xor_sync(0xffffffffu, L, o);
        combine(M, L, m2, l2);
    }
    if (t % 32 == 0) s_m[t / 32] = M, s_l[t / 32] = L;
    __syncthreads();
    M = s_m[0], L = s_l[0];
    for (int w = 1; w < warps; ++w) combine(M, L, s_m[w], s_l[w]);
    const int G = max(1, decode_threads / HD);
    const A* p = po + std::int64_t(bh) * splits * HD;
    for (int item = t; item < G * HD; item += decode_threads) {
        const int g = item / HD, d = item % HD;
        A o = 0;
#pragma unroll 8
        for (int s = g; s < used; s += G) o += __ldcg(p + std::int64_t(s) * HD + d) * exp(__ldcg(m + 2 * s) - M);
        s_sum[item] = o;
    }
    __syncthreads();
    for (int d = t; d < HD; d += decode_threads) {
        A o = 0;
        for (int g = 0; g < G; ++g) o += s_sum[g * HD + d];
        out[std::int64_t(bh) * HD + d] = store<T>(gain ? load(gain[bh]) * load(store<T>(o / L)) : o / L);
    }
}

// Block (s, bh): keys [s·C, min(len, (s+1)·C)) of head bh, C = Sub·decode_chunk. ml (B·n, splits, 2): max and
// sum; po (B·n, splits, HD): Σ_j exp(score_j − max) v_j. Every load in the block is independent of the others, so
// the block has its whole chunk in flight at once (a serial online softmax per warp waits on memory once per key):
//   scores: two threads per key of each of the Sub sub-chunks, each half of the head's W-element packs, q from
//           shared memory; a key past the length reads key 0 (in bounds) and is masked;
//   softmax: warp 0 takes the chunk's max and sum, and turns the scores into exp(score − max);
//   values: a row of HD/W threads per key, G = threads / (HD/W) rows, each summing every G-th key; the rows'
//           sums are then added up per dimension.
// A larger Sub moves more bytes per block for the same fixed work (the query, three barriers, the partial's
// write, the ticket): decode_attention takes it when there are blocks enough to fill the GPU without it.
// Dh: the head size where it is known when compiled (64 or 128 with full packs; the loops over a head's packs and
// the value rows then unroll and the divisions go), 0 where it comes at run time as head_dim.
// Mma (bf16, Dh known, Sub ≤ 2): the scores and the value sums on the tensor cores instead, each warp a quarter of
// the chunk (16·Sub keys): S = q Kᵀ over its keys, then P V with P rounded to bf16 (as FlashAttention does), in
// place of about a conversion and a multiply-add per element a thread. Lane 4g + c loads the contiguous quarter c
// of a key row's dimensions (Dh / 4), so a row is read whole by four lanes:
//   scores: the product's reduction runs over a head's dimensions in any order, so its k index is laid over the
//           lane's quarter (k-step s: dimensions c·Dh/4 + 4s + 0..3), q the same; every row of A is q, so D's row g
//           holds the scores of the tile's keys 2c and 2c + 1;
//   values: the lane's word x of key row g (dimensions c·Dh/4 + 2x, + 1) is a pair of an 8 x 8 matrix x (keys x
//           those dimensions); transposed, it is B's fragment of P V, whose output column 2c + e is then dimension
//           c·Dh/4 + 2x + e: lane c ends with its own quarter of the head. The first pass's scores are D's pairs,
//           which are P's A fragment as they lie.
template <class T, int W, int Sub, int Dh, bool Mma>
__global__ void __launch_bounds__(decode_threads) decode_partial_kernel(T* out, accum_t<T>* ml, accum_t<T>* po,
                                                                        unsigned* tickets, const T* qkv,
                                                                        const T* k_cache, const T* v_cache,
                                                                        const std::int32_t* pos, const T* gain, int n,
                                                                        int head_dim, int ctx, int splits,
                                                                        accum_t<T> scale) {
    using A = accum_t<T>;
    const int HD = Dh > 0 ? Dh : head_dim;
    using P = pack<T, W>;
    static_assert(decode_chunk * 2 == decode_threads, "two threads per key");
    constexpr int chunk = Sub * decode_chunk;
    const int s = blockIdx.x, bh = blockIdx.y, b = bh / n, i = bh % n, t = threadIdx.x;
    const int len = pos[b] + 1, j0 = s * chunk, keys = min(len - j0, chunk);
    const std::int64_t part = std::int64_t(bh) * splits + s;
    const T* k = k_cache + (std::int64_t(bh) * ctx + j0) * HD;
    const T* v = v_cache + (std::int64_t(bh) * ctx + j0) * HD;
    // The positions come from the host before the step, and the keys and values before the newest were written by
    // earlier steps: the first sub-chunk is fetched into L2 while the kernel before this one (which writes the
    // newest) ends. (All of a larger chunk, in every resident block, would overflow L2 and be fetched twice.)
    if (keys > 0)
        for (std::int64_t l = t; l < (std::int64_t(min(keys, decode_chunk)) * HD * sizeof(T) + 127) / 128;
             l += decode_threads) {
            prefetch_l2(reinterpret_cast<const char*>(k) + 128 * l);
            prefetch_l2(reinterpret_cast<const char*>(v) + 128 * l);
        }
    wait_for_prior_grids();
    allow_dependents();
    if (keys <= 0) return;  // the merge reads only chunks below the length
    if (gain && load(gain[bh]) == accum_t<T>(0)) {  // a closed head reads nothing; its output is 0
        if (s == 0)
            for (int d = t; d < HD; d += decode_threads) out[std::int64_t(bh) * HD + d] = store<T>(A(0));
        return;
    }
    const int packs = HD / W;
    const T* q = qkv + std::int64_t(b) * 3 * n * HD + std::int64_t(i) * HD;
    __shared__ A s_q[decode_max_hd], s_p[chunk], s_o[decode_threads * pack_width<T>];  // G·HD ≤ threads·W
    __shared__ A s_m, s_l;
    constexpr int warps = decode_threads / 32;
    __shared__ A s_mw[warps], s_lw[warps];
    int rows_o;  // the rows of s_o (HD each) that the partial sums
    if constexpr (Mma) {
        static_assert(std::is_same_v<T, __nv_bfloat16> && W == 8 && (Dh == 64 || Dh == 128) && Sub <= 2);
        constexpr int per_warp = chunk / warps, tiles = per_warp / 8, quarter = Dh / 4, row_packs = quarter / 8;
        constexpr int steps = Dh / 16;  // k-steps of the scores
        using row_t = uint4[row_packs];  // a lane's quarter of a key row
        const int lane = t % 32, w = t / 32, g = lane / 4, c = lane % 4, kw = w * per_warp;
        auto load_row = [&](row_t& dst, const T* base, int key) {  // a key past the length reads key 0, masked
            const T* row = base + std::int64_t(key < keys ? key : 0) * Dh + c * quarter;
            const uint4* p = reinterpret_cast<const uint4*>(row);
#pragma unroll
            for (int x = 0; x < row_packs; ++x) dst[x] = p[x];
        };
        auto word = [](const row_t& r, int x) { return reinterpret_cast<const unsigned*>(r)[x]; };
        row_t kf[tiles], qf;
#pragma unroll
        for (int j = 0; j < tiles; ++j) load_row(kf[j], k, kw + 8 * j + g);
        // Values early where the registers allow (a block's 64 or 128 keys of a 64-wide head), else per k16 group.
        constexpr bool v_early = Sub * Dh <= 128;
        row_t vf[v_early ? Sub : 1][2];
        if constexpr (v_early)
#pragma unroll
            for (int grp = 0; grp < Sub; ++grp)
#pragma unroll
                for (int h = 0; h < 2; ++h) load_row(vf[grp][h], v, kw + 16 * grp + 8 * h + g);
        {
            const uint4* p = reinterpret_cast<const uint4*>(q + c * quarter);
#pragma unroll
            for (int x = 0; x < row_packs; ++x) qf[x] = p[x];
        }
        // Scores in log2 units (scale·log2 e folded in), so that exp2 is one instruction; the partial's max goes out
        // in natural units.
        const A scale2 = scale * A(1.4426950408889634);
        float sc[tiles][2];
        A m = -INFINITY;
#pragma unroll
        for (int j = 0; j < tiles; ++j) {
            float d[4] = {0, 0, 0, 0};
#pragma unroll
            for (int st = 0; st < steps; ++st) {
                const unsigned a0 = word(qf, 2 * st), a1 = word(qf, 2 * st + 1);
                mma_bf16(d, a0, a0, a1, a1, word(kf[j], 2 * st), word(kf[j], 2 * st + 1));
            }
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                sc[j][e] = kw + 8 * j + 2 * c + e < keys ? d[e] * scale2 : A(-INFINITY);
                m = max(m, sc[j][e]);
            }
        }
        m = max(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = max(m, __shfl_xor_sync(0xffffffffu, m, 2));
        if (lane == 0) s_mw[w] = m;
        __syncthreads();
        A M = s_mw[0];  // finite: the chunk's first key is below the length
#pragma unroll
        for (int r = 1; r < warps; ++r) M = max(M, s_mw[r]);
        unsigned pp[tiles];  // exp(score − M) of the lane's two keys a tile, rounded to bf16, as the sums use them
        A l = 0;
#pragma unroll
        for (int j = 0; j < tiles; ++j) {
            const __nv_bfloat162 p2 = __floats2bfloat162_rn(exp2_approx(sc[j][0] - M), exp2_approx(sc[j][1] - M));
            l += __low2float(p2) + __high2float(p2);
            pp[j] = reinterpret_cast<const unsigned&>(p2);
        }
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float o[Dh / 8][4] = {};
#pragma unroll
        for (int grp = 0; grp < Sub; ++grp) {
            if constexpr (!v_early)
#pragma unroll
                for (int h = 0; h < 2; ++h) load_row(vf[0][h], v, kw + 16 * grp + 8 * h + g);
            const row_t(&vv)[2] = vf[v_early ? grp : 0];
            const unsigned a0 = pp[2 * grp], a2 = pp[2 * grp + 1];
#pragma unroll
            for (int x = 0; x < Dh / 8; ++x)
                mma_bf16(o[x], a0, a0, a2, a2, transposed_pairs(word(vv[0], x)), transposed_pairs(word(vv[1], x)));
        }
        if (g == 0)
#pragma unroll
            for (int x = 0; x < Dh / 8; ++x)
#pragma unroll
                for (int e = 0; e < 2; ++e) s_o[w * Dh + c * quarter + 2 * x + e] = o[x][e];
        if (lane == 0) s_lw[w] = l;  // the partial's max is taken from s_mw again when it is written
        rows_o = warps;
    } else {
        // With one sub-chunk (the shapes with few blocks, where a block's chain of loads sets the time), thread t's
        // first KE key packs (keys t / 2 + c·decode_chunk, packs t % 2, t % 2 + 2, ...) and first VN value packs
        // (below) are requested before q, so that the block's keys and values are in flight together; with more (many
        // blocks, the cache streamed) those registers cost more blocks an SM than they save.
        constexpr int KE = Sub == 1 ? 4 : 0, VN = Sub == 1 ? 4 : 0;
        const P* kr[Sub];
        P kx[Sub][KE > 0 ? KE : 1];
#pragma unroll
        for (int c = 0; c < Sub; ++c) {
            const int j = t / 2 + c * decode_chunk;
            kr[c] = reinterpret_cast<const P*>(k + std::int64_t(j < keys ? j : 0) * HD);
#pragma unroll
            for (int r = 0; r < KE; ++r)
                if (const int e = t % 2 + 2 * r; e < packs) kx[c][r] = kr[c][e];
        }
        const int G = decode_threads / packs;  // values: thread t is pack e = t % packs of row g = t / packs
        const int ve = t % packs, vg = t / packs;
        P vx[VN > 0 ? VN : 1];
#pragma unroll
        for (int r = 0; r < VN; ++r)
            if (const int j = vg + r * G; vg < G && j < keys)
                vx[r] = reinterpret_cast<const P*>(v + std::int64_t(j) * HD)[ve];
        for (int d = t; d < HD; d += decode_threads) s_q[d] = load(q[d]) * scale;
        __syncthreads();

        // Scores
        {
            A dot[Sub];
#pragma unroll
            for (int c = 0; c < Sub; ++c) dot[c] = 0;
#pragma unroll
            for (int r = 0; r < KE; ++r)
                if (const int e = t % 2 + 2 * r; e < packs)
#pragma unroll
                    for (int c = 0; c < Sub; ++c)
#pragma unroll
                        for (int w = 0; w < W; ++w) dot[c] += s_q[e * W + w] * load(kx[c][r].v[w]);
#pragma unroll
            for (int r = KE; 2 * r < packs; ++r) {  // the same packs as e = t % 2 + 2·KE, ... < packs, counted by r
                const int e = t % 2 + 2 * r;
                if (e >= packs) break;
                P x[Sub];
#pragma unroll
                for (int c = 0; c < Sub; ++c) x[c] = kr[c][e];
#pragma unroll
                for (int c = 0; c < Sub; ++c)
#pragma unroll
                    for (int w = 0; w < W; ++w) dot[c] += s_q[e * W + w] * load(x[c].v[w]);
            }
#pragma unroll
            for (int c = 0; c < Sub; ++c) {
                const int j = t / 2 + c * decode_chunk;
                dot[c] += __shfl_xor_sync(0xffffffffu, dot[c], 1);
                if (t % 2 == 0) s_p[j] = j < keys ? dot[c] : A(-INFINITY);
            }
        }
        __syncthreads();
        if (t < 32) {
            A m = -INFINITY;
            for (int j = t; j < chunk; j += 32) m = max(m, s_p[j]);
            m = warp_max(m);
            A l = 0;
            for (int j = t; j < chunk; j += 32) {
                const A p = j < keys ? exp(s_p[j] - m) : A(0);
                s_p[j] = p;
                l += p;
            }
            l = warp_sum(l);
            if (t == 0) s_m = m, s_l = l;
        }
        __syncthreads();

        // Values: rows take every G-th key, the first VN from registers.
        const int e = ve, g = vg;
        if (g < G) {
            A acc[W] = {};
#pragma unroll
            for (int r = 0; r < VN; ++r)
                if (const int j = g + r * G; j < keys) {
                    const A p = s_p[j];
#pragma unroll
                    for (int w = 0; w < W; ++w) acc[w] += p * load(vx[r].v[w]);
                }
            auto add = [&](int j) {
                const A p = s_p[j];
                const P x = reinterpret_cast<const P*>(v + std::int64_t(j) * HD)[e];
#pragma unroll
                for (int w = 0; w < W; ++w) acc[w] += p * load(x.v[w]);
            };
            if constexpr (Dh > 0) {  // the rows' count known: every key of the row in flight at once
                constexpr int rows = decode_threads / (Dh / W);
                static_assert(rows > 0 && chunk % rows == 0, "the rows take every key of the chunk");
#pragma unroll
                for (int r = VN; r < chunk / rows; ++r)
                    if (const int j = g + r * rows; j < keys) add(j);
            } else {
#pragma unroll 4
                for (int j = g + VN * G; j < keys; j += G) add(j);
            }
#pragma unroll
            for (int w = 0; w < W; ++w) s_o[g * HD + e * W + w] = acc[w];
        }
        rows_o = G;
    }
    __syncthreads();
    for (int d = t; d < HD; d += decode_threads) {
        A o = 0;
        for (int r = 0; r < rows_o; ++r) o += s_o[r * HD + d];
        po[part * HD + d] = o;
    }
    if (t == 0) {
        A m = s_m, l = s_l;
        if constexpr (Mma) {
            m = s_mw[0], l = s_lw[0];
            for (int r = 1; r < warps; ++r) m = max(m, s_mw[r]), l += s_lw[r];
            m *= A(0.6931471805599453);  // log2 units to natural ones
        }
        ml[2 * part] = m;
        ml[2 * part + 1] = l;
    }
    // The last of the head's `used` chunks to finish merges them (and leaves its ticket at 0 for the next call).
    __shared__ bool s_last;
    __threadfence();
    __syncthreads();
    const int used = (len + chunk - 1) / chunk;
    if (t == 0) s_last = atomicAdd(tickets + bh, 1u) == unsigned(used - 1);
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    if (t == 0) tickets[bh] = 0;
    decode_merge(out, ml, po, used, gain, bh, HD, splits);
}

// The sub-chunks of a block: 2 (128 keys) where that still gives three blocks per multiprocessor over the whole
// context, else 1; or set_decode_block_keys's choice (4 only there). Measured (docs/BENCHMARKS.md): on an H200
// 128 keys shortened a gpt2 decode step at batch 32 by 3-13%, and 64 stay faster at batch 1; on an H100 SGT's
// 2-head loop passes at batch 32 and context 1024 (512 blocks of 128 keys, or 1,024 of 64) took 2% off the step.
inline int decode_sub(std::int64_t heads, int ctx) {
    if (const int keys = context().decode_block_keys; keys > 0) return keys / decode_chunk;
    return heads * decode_splits(ctx, 2) >= 3 * multiprocessors() ? 2 : 1;
}

}  // namespace detail

template <class T>
void rope_kv_write_at(cuda, T* qkv, T* k_cache, T* v_cache, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                      const std::int32_t* start, int B, int T_, int n, int HD, int ctx) {
    const std::int64_t total = std::int64_t(B) * T_ * n * (HD / 2);
    if (total <= 0) return;
    detail::rope_kv_write_kernel<<<detail::blocks_for(total), detail::threads_per_block, 0, detail::stream()>>>(
        qkv, k_cache, v_cache, cos_table, sin_table, start, B, T_, n, HD, ctx);
    SGT_CUDA_LAUNCHED(rope_kv_write_kernel);
}

template <class T>
void kv_cache_write(cuda, T* k_cache, T* v_cache, const T* qkv, const std::int32_t* start, int B, int T_, int n, int HD,
                    int ctx) {
    const std::int64_t total = std::int64_t(B) * T_ * n * HD;
    if (total <= 0) return;
    detail::kv_cache_write_kernel<<<detail::blocks_for(total), detail::threads_per_block, 0, detail::stream()>>>(
        k_cache, v_cache, qkv, start, B, T_, n, HD, ctx);
    SGT_CUDA_LAUNCHED(kv_cache_write_kernel);
}

template <class T>
void decode_attention(cuda, T* out, const T* qkv, const T* k_cache, const T* v_cache, const std::int32_t* pos, int B,
                      int n, int HD, int ctx, accum_t<T>* workspace, const T* gain) {
    require(HD <= detail::decode_max_hd && HD % 2 == 0,
            "cuda decode_attention: expected an even head size of at most {}, found {}", detail::decode_max_hd, HD);
    if (B <= 0 || n <= 0) return;
    const int width = detail::decode_pack_width<T>(HD, {qkv, k_cache, v_cache});
    require(HD / width <= detail::decode_threads,  // the value sums give each pack of a head row a thread
            "cuda decode_attention: a head of {} elements in packs of {} (as the buffers are aligned) needs {} threads, "
            "more than a block's {}: align q, k and v to 16 bytes",
            HD, width, HD / width, detail::decode_threads);
    using A = accum_t<T>;
    const int sub = detail::decode_sub(std::int64_t(B) * n, ctx);
    const int splits = detail::decode_splits(ctx, sub);  // ≤ decode_splits(ctx): the workspace holds them
    A* ml = workspace;
    A* po = workspace + std::int64_t(B) * n * splits * 2;
    const A scale = A(1.0 / std::sqrt(double(HD)));
    const dim3 grid(splits, B * n);
    // In the thread's scratch, not the workspace: the workspace's layout moves with B and n from call to call.
    unsigned* tickets = detail::context().zeroed_scratch<unsigned>(detail::slot_decode_tickets, std::int64_t(B) * n);
    auto launch = [&]<int W>() {
        auto with = [&]<int Sub>() {
            auto go = [&]<int Dh>() {
                auto with_mma = [&]<bool Mma>() {
                    detail::launch_dependent(detail::decode_partial_kernel<T, W, Sub, Dh, Mma>, grid,
                                             detail::decode_threads, 0, out, ml, po, tickets, qkv, k_cache, v_cache,
                                             pos, gain, n, HD, ctx, splits, scale);
                };
                // The tensor cores for blocks of 128 keys, and of 64 only where set_decode_block_keys asks for them:
                // the shapes that take 64 by themselves (few blocks: batch 1) ran slower on them at 4,096 keys
                // (docs/BENCHMARKS.md, 2026-12-06 22:02).
                if constexpr (std::is_same_v<T, __nv_bfloat16> && Dh > 0 && Sub <= 2)
                    if (detail::context().decode_tensor_cores &&
                        (Sub == 2 || detail::context().decode_block_keys == Sub * detail::decode_chunk))
                        return with_mma.template operator()<true>();
                with_mma.template operator()<false>();
            };
            if constexpr (W == detail::pack_width<T>) {
                if (HD == 64) return go.template operator()<64>();
                if (HD == 128) return go.template operator()<128>();
            }
            go.template operator()<0>();
        };
        if (sub == 4) with.template operator()<4>();
        else if (sub == 2) with.template operator()<2>();
        else with.template operator()<1>();
    };
    switch (width) {
        case 8: if constexpr (detail::pack_width<T> >= 8) { launch.template operator()<8>(); break; } [[fallthrough]];
        case 4: if constexpr (detail::pack_width<T> >= 4) { launch.template operator()<4>(); break; } [[fallthrough]];
        case 2: if constexpr (detail::pack_width<T> >= 2) { launch.template operator()<2>(); break; } [[fallthrough]];
        default: launch.template operator()<1>();
    }
}

}  // namespace sgt
