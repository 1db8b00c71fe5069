// sgt/backend/cuda/rope.cuh: rotary position embedding, Hugging Face LLaMA's rotate-half convention
// (backend/cpu/rope.hpp states it; the angles are core/rope_tables.hpp's), forward and backward. The tables are kept in accum_t<T> (float for bf16).
#pragma once

#include <cmath>
#include <vector>

#include "sgt/core/rope_tables.hpp"  // the tables are computed as on the CPU
#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

// cos_table, sin_table (T, HD/2), device memory; computed on the host in double exactly as the CPU backend.
template <class A>
void rope_tables(cuda, A* cos_table, A* sin_table, int T_, int HD, double base) {
    const int half = HD / 2;
    std::vector<A> c(std::size_t(T_) * half), s(c.size());
    detail::rope_tables_host(c.data(), s.data(), T_, HD, base);
    copy_from_host(cuda{}, cos_table, c.data(), std::int64_t(c.size()));
    copy_from_host(cuda{}, sin_table, s.data(), std::int64_t(s.size()));
}

namespace detail {
// The rotation of one RoPE pair: (x1, x2) = (x[j], x[j + HD/2]) of a head vector, turned by the angle whose cosine
// and sine are c and s (−s for the inverse): (x1·c − x2·s, x2·c + x1·s). Every CUDA kernel that rotates q or k calls
// it (the CPU's is backend/cpu/rope.hpp's rope_row).
template <class A>
__device__ __forceinline__ void rotate_pair(A& x1, A& x2, A c, A s) {
    const A r1 = x1 * c - x2 * s;
    x2 = x2 * c + x1 * s;
    x1 = r1;
}

// Thread i rotates pairs (j, j + HD/2) for W consecutive j of one head vector (W = 1, or a 16-byte pack).
template <int W, class T>
__global__ void rope_kernel(T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_,
                            int n_heads, int HD, std::int64_t row_stride, accum_t<T> sign) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    const int half = HD / 2, chunks = half / W;
    const std::int64_t total = std::int64_t(B) * T_ * n_heads * chunks;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
         i += std::int64_t(gridDim.x) * blockDim.x) {
        const int j = int(i % chunks) * W;
        const std::int64_t rest = i / chunks;
        const int h = int(rest % n_heads);
        const std::int64_t bt = rest / n_heads;
        const int t = int(bt % T_);
        T* v = x + bt * row_stride + std::int64_t(h) * HD;
        P& p1 = *reinterpret_cast<P*>(v + j);
        P& p2 = *reinterpret_cast<P*>(v + j + half);
        P a = p1, b = p2;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            A x1 = load(a.v[k]), x2 = load(b.v[k]);
            rotate_pair(x1, x2, cos_table[t * half + j + k], sign * sin_table[t * half + j + k]);
            a.v[k] = store<T>(x1);
            b.v[k] = store<T>(x2);
        }
        p1 = a;
        p2 = b;
    }
}

template <class T>
void rope_apply(T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_, int n_heads, int HD,
                std::int64_t row_stride, bool inverse) {
    const std::int64_t total = std::int64_t(B) * T_ * n_heads * (HD / 2);
    if (total <= 0) return;
    const accum_t<T> sign(inverse ? -1 : 1);
    constexpr int W = pack_width<T>;
    if (W > 1 && (HD / 2) % W == 0 && row_stride % W == 0 && aligned16(x))
        rope_kernel<W><<<blocks_for(total / W, 2), threads_per_block, 0, detail::stream()>>>(x, cos_table, sin_table, B, T_, n_heads, HD,
                                                                        row_stride, sign);
    else
        rope_kernel<1><<<blocks_for(total, 4), threads_per_block, 0, detail::stream()>>>(x, cos_table, sin_table, B, T_, n_heads, HD,
                                                                    row_stride, sign);
    SGT_CUDA_LAUNCHED(rope_kernel);
}
}  // namespace detail

// Rotates, in place, n_heads head vectors of HD values per token: x at x + (b·T + t)·row_stride + h·HD.
template <class T>
void rope_forward(cuda, T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_, int n_heads,
                  int HD, std::int64_t row_stride) {
    detail::rope_apply(x, cos_table, sin_table, B, T_, n_heads, HD, row_stride, false);
}

// The rotation is orthogonal: its backward is the inverse rotation of the gradient, in place.
template <class T>
void rope_backward(cuda, T* dx, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_, int n_heads,
                   int HD, std::int64_t row_stride) {
    detail::rope_apply(dx, cos_table, sin_table, B, T_, n_heads, HD, row_stride, true);
}

}  // namespace sgt
