// sgt/backend/cuda/flash_attention.cuh: fused causal attention for bf16 (Eq. 1-3), forward and backward, on the
// tensor cores through WMMA (16x16x16 bf16 products, fp32 accumulation), in the manner of FlashAttention-2:
// the T x T matrices never reach device memory.
//
// Forward: a block takes 64 queries of one (sequence, head), 16 per warp, and walks the key tiles up to the
// diagonal: S = q kᵀ/√HD into shared memory, the online softmax (running max m and sum l per row, the output
// rescaled by exp(m_old − m_new)), then O += P v. It saves the output and each row's log-sum-exp m + log l.
// The last-row entropy (Eq. 4) is computed exactly, from that row's scores, by a small kernel of its own.
// Backward, deterministic (no atomics): D = rowsum(dO ⊙ O); one kernel per key tile accumulates dK and dV over
// the query tiles, another per query tile accumulates dQ over the key tiles, each recomputing P = exp(S − lse)
// and dS = P ⊙ (dP − D) with dP = dO vᵀ.
// Layouts as backend/cpu/attention.hpp: qkv (B, T, 3, n, HD), out and dout (B, T, n, HD). The saved buffer
// holds the log-sum-exp (B, n, T) as float, then the output (B, T, n, HD).
#pragma once

#include <cub/block/block_reduce.cuh>
#include <mma.h>

#include <cmath>
#include <cstdint>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt::detail::flash {

using bf16 = __nv_bfloat16;
namespace wmma = nvcuda::wmma;

constexpr int tile = 64;  // queries and keys per tile
constexpr int warps = 4;  // 16 rows of a tile each
constexpr int threads = 32 * warps;
constexpr int ld_score = tile + 4;  // float score tiles (WMMA wants a multiple of 4 for float)
constexpr int ld_prob = tile + 8;   // bf16 probability tiles (a multiple of 8 for 16-bit types)
template <int HD>
constexpr int ld_tile = HD + 8;  // bf16 q, k, v, dO tiles
template <int HD>
constexpr int ld_acc = HD + 4;  // float output tiles

using frag_a = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using frag_b_col = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using frag_b_row = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using frag_acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// dst (64, ld) = rows [r0, r0 + 64) of a head's vectors, row t at src + t·stride; zeros past T.
template <int HD>
__device__ void load_tile(bf16* dst, const bf16* src, int r0, int T_, std::int64_t stride) {
    constexpr int chunks = HD / 8;  // 16-byte chunks per row
    for (int i = threadIdx.x; i < tile * chunks; i += threads) {
        const int r = i / chunks, c = (i % chunks) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r0 + r < T_) v = *reinterpret_cast<const uint4*>(src + std::int64_t(r0 + r) * stride + c);
        *reinterpret_cast<uint4*>(dst + r * ld_tile<HD> + c) = v;
    }
}

// acc (16 x 64) = a (16 x HD, rows of a row-major tile) · b (64 x HD, rows of a row-major tile)ᵀ, stored to dst.
template <int HD>
__device__ void rows_times_rows_t(float* dst, const bf16* a, const bf16* b) {
    frag_a fa[HD / 16];  // the warp's 16 rows, loaded once for the four column blocks
    frag_b_col fb;
    frag_acc acc;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) wmma::load_matrix_sync(fa[kk], a + kk * 16, ld_tile<HD>);
#pragma unroll
    for (int nt = 0; nt < tile / 16; ++nt) {
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
            wmma::load_matrix_sync(fb, b + nt * 16 * ld_tile<HD> + kk * 16, ld_tile<HD>);
            wmma::mma_sync(acc, fa[kk], fb, acc);
        }
        wmma::store_matrix_sync(dst + nt * 16, acc, ld_score, wmma::mem_row_major);
    }
}

// acc[nt] (16 x HD) += p (16 x 64, bf16, ld_prob) · b (64 x HD, a row-major tile).
template <int HD>
__device__ void accumulate_product(frag_acc (&acc)[HD / 16], const bf16* p, const bf16* b) {
    frag_a fa;
    frag_b_row fb;
#pragma unroll
    for (int kk = 0; kk < tile / 16; ++kk) {
        wmma::load_matrix_sync(fa, p + kk * 16, ld_prob);
#pragma unroll
        for (int nt = 0; nt < HD / 16; ++nt) {
            wmma::load_matrix_sync(fb, b + kk * 16 * ld_tile<HD> + nt * 16, ld_tile<HD>);
            wmma::mma_sync(acc[nt], fa, fb, acc[nt]);
        }
    }
}

