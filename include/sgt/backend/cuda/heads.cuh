// sgt/backend/cuda/heads.cuh: packing the weights of a head subset, and per-head gains (backend/cpu/heads.hpp
// says why). The head list and gains travel to the kernel by value.
#pragma once

#include <span>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {
constexpr int max_heads = 256;

struct head_list {
    int h[max_heads];
    int n;
};
inline head_list make_head_list(std::span<const int> heads) {
    require(heads.size() <= std::size_t(max_heads), "cuda backend: {} heads in one pass, at most {} supported",
            heads.size(), max_heads);
    head_list l{};
    l.n = int(heads.size());
    for (int i = 0; i < l.n; ++i) l.h[i] = heads[i];
    return l;
}
struct gain_list {
    double g[max_heads];
};
}  // namespace detail

// dst (n·HD, C) = rows of src (NH·HD, C) of heads[0..n), in order.
template <class T>
void gather_head_rows(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C) {
    const auto l = detail::make_head_list(heads);
    const std::int64_t block = std::int64_t(HD) * C;
    detail::for_each_index(dst, l.n * block, [=] __device__(std::int64_t i) {
        return src[std::int64_t(l.h[i / block]) * block + i % block];
    });
}

// dst (C, n·HD) = columns of src (C, NH·HD) of heads[0..n), in order.
template <class T>
void gather_head_cols(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C, int NH) {
    const auto l = detail::make_head_list(heads);
    const std::int64_t w = std::int64_t(l.n) * HD;
    detail::for_each_index(dst, C * w, [=] __device__(std::int64_t i) {
        const std::int64_t r = i / w, c = i % w;
        return src[r * NH * HD + l.h[c / HD] * HD + c % HD];
    });
}

namespace detail {
template <class T>
__global__ void scatter_add_head_rows_kernel(T* dst, const T* src, head_list l, std::int64_t block) {
    const std::int64_t total = l.n * block;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x) {
        T& d = dst[std::int64_t(l.h[i / block]) * block + i % block];
        d = store<T>(load(d) + load(src[i]));
    }
}
template <class T>
__global__ void scatter_add_head_cols_kernel(T* dst, const T* src, head_list l, int HD, int C, int NH) {
    const std::int64_t w = std::int64_t(l.n) * HD, total = C * w;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x) {
        const std::int64_t r = i / w, c = i % w;
        T& d = dst[r * NH * HD + l.h[c / HD] * HD + c % HD];
        d = store<T>(load(d) + load(src[i]));
    }
}
template <class T>
__global__ void scale_heads_kernel(T* x, gain_list g, int n, std::int64_t N, int HD) {
    const std::int64_t total = N * n * HD;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x)
        x[i] = store<T>(load(x[i]) * accum_t<T>(g.g[(i / HD) % n]));
}
}  // namespace detail

// dst rows of heads (NH·HD, C) += src (n·HD, C). Heads are distinct, so no two threads write one element.
template <class T>
void scatter_add_head_rows(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C) {
    const auto l = detail::make_head_list(heads);
    const std::int64_t block = std::int64_t(HD) * C, total = l.n * block;
    if (total <= 0) return;
    detail::scatter_add_head_rows_kernel<<<detail::blocks_for(total, 4), detail::threads_per_block, 0, detail::stream()>>>(dst, src, l, block);
    SGT_CUDA_LAUNCHED(scatter_add_head_rows_kernel);
}

// dst columns of heads (C, NH·HD) += src (C, n·HD).
template <class T>
void scatter_add_head_cols(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C, int NH) {
    const auto l = detail::make_head_list(heads);
    const std::int64_t total = std::int64_t(C) * l.n * HD;
    if (total <= 0) return;
    detail::scatter_add_head_cols_kernel<<<detail::blocks_for(total, 4), detail::threads_per_block, 0, detail::stream()>>>(dst, src, l, HD, C, NH);
    SGT_CUDA_LAUNCHED(scatter_add_head_cols_kernel);
}

// x (N, n, HD): head i multiplied by gains[i], in place.
template <class T>
void scale_heads(cuda, T* x, std::span<const double> gains, std::int64_t N, int HD) {
    require(gains.size() <= std::size_t(detail::max_heads), "cuda backend: {} gains, at most {} supported",
            gains.size(), detail::max_heads);
    detail::gain_list g{};
    for (std::size_t i = 0; i < gains.size(); ++i) g.g[i] = gains[i];
    const int n = int(gains.size());
    const std::int64_t total = N * n * HD;
    if (total <= 0) return;
    detail::scale_heads_kernel<<<detail::blocks_for(total, 4), detail::threads_per_block, 0, detail::stream()>>>(x, g, n, N, HD);
    SGT_CUDA_LAUNCHED(scale_heads_kernel);
}

}  // namespace sgt
