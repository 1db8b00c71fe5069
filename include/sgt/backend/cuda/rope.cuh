// sgt/backend/cuda/rope.cuh: rotary position embedding, Hugging Face LLaMA's rotate-half convention
// (backend/cpu/rope.hpp states it), forward and backward. The tables are kept in accum_t<T> (float for bf16).
#pragma once

#include <cmath>
#include <vector>

#include "sgt/backend/cpu/rope.hpp"  // the tables are computed as on the CPU
#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

// cos_table, sin_table (T, HD/2), device memory; computed on the host in double exactly as the CPU backend.
template <class A>
void rope_tables(cuda, A* cos_table, A* sin_table, int T_, int HD, double base) {
    const int half = HD / 2;
    std::vector<A> c(std::size_t(T_) * half), s(c.size());
    rope_tables(cpu{}, c.data(), s.data(), T_, HD, base);
    copy_from_host(cuda{}, cos_table, c.data(), std::int64_t(c.size()));
    copy_from_host(cuda{}, sin_table, s.data(), std::int64_t(s.size()));
}

namespace detail {
template <class T>
__global__ void rope_kernel(T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_,
                            int n_heads, int HD, std::int64_t row_stride, accum_t<T> sign) {
    const int half = HD / 2;
    const std::int64_t total = std::int64_t(B) * T_ * n_heads * half;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total;
         i += std::int64_t(gridDim.x) * blockDim.x) {
        const int j = int(i % half);
        const std::int64_t rest = i / half;
        const int h = int(rest % n_heads);
        const std::int64_t bt = rest / n_heads;
        const int t = int(bt % T_);
        T* v = x + bt * row_stride + std::int64_t(h) * HD;
        const auto c = cos_table[t * half + j], s = sin_table[t * half + j];
        const auto x1 = load(v[j]), x2 = load(v[j + half]);
        v[j] = store<T>(x1 * c - sign * x2 * s);
        v[j + half] = store<T>(x2 * c + sign * x1 * s);
    }
}

template <class T>
void rope_apply(T* x, const accum_t<T>* cos_table, const accum_t<T>* sin_table, int B, int T_, int n_heads, int HD,
                std::int64_t row_stride, bool inverse) {
    const std::int64_t total = std::int64_t(B) * T_ * n_heads * (HD / 2);
    if (total <= 0) return;
    rope_kernel<<<blocks_for(total, 4), threads_per_block>>>(x, cos_table, sin_table, B, T_, n_heads, HD, row_stride,
                                                             accum_t<T>(inverse ? -1 : 1));
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