// Writes a warp's 16 x HD accumulators, times `scale`, as bf16 rows r0.. of dst (row t at dst + t·stride),
// through the warp's float staging area.
template <int HD>
__device__ void store_rows(bf16* dst, std::int64_t stride, int r0, int T_, frag_acc (&acc)[HD / 16], float* stage,
                           float scale) {
#pragma unroll
    for (int nt = 0; nt < HD / 16; ++nt) wmma::store_matrix_sync(stage + nt * 16, acc[nt], ld_acc<HD>, wmma::mem_row_major);
    __syncwarp();
    const int lane = threadIdx.x % 32;
    for (int i = lane; i < 16 * HD; i += 32) {
        const int r = i / HD, d = i % HD;
        if (r0 + r < T_) dst[std::int64_t(r0 + r) * stride + d] = __float2bfloat16(stage[r * ld_acc<HD> + d] * scale);
    }
    __syncwarp();
}

template <int HD>
constexpr std::size_t forward_smem() {
    return 3 * tile * ld_tile<HD> * sizeof(bf16) + warps * 16 * ld_score * sizeof(float) +
           warps * 16 * ld_prob * sizeof(bf16) + warps * 16 * ld_acc<HD> * sizeof(float) + warps * 32 * sizeof(float);
}

template <int HD>
__global__ void __launch_bounds__(threads) forward_kernel(bf16* out, float* lse, bf16* saved_out, const bf16* qkv,
                                                          int T_, int n, float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    bf16* q = reinterpret_cast<bf16*>(smem);
    bf16* k = q + tile * ld_tile<HD>;
    bf16* v = k + tile * ld_tile<HD>;
    float* s = reinterpret_cast<float*>(v + tile * ld_tile<HD>);
    bf16* p = reinterpret_cast<bf16*>(s + warps * 16 * ld_score);
    float* o = reinterpret_cast<float*>(p + warps * 16 * ld_prob);
    float* ml = o + warps * 16 * ld_acc<HD>;

    const int qt = blockIdx.x, bh = blockIdx.y, b = bh / n, h = bh % n;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int q0 = qt * tile;
    const std::int64_t stride = 3 * std::int64_t(n) * HD;
    const bf16* base = qkv + std::int64_t(b) * T_ * stride + std::int64_t(h) * HD;
    float* sw = s + warp * 16 * ld_score;
    bf16* pw = p + warp * 16 * ld_prob;
    float* ow = o + warp * 16 * ld_acc<HD>;
    float* mw = ml + warp * 32;  // m of the warp's 16 rows, then l

    load_tile<HD>(q, base, q0, T_, stride);
    for (int i = lane; i < 16 * ld_acc<HD>; i += 32) ow[i] = 0.0f;
    if (lane < 16) {
        mw[lane] = -INFINITY;
        mw[16 + lane] = 0.0f;
    }
    // Each lane pair owns one row of the warp's 16: lane 2r takes columns 0..31, lane 2r+1 columns 32..63.
    const int r = lane / 2, half = lane % 2;
    const int query = q0 + warp * 16 + r;
    for (int kt = 0; kt <= qt; ++kt) {
        __syncthreads();  // the previous tile is no longer read
        load_tile<HD>(k, base + std::int64_t(n) * HD, kt * tile, T_, stride);
        load_tile<HD>(v, base + 2 * std::int64_t(n) * HD, kt * tile, T_, stride);
        __syncthreads();
        rows_times_rows_t<HD>(sw, q + warp * 16 * ld_tile<HD>, k);
        __syncwarp();
        float* row = sw + r * ld_score + half * 32;
        float mx = -INFINITY;
        for (int c = 0; c < 32; ++c) {
            const int key = kt * tile + half * 32 + c;
            const float x = key <= query && key < T_ ? row[c] * scale : -INFINITY;
            row[c] = x;
            mx = fmaxf(mx, x);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_old = mw[r], m_new = fmaxf(m_old, mx);
        const float corr = m_new == -INFINITY ? 1.0f : __expf(m_old - m_new);
        float sum = 0.0f;
        for (int c = 0; c < 32; ++c) {
            const float e = row[c] == -INFINITY ? 0.0f : __expf(row[c] - m_new);
            pw[r * ld_prob + half * 32 + c] = __float2bfloat16(e);
            sum += e;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        for (int d = half * (HD / 2); d < (half + 1) * (HD / 2); ++d) ow[r * ld_acc<HD> + d] *= corr;
        __syncwarp();
        if (half == 0) {
            mw[r] = m_new;
            mw[16 + r] = mw[16 + r] * corr + sum;
        }
        __syncwarp();
        frag_acc acc[HD / 16];
#pragma unroll
        for (int nt = 0; nt < HD / 16; ++nt) wmma::load_matrix_sync(acc[nt], ow + nt * 16, ld_acc<HD>, wmma::mem_row_major);
        accumulate_product<HD>(acc, pw, v);
#pragma unroll
        for (int nt = 0; nt < HD / 16; ++nt) wmma::store_matrix_sync(ow + nt * 16, acc[nt], ld_acc<HD>, wmma::mem_row_major);
        __syncwarp();
    }
    if (query < T_) {
        const float l = mw[16 + r], inv = 1.0f / l;
        const std::int64_t at = (std::int64_t(b) * T_ + query) * n * HD + std::int64_t(h) * HD;
        for (int d = half * (HD / 2); d < (half + 1) * (HD / 2); ++d) {
            const bf16 y = __float2bfloat16(ow[r * ld_acc<HD> + d] * inv);
            out[at + d] = y;
            saved_out[at + d] = y;
        }
        if (half == 0) lse[std::int64_t(bh) * T_ + query] = mw[r] + logf(l);
    }
}

// entropy (B, n): the last query row's scores, softmax and length-normalised entropy, in float. One block per
// (sequence, head), one thread per key: each reads its key row in 16-byte packs (HD a multiple of 8), all of them
// at once, so that the block keeps many reads in flight; the last query sits in shared memory. Its callers (cuDNN's
// path and the fused kernels) run head sizes that are multiples of 8.
constexpr int entropy_threads = 512;
__global__ inline void last_row_entropy_kernel(double* entropy, const bf16* qkv, int T_, int n, int HD, float scale) {
    using reduce = cub::BlockReduce<float, entropy_threads>;
    using P = pack<bf16, 8>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ float shared, q[128];
    extern __shared__ float scores[];  // (T)
    const int bh = blockIdx.x, b = bh / n, h = bh % n;
    const std::int64_t stride = 3 * std::int64_t(n) * HD;
    const bf16* base = qkv + std::int64_t(b) * T_ * stride + std::int64_t(h) * HD;
    for (int d = threadIdx.x; d < HD; d += entropy_threads) q[d] = __bfloat162float(base[std::int64_t(T_ - 1) * stride + d]);
    __syncthreads();
    float m = -INFINITY;
    for (int j = threadIdx.x; j < T_; j += entropy_threads) {
        const P* kj = reinterpret_cast<const P*>(base + std::int64_t(j) * stride + std::int64_t(n) * HD);
        float dot = 0.0f;
        for (int c = 0; c < HD / 8; ++c) {
            const P k = kj[c];
#pragma unroll
            for (int e = 0; e < 8; ++e) dot += q[8 * c + e] * __bfloat162float(k.v[e]);
        }
        scores[j] = dot * scale;
        m = fmaxf(m, dot * scale);
    }
    __syncthreads();
    m = reduce(temp).Reduce(m, ::cuda::maximum<float>{});
    if (threadIdx.x == 0) shared = m;
    __syncthreads();
    m = shared;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < T_; j += entropy_threads) sum += expf(scores[j] - m);
    __syncthreads();
    sum = reduce(temp).Sum(sum);
    if (threadIdx.x == 0) shared = sum;
    __syncthreads();
    const float log_sum = logf(shared);
    float hsum = 0.0f;
    for (int j = threadIdx.x; j < T_; j += entropy_threads) {
        const float lp = scores[j] - m - log_sum, pj = expf(lp);
        if (pj > 0.0f) hsum -= pj * lp;
    }
    __syncthreads();
    hsum = reduce(temp).Sum(hsum);
    if (threadIdx.x == 0) entropy[bh] = T_ < 2 ? 0.0 : double(hsum) / log(double(T_));
}

// D (B, n, T) = Σ_d dO ⊙ O, one warp per row.
__global__ inline void delta_kernel(float* delta, const bf16* dout, const bf16* saved_out, int T_, int n, int HD,
                                    std::int64_t rows) {
    const std::int64_t row = blockIdx.x * std::int64_t(blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    const int lane = threadIdx.x % 32;
    const int t = int(row % T_);
    const std::int64_t bh = row / T_;
    const int b = int(bh / n), h = int(bh % n);
    const std::int64_t at = (std::int64_t(b) * T_ + t) * n * HD + std::int64_t(h) * HD;
    float s = 0.0f;
    for (int d = lane; d < HD; d += 32) s += __bfloat162float(dout[at + d]) * __bfloat162float(saved_out[at + d]);
    for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) delta[row] = s;
}

template <int HD>
constexpr std::size_t backward_smem() {
    return 4 * tile * ld_tile<HD> * sizeof(bf16) + 2 * warps * 16 * ld_score * sizeof(float) +
           2 * warps * 16 * ld_prob * sizeof(bf16) + warps * 16 * ld_acc<HD> * sizeof(float) + 2 * tile * sizeof(float);
}

// From a warp's float score and dP tiles (16 x 64, ld_score), the bf16 P and dS tiles (ld_prob). Element (i, j)
// is query query_of(i, j), key key_of(i, j); lse and delta are indexed by the query's row in the query tile.
template <class QueryOf, class KeyOf>
__device__ void probabilities_and_scores(bf16* p, bf16* ds, const float* s, const float* dp, const float* lse,
                                         const float* delta, int T_, float scale, QueryOf query_of, KeyOf key_of) {
    const int lane = threadIdx.x % 32;
    for (int i = lane; i < 16 * tile; i += 32) {
        const int a = i / tile, c = i % tile;
        const int query = query_of(a, c), key = key_of(a, c), qi = query % tile;
        float pv = 0.0f, dv = 0.0f;
        if (key <= query && query < T_) {
            pv = __expf(s[a * ld_score + c] * scale - lse[qi]);
            dv = pv * (dp[a * ld_score + c] - delta[qi]);
        }
        p[a * ld_prob + c] = __float2bfloat16(pv);
        ds[a * ld_prob + c] = __float2bfloat16(dv);
    }
    __syncwarp();
}

// The shared memory of a backward block: four (64, HD) bf16 tiles (the block's own two, then the two it walks
// over), the warps' score and dP tiles (float), their P and dS tiles (bf16), output staging, and the
// log-sum-exp and D of the current 64 queries.
template <int HD>
struct backward_tiles {
    bf16 *own0, *own1, *walk0, *walk1;
    float *s, *dp;
    bf16 *p, *ds;
    float *stage, *lse, *delta;
    __device__ explicit backward_tiles(unsigned char* smem) {
        own0 = reinterpret_cast<bf16*>(smem);
        own1 = own0 + tile * ld_tile<HD>;
        walk0 = own1 + tile * ld_tile<HD>;
        walk1 = walk0 + tile * ld_tile<HD>;
        s = reinterpret_cast<float*>(walk1 + tile * ld_tile<HD>);
        dp = s + warps * 16 * ld_score;
        p = reinterpret_cast<bf16*>(dp + warps * 16 * ld_score);
        ds = p + warps * 16 * ld_prob;
        stage = reinterpret_cast<float*>(ds + warps * 16 * ld_prob);
        lse = stage + warps * 16 * ld_acc<HD>;
        delta = lse + tile;
    }
    // lse and delta of queries q0.. of (sequence, head) bh; zeros past T.
    __device__ void load_row_stats(const float* lse_all, const float* delta_all, int bh, int q0, int T_) {
        for (int i = threadIdx.x; i < tile; i += threads) {
            const bool in = q0 + i < T_;
            lse[i] = in ? lse_all[std::int64_t(bh) * T_ + q0 + i] : 0.0f;
            delta[i] = in ? delta_all[std::int64_t(bh) * T_ + q0 + i] : 0.0f;
        }
    }
};

// dK and dV of the 64 keys of tile blockIdx.x, warp w taking keys 16w..16w+15, over the query tiles from the
// diagonal on: dV += Pᵀ dO, dK += dSᵀ q / √HD, with Pᵀ and dPᵀ computed directly as k qᵀ and v dOᵀ.
template <int HD>
__global__ void __launch_bounds__(threads) backward_kv_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv,
                                                              const float* lse_all, const float* delta_all, int T_, int n,
                                                              float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    backward_tiles<HD> sm(smem);
    bf16 *k = sm.own0, *v = sm.own1, *q = sm.walk0, *dO = sm.walk1;
    float *s = sm.s, *dp = sm.dp, *stage = sm.stage, *lse = sm.lse, *delta = sm.delta;
    bf16 *p = sm.p, *ds = sm.ds;

    const int kt = blockIdx.x, bh = blockIdx.y, b = bh / n, h = bh % n;
    const int warp = threadIdx.x / 32;
    const int k0 = kt * tile;
    const std::int64_t stride = 3 * std::int64_t(n) * HD, nh = std::int64_t(n) * HD;
    const bf16* base = qkv + std::int64_t(b) * T_ * stride + std::int64_t(h) * HD;
    const bf16* dbase = dout + std::int64_t(b) * T_ * nh + std::int64_t(h) * HD;
    load_tile<HD>(k, base + nh, k0, T_, stride);
    load_tile<HD>(v, base + 2 * nh, k0, T_, stride);
    frag_acc dk[HD / 16], dv[HD / 16];
#pragma unroll
    for (int nt = 0; nt < HD / 16; ++nt) {
        wmma::fill_fragment(dk[nt], 0.0f);
        wmma::fill_fragment(dv[nt], 0.0f);
    }
    float* sw = s + warp * 16 * ld_score;
    float* dpw = dp + warp * 16 * ld_score;
    bf16* pw = p + warp * 16 * ld_prob;
    bf16* dsw = ds + warp * 16 * ld_prob;
    const int tiles = (T_ + tile - 1) / tile;
    for (int qt = kt; qt < tiles; ++qt) {
        const int q0 = qt * tile;
        __syncthreads();
        load_tile<HD>(q, base, q0, T_, stride);
        load_tile<HD>(dO, dbase, q0, T_, nh);
        sm.load_row_stats(lse_all, delta_all, bh, q0, T_);
        __syncthreads();
        rows_times_rows_t<HD>(sw, k + warp * 16 * ld_tile<HD>, q);    // Sᵀ (16 keys x 64 queries)
        rows_times_rows_t<HD>(dpw, v + warp * 16 * ld_tile<HD>, dO);  // dPᵀ
        __syncwarp();
        probabilities_and_scores(
            pw, dsw, sw, dpw, lse, delta, T_, scale, [&](int, int c) { return q0 + c; },
            [&](int a, int) { return k0 + warp * 16 + a; });
        accumulate_product<HD>(dv, pw, dO);
        accumulate_product<HD>(dk, dsw, q);
    }
    float* sg = stage + warp * 16 * ld_acc<HD>;
    store_rows<HD>(dqkv + std::int64_t(b) * T_ * stride + nh + std::int64_t(h) * HD, stride, k0 + warp * 16, T_, dk, sg,
                   scale);
    store_rows<HD>(dqkv + std::int64_t(b) * T_ * stride + 2 * nh + std::int64_t(h) * HD, stride, k0 + warp * 16, T_, dv,
                   sg, 1.0f);
}

