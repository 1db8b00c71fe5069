// sgt/backend/cuda/decode.cuh: the leaf ops of cached decoding on the GPU (backend/cpu/decode.hpp gives the
// layouts): RoPE at per-sequence positions, appending keys and values to a cache slot, and decode attention.
//
// Decode attention is split along the keys, as flash-decoding does: one query per (sequence, head) against up
// to max_context cached keys is too little work for one block, so block (s, b·n + i) takes the keys of chunk s
// (decode_chunk of them), keeps a running max, sum and weighted value sum per warp (the online softmax), merges
// its warps, and writes its partial (max, sum, unnormalised output); a second kernel merges the chunks. The
// number of chunks is fixed by max_context, not by the current length (chunks past the length write nothing
// that is read), so a recorded decode step replays at every length. Arithmetic in accum_t<T>.
#pragma once

#include <cmath>
#include <cstdint>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {

constexpr int decode_warps = 4;
constexpr int decode_max_lanes = 8;  // head dims per lane: HD ≤ 256

template <class T>
__global__ void rope_at_kernel(T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table,
                               const std::int32_t* start, int B, int T_, int n_heads, int HD, std::int64_t row_stride) {
    using A = accum_t<T>;
    const int half = HD / 2;
    const std::int64_t total = std::int64_t(B) * T_ * n_heads * half;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
         i += std::int64_t(gridDim.x) * blockDim.x) {
        const int j = int(i % half);
        const std::int64_t rest = i / half;
        const int h = int(rest % n_heads);
        const std::int64_t bt = rest / n_heads;
        const int b = int(bt / T_), t = int(bt % T_);
        const std::int64_t pos = std::int64_t(start[b]) + t;
        T* v = x + bt * row_stride + std::int64_t(h) * HD;
        const A c = cos_table[pos * half + j], s = sin_table[pos * half + j];
        const A x1 = load(v[j]), x2 = load(v[j + half]);
        v[j] = store<T>(x1 * c - x2 * s);
        v[j + half] = store<T>(x2 * c + x1 * s);
    }
}

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

template <class A>
__device__ inline A warp_sum(A x) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Block (s, bh): keys [s·chunk, min(len, (s+1)·chunk)) of head bh. ml (B·n, splits, 2): max and sum; po
// (B·n, splits, HD): Σ_j exp(score_j − max) v_j.
template <class T>
__global__ void decode_partial_kernel(accum_t<T>* ml, accum_t<T>* po, const T* qkv, const T* k_cache,
                                      const T* v_cache, const std::int32_t* pos, int n, int HD, int ctx, int splits,
                                      accum_t<T> scale) {
    using A = accum_t<T>;
    const int s = blockIdx.x, bh = blockIdx.y, b = bh / n, i = bh % n;
    const int len = pos[b] + 1, j0 = s * decode_chunk, j1 = min(len, j0 + decode_chunk);
    const std::int64_t part = std::int64_t(bh) * splits + s;
    if (j0 >= len) return;  // the merge reads only chunks below the length
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const T* q = qkv + std::int64_t(b) * 3 * n * HD + std::int64_t(i) * HD;
    const T* k = k_cache + std::int64_t(bh) * ctx * HD;
    const T* v = v_cache + std::int64_t(bh) * ctx * HD;
    A qr[decode_max_lanes], acc[decode_max_lanes];
#pragma unroll
    for (int e = 0; e < decode_max_lanes; ++e) {
        const int d = lane + 32 * e;
        qr[e] = d < HD ? load(q[d]) * scale : A(0);
        acc[e] = 0;
    }
    A m = -INFINITY, l = 0;
    for (int j = j0 + warp; j < j1; j += decode_warps) {
        const T* kj = k + std::int64_t(j) * HD;
        A dot = 0;
#pragma unroll
        for (int e = 0; e < decode_max_lanes; ++e) {
            const int d = lane + 32 * e;
            if (d < HD) dot += qr[e] * load(kj[d]);
        }
        dot = warp_sum(dot);
        const A m_new = max(m, dot), c = exp(m - m_new), p = exp(dot - m_new);
        l = l * c + p;
        const T* vj = v + std::int64_t(j) * HD;
#pragma unroll
        for (int e = 0; e < decode_max_lanes; ++e) {
            const int d = lane + 32 * e;
            if (d < HD) acc[e] = acc[e] * c + p * load(vj[d]);
        }
        m = m_new;
    }
    // Merge the warps (a warp with no key has m = −∞ and contributes nothing).
    __shared__ A s_m[decode_warps], s_l[decode_warps];
    __shared__ A s_o[decode_warps][32 * decode_max_lanes];
    if (lane == 0) s_m[warp] = m, s_l[warp] = l;
#pragma unroll
    for (int e = 0; e < decode_max_lanes; ++e) s_o[warp][lane + 32 * e] = acc[e];
    __syncthreads();
    A M = -INFINITY;
    for (int w = 0; w < decode_warps; ++w) M = max(M, s_m[w]);
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        A o = 0;
        for (int w = 0; w < decode_warps; ++w)
            if (s_m[w] > -INFINITY) o += s_o[w][d] * exp(s_m[w] - M);
        po[part * HD + d] = o;
    }
    if (threadIdx.x == 0) {
        A L = 0;
        for (int w = 0; w < decode_warps; ++w)
            if (s_m[w] > -INFINITY) L += s_l[w] * exp(s_m[w] - M);
        ml[2 * part] = M;
        ml[2 * part + 1] = L;
    }
}

