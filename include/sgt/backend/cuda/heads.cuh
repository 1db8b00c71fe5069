// sgt/backend/cuda/heads.cuh: packing the weights of a head subset, and per-head gains with their gradient
// (backend/cpu/heads.hpp says why). The head list travels to the kernel by value; gains are a device tensor.
#pragma once

#include <cub/block/block_reduce.cuh>

#include <span>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {
constexpr int max_heads = 256;

struct head_list {
    int h[max_heads];
    int n;
    // Where element k of the packed heads (each head a block of `size` elements, in list order) lies in the layout
    // of all heads: a packed row of W_QKV (size HD, or HD·C over whole rows) or column of W_O (size HD).
    __host__ __device__ std::int64_t at(std::int64_t k, std::int64_t size) const {
        return std::int64_t(h[k / size]) * size + k % size;
    }
};
inline head_list make_head_list(std::span<const int> heads) {
    require(heads.size() <= std::size_t(max_heads), "cuda backend: {} heads in one pass, at most {} supported",
            heads.size(), max_heads);
    head_list l{};
    l.n = int(heads.size());
    for (int i = 0; i < l.n; ++i) l.h[i] = heads[i];
    return l;
}
}  // namespace detail

// dst (n·HD, C) = rows of src (NH·HD, C) of heads[0..n), in order.
template <class T>
void gather_head_rows(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C) {
    const auto l = detail::make_head_list(heads);
    const std::int64_t block = std::int64_t(HD) * C;
    detail::for_each_index(dst, l.n * block, [=] __device__(std::int64_t i) {
        return src[l.at(i, block)];
    });
}

// dst (C, n·HD) = columns of src (C, NH·HD) of heads[0..n), in order.
template <class T>
void gather_head_cols(cuda, T* dst, const T* src, std::span<const int> heads, int HD, int C, int NH) {
    const auto l = detail::make_head_list(heads);
    const std::int64_t w = std::int64_t(l.n) * HD;
    detail::for_each_index(dst, C * w, [=] __device__(std::int64_t i) {
        const std::int64_t r = i / w, c = i % w;
        return src[r * NH * HD + l.at(c, HD)];
    });
}

namespace detail {
template <class T>
__global__ void scatter_add_head_rows_kernel(T* dst, const T* src, head_list l, std::int64_t block) {
    const std::int64_t total = l.n * block;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x) {
        T& d = dst[l.at(i, block)];
        d = store<T>(load(d) + load(src[i]));
    }
}
template <class T>
__global__ void scatter_add_head_cols_kernel(T* dst, const T* src, head_list l, int HD, int C, int NH) {
    const std::int64_t w = std::int64_t(l.n) * HD, total = C * w;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x) {
        const std::int64_t r = i / w, c = i % w;
        T& d = dst[r * NH * HD + l.at(c, HD)];
        d = store<T>(load(d) + load(src[i]));
    }
}
template <class T>
__global__ void head_gain_kernel(T* x, const T* gains, int n, std::int64_t N, int HD, bool per_position) {
    const std::int64_t total = N * n * HD;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < total; i += std::int64_t(gridDim.x) * blockDim.x) {
        const std::int64_t row_head = i / HD;
        x[i] = store<T>(load(x[i]) * load(gains[per_position ? row_head : row_head % n]));
    }
}
// One block per head: Σ over rows and the head's HD values of x·dy, in a fixed order (deterministic).
template <class T>
__global__ void head_gain_grad_kernel(T* dgains, const T* x, const T* dy, int n, std::int64_t N, int HD) {
    using A = accum_t<T>;
    using reduce = cub::BlockReduce<A, threads_per_block>;
    __shared__ typename reduce::TempStorage tmp;
    const int i = blockIdx.x;
    A s = 0;
    for (std::int64_t j = threadIdx.x; j < N * HD; j += threads_per_block) {
        const std::int64_t o = ((j / HD) * n + i) * HD + j % HD;
        s += load(x[o]) * load(dy[o]);
    }
    const A total = reduce(tmp).Sum(s);
    if (threadIdx.x == 0) dgains[i] = store<T>(load(dgains[i]) + total);
}
// One thread per (row, head): its HD-long dot product.
template <class T>
__global__ void head_gain_grad_rows_kernel(T* dgains, const T* x, const T* dy, std::int64_t rows, int HD) {
    for (std::int64_t r = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; r < rows; r += std::int64_t(gridDim.x) * blockDim.x) {
        accum_t<T> s = 0;
        for (int d = 0; d < HD; ++d) s += load(x[r * HD + d]) * load(dy[r * HD + d]);
        dgains[r] = store<T>(load(dgains[r]) + s);
    }
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

// x (N, n, HD): head i of row r multiplied in place by its gain: gains (n), or (N, n) when per_position.
template <class T>
void head_gain_forward(cuda, T* x, const T* gains, std::int64_t N, int n, int HD, bool per_position) {
    const std::int64_t total = N * n * HD;
    if (total <= 0) return;
    detail::head_gain_kernel<<<detail::blocks_for(total, 4), detail::threads_per_block, 0, detail::stream()>>>(x, gains, n, N, HD,
                                                                                          per_position);
    SGT_CUDA_LAUNCHED(head_gain_kernel);
}

// Backward of y = g ⊙ x: unless dgains is null, dgains += Σ_d x·dy (x the forward's input); then dy ← g·dy.
template <class T>
void head_gain_backward(cuda, T* dgains, T* dy, const T* x, const T* gains, std::int64_t N, int n, int HD,
                        bool per_position) {
    if (N * n * HD <= 0) return;
    if (dgains != nullptr) {
        if (per_position) {
            detail::head_gain_grad_rows_kernel<<<detail::blocks_for(N * n), detail::threads_per_block, 0, detail::stream()>>>(
                dgains, x, dy, N * n, HD);
            SGT_CUDA_LAUNCHED(head_gain_grad_rows_kernel);
        } else {
            detail::head_gain_grad_kernel<<<n, detail::threads_per_block, 0, detail::stream()>>>(dgains, x, dy, n, N, HD);
            SGT_CUDA_LAUNCHED(head_gain_grad_kernel);
        }
    }
    head_gain_forward(cuda{}, dy, gains, N, n, HD, per_position);
}

}  // namespace sgt