// dQ of the 64 queries of tile blockIdx.x, warp w taking queries 16w..16w+15, over the key tiles up to the
// diagonal: dQ += dS k / √HD with S = q kᵀ and dP = dO vᵀ.
template <int HD>
__global__ void __launch_bounds__(threads) backward_q_kernel(bf16* dqkv, const bf16* dout, const bf16* qkv,
                                                             const float* lse_all, const float* delta_all, int T_, int n,
                                                             float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    backward_tiles<HD> sm(smem);
    bf16 *q = sm.own0, *dO = sm.own1, *k = sm.walk0, *v = sm.walk1;
    float *s = sm.s, *dp = sm.dp, *stage = sm.stage, *lse = sm.lse, *delta = sm.delta;
    bf16 *p = sm.p, *ds = sm.ds;

    const int qt = blockIdx.x, bh = blockIdx.y, b = bh / n, h = bh % n;
    const int warp = threadIdx.x / 32;
    const int q0 = qt * tile;
    const std::int64_t stride = 3 * std::int64_t(n) * HD, nh = std::int64_t(n) * HD;
    const bf16* base = qkv + std::int64_t(b) * T_ * stride + std::int64_t(h) * HD;
    load_tile<HD>(q, base, q0, T_, stride);
    load_tile<HD>(dO, dout + std::int64_t(b) * T_ * nh + std::int64_t(h) * HD, q0, T_, nh);
    sm.load_row_stats(lse_all, delta_all, bh, q0, T_);
    frag_acc dq[HD / 16];
#pragma unroll
    for (int nt = 0; nt < HD / 16; ++nt) wmma::fill_fragment(dq[nt], 0.0f);
    float* sw = s + warp * 16 * ld_score;
    float* dpw = dp + warp * 16 * ld_score;
    bf16* pw = p + warp * 16 * ld_prob;
    bf16* dsw = ds + warp * 16 * ld_prob;
    for (int kt = 0; kt <= qt; ++kt) {
        const int k0 = kt * tile;
        __syncthreads();
        load_tile<HD>(k, base + nh, k0, T_, stride);
        load_tile<HD>(v, base + 2 * nh, k0, T_, stride);
        __syncthreads();
        rows_times_rows_t<HD>(sw, q + warp * 16 * ld_tile<HD>, k);    // S (16 queries x 64 keys)
        rows_times_rows_t<HD>(dpw, dO + warp * 16 * ld_tile<HD>, v);  // dP
        __syncwarp();
        probabilities_and_scores(
            pw, dsw, sw, dpw, lse, delta, T_, scale, [&](int a, int) { return q0 + warp * 16 + a; },
            [&](int, int c) { return k0 + c; });
        accumulate_product<HD>(dq, dsw, k);
    }
    store_rows<HD>(dqkv + std::int64_t(b) * T_ * stride + std::int64_t(h) * HD, stride, q0 + warp * 16, T_, dq,
                   stage + warp * 16 * ld_acc<HD>, scale);
}