// Block bh merges the chunks below the length: out = Σ_s e^{m_s − M} o_s / Σ_s e^{m_s − M} l_s.
template <class T>
__global__ void decode_merge_kernel(T* out, const accum_t<T>* ml, const accum_t<T>* po, const std::int32_t* pos, int n,
                                    int HD, int splits) {
    using A = accum_t<T>;
    const int bh = blockIdx.x, b = bh / n;
    const int used = (pos[b] + decode_chunk) / decode_chunk;  // chunks holding keys 0..pos[b]
    const A* m = ml + std::int64_t(bh) * splits * 2;
    A M = -INFINITY;
    for (int s = 0; s < used; ++s) M = max(M, m[2 * s]);
    A L = 0;
    for (int s = 0; s < used; ++s) L += m[2 * s + 1] * exp(m[2 * s] - M);
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        A o = 0;
        for (int s = 0; s < used; ++s) o += po[(std::int64_t(bh) * splits + s) * HD + d] * exp(m[2 * s] - M);
        out[std::int64_t(bh) * HD + d] = store<T>(o / L);
    }
}

}  // namespace detail

template <class T>
void rope_forward_at(cuda, T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table, const std::int32_t* start,
                     int B, int T_, int n_heads, int HD, std::int64_t row_stride) {
    const std::int64_t total = std::int64_t(B) * T_ * n_heads * (HD / 2);
    if (total <= 0) return;
    detail::rope_at_kernel<<<detail::blocks_for(total), detail::threads_per_block, 0, detail::stream()>>>(
        x, cos_table, sin_table, start, B, T_, n_heads, HD, row_stride);
    SGT_CUDA_LAUNCHED(rope_at_kernel);
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
                      int n, int HD, int ctx, accum_t<T>* workspace) {
    require(HD <= 32 * detail::decode_max_lanes, "cuda decode_attention: head size {} is above the supported {}", HD,
            32 * detail::decode_max_lanes);
    if (B <= 0 || n <= 0) return;
    using A = accum_t<T>;
    const int splits = detail::decode_splits(ctx);
    A* ml = workspace;
    A* po = workspace + std::int64_t(B) * n * splits * 2;
    detail::decode_partial_kernel<<<dim3(splits, B * n), 32 * detail::decode_warps, 0, detail::stream()>>>(
        ml, po, qkv, k_cache, v_cache, pos, n, HD, ctx, splits, A(1.0 / std::sqrt(double(HD))));
    SGT_CUDA_LAUNCHED(decode_partial_kernel);
    detail::decode_merge_kernel<<<B * n, 128, 0, detail::stream()>>>(out, ml, po, pos, n, HD, splits);
    SGT_CUDA_LAUNCHED(decode_merge_kernel);
}

}  // namespace sgt
