// sgt/backend/cuda/embedding.cuh: token embedding lookup h = E[x], forward and backward.
// The backward sums the rows of each token in position order, as the CPU does, and without atomics: the
// (token, position) pairs are sorted by cub::DeviceRadixSort (stable), and each run of one token is summed by
// one block. Two runs give the same bits.
#pragma once

#include <cub/device/device_radix_sort.cuh>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

// out (N, C) = table[tokens] ; table (V, C); tokens (N) device memory, validated by the caller.
template <class T>
void embedding_forward(cuda, T* out, const std::int32_t* tokens, const T* table, int N, int C) {
    detail::for_each_index(out, std::int64_t(N) * C, [=] __device__(std::int64_t i) {
        return table[std::int64_t(tokens[i / C]) * C + i % C];
    });
}

namespace detail {
__global__ inline void iota_kernel(std::int32_t* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = i;
}

// Block i adds, when sorted position i starts a run of one token, the run's rows of dout to that token's row.
template <class T>
__global__ void embedding_backward_kernel(T* dtable, const T* dout, const std::int32_t* keys,
                                          const std::int32_t* positions, int N, int C) {
    const int i = blockIdx.x;
    if (i > 0 && keys[i - 1] == keys[i]) return;
    int end = i + 1;
    while (end < N && keys[end] == keys[i]) ++end;
    T* row = dtable + std::int64_t(keys[i]) * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        accum_t<T> s = load(row[c]);
        for (int j = i; j < end; ++j) s += load(dout[std::int64_t(positions[j]) * C + c]);
        row[c] = store<T>(s);
    }
}
}  // namespace detail

// dtable (V, C) += scatter of dout (N, C) by token.
template <class T>
void embedding_backward(cuda, T* dtable, const T* dout, const std::int32_t* tokens, int N, int C) {
    if (N <= 0) return;
    auto& ctx = detail::context();
    auto* keys = ctx.scratch<std::int32_t>(detail::slot_sort_keys, N);
    auto* values_in = ctx.scratch<std::int32_t>(detail::slot_sort_values_in, N);
    auto* values = ctx.scratch<std::int32_t>(detail::slot_sort_values, N);
    detail::iota_kernel<<<(N + 255) / 256, 256, 0, detail::stream()>>>(values_in, N);
    SGT_CUDA_LAUNCHED(iota_kernel);
    std::size_t bytes = 0;
    SGT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, tokens, keys, values_in, values, N, 0, 32,
                                                   detail::stream()));
    void* temp = ctx.scratch<std::byte>(detail::slot_cub_temp, std::int64_t(bytes));
    SGT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, bytes, tokens, keys, values_in, values, N, 0, 32,
                                                   detail::stream()));
    detail::embedding_backward_kernel<<<N, 128, 0, detail::stream()>>>(dtable, dout, keys, values, N, C);
    SGT_CUDA_LAUNCHED(embedding_backward_kernel);
}

}  // namespace sgt