// entropy (B, n) from qkv (B, T, 3, n, HD) by last_row_entropy_kernel (also cuDNN's path, attention.cuh).
inline void last_row_entropy(double* entropy, const bf16* qkv, int B, int T_, int n, int HD) {
    const std::size_t smem = std::size_t(T_) * sizeof(float);
    if (smem > 48 * 1024) allow_smem(last_row_entropy_kernel, smem);
    last_row_entropy_kernel<<<B * n, entropy_threads, smem, detail::stream()>>>(entropy, qkv, T_, n, HD,
                                                                              float(1.0 / std::sqrt(double(HD))));
    SGT_CUDA_LAUNCHED(last_row_entropy_kernel);
}

template <int HD>
void forward(bf16* out, bf16* saved, double* entropy, const bf16* qkv, int B, int T_, int n) {
    const std::int64_t rows = std::int64_t(B) * n * T_;
    float* lse = reinterpret_cast<float*>(saved);
    bf16* saved_out = saved + (2 * rows + 7) / 8 * 8;
    const float scale = float(1.0 / std::sqrt(double(HD)));
    static const bool ready = (allow_smem(forward_kernel<HD>, forward_smem<HD>()), true);  // once per program
    (void)ready;
    forward_kernel<HD><<<dim3((T_ + tile - 1) / tile, B * n), threads, forward_smem<HD>(), detail::stream()>>>(out, lse, saved_out, qkv, T_, n,
                                                                                          scale);
    SGT_CUDA_LAUNCHED(forward_kernel);
    if (entropy) last_row_entropy(entropy, qkv, B, T_, n, HD);
}

template <int HD>
void backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* saved, int B, int T_, int n) {
    const std::int64_t rows = std::int64_t(B) * n * T_;
    const float* lse = reinterpret_cast<const float*>(saved);
    const bf16* saved_out = saved + (2 * rows + 7) / 8 * 8;
    float* delta = context().scratch<float>(slot_attn_dp, rows);
    delta_kernel<<<unsigned((rows + 7) / 8), 256, 0, detail::stream()>>>(delta, dout, saved_out, T_, n, HD, rows);
    SGT_CUDA_LAUNCHED(delta_kernel);
    const float scale = float(1.0 / std::sqrt(double(HD)));
    const dim3 grid((T_ + tile - 1) / tile, B * n);
    static const bool ready = (allow_smem(backward_kv_kernel<HD>, backward_smem<HD>()),
                               allow_smem(backward_q_kernel<HD>, backward_smem<HD>()), true);  // once per program
    (void)ready;
    backward_kv_kernel<HD><<<grid, threads, backward_smem<HD>(), detail::stream()>>>(dqkv, dout, qkv, lse, delta, T_, n, scale);
    SGT_CUDA_LAUNCHED(backward_kv_kernel);
    backward_q_kernel<HD><<<grid, threads, backward_smem<HD>(), detail::stream()>>>(dqkv, dout, qkv, lse, delta, T_, n, scale);
    SGT_CUDA_LAUNCHED(backward_q_kernel);
}

// Calls f.template operator()<HD>() for the head sizes the fused kernels are built for (fused_attention_kernels).
template <class F>
void with_head_dim(int HD, F&& f) {
    switch (HD) {
        case 32: return f.template operator()<32>();
        case 64: return f.template operator()<64>();
        case 96: return f.template operator()<96>();
        case 128: return f.template operator()<128>();
        default: fail("fused attention: no kernel for head size {}", HD);
    }
}

}  // namespace sgt::detail::flash
