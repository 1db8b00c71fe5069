// sgt/backend/cuda/cross_entropy.cuh: softmax cross-entropy of next-token targets, forward and backward.
// Targets below zero are ignored (not counted in the mean), as PyTorch's ignore_index. One block per row; the
// row's max and Σ exp in one pass (online softmax) reduced by cub::BlockReduce in float (double for double);
// the batch sum by cub::DeviceReduce.
#pragma once

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_reduce.cuh>

#include "sgt/backend/common.hpp"  // loss_sum
#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {

constexpr int ce_threads = 512;

// A running (max, Σ exp(z − max)) pair: the online softmax, so a row is read once for both.
template <class A>
struct max_sum {
    A m, s;
};
template <class A>
__device__ max_sum<A> combine(max_sum<A> a, max_sum<A> b) {
    const A m = max(a.m, b.m);
    if (m == A(-INFINITY)) return {m, A(0)};
    return {m, a.s * exp(a.m - m) + b.s * exp(b.m - m)};
}
template <class A>
struct combine_op {
    __device__ max_sum<A> operator()(const max_sum<A>& a, const max_sum<A>& b) const { return combine(a, b); }
};

// The row's max and log Σ exp(z − max), in every thread of the block (one pass over the row).
template <class T>
__device__ void row_log_partition(const T* z, int V, accum_t<T>& max_out, accum_t<T>& log_sum_out) {
    using A = accum_t<T>;
    using reduce = cub::BlockReduce<max_sum<A>, ce_threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ max_sum<A> shared;
    max_sum<A> r{A(-INFINITY), A(0)};
    for (int v = threadIdx.x; v < V; v += ce_threads) {
        const A x = load(z[v]);
        if (x > r.m) {
            r.s = r.s * exp(r.m - x) + A(1);
            r.m = x;
        } else {
            r.s += exp(x - r.m);
        }
    }
    r = reduce(temp).Reduce(r, combine_op<A>{});
    if (threadIdx.x == 0) shared = r;
    __syncthreads();
    max_out = shared.m;
    log_sum_out = log(shared.s);
}

template <class T>
__global__ void cross_entropy_rows_kernel(double* row_loss, const T* logits, const std::int32_t* targets, int V) {
    const std::int32_t tgt = targets[blockIdx.x];
    if (tgt < 0) {  // uniform per block: all threads leave together
        if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0;
        return;
    }
    const T* z = logits + std::int64_t(blockIdx.x) * V;
    accum_t<T> m, log_sum;
    row_log_partition(z, V, m, log_sum);
    if (threadIdx.x == 0) row_loss[blockIdx.x] = double(m) + double(log_sum) - double(load(z[tgt]));
}

template <class T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* logits, const std::int32_t* targets, int V,
                                              double scale) {
    using A = accum_t<T>;
    const std::int32_t tgt = targets[blockIdx.x];
    T* dz = dlogits + std::int64_t(blockIdx.x) * V;
    if (tgt < 0) {
        for (int v = threadIdx.x; v < V; v += ce_threads) dz[v] = store<T>(A(0));
        return;
    }
    const T* z = logits + std::int64_t(blockIdx.x) * V;
    A m, log_sum;
    row_log_partition(z, V, m, log_sum);
    const A s = A(scale);
    for (int v = threadIdx.x; v < V; v += ce_threads) {
        const A p = exp(load(z[v]) - m - log_sum);
        dz[v] = store<T>(p * s - (v == tgt ? s : A(0)));
    }
}

struct counted_target {
    __device__ double operator()(std::int32_t t) const { return t >= 0 ? 1.0 : 0.0; }
};

}  // namespace detail

// logits (N, V); targets (N), device memory. Returns the sum and count of the per-position losses (synchronous).
template <class T>
loss_sum cross_entropy_forward(cuda, const T* logits, const std::int32_t* targets, int N, int V) {
    if (N <= 0) return {};
    double* rows = detail::context().scratch<double>(detail::slot_ce_rows, N);
    detail::cross_entropy_rows_kernel<<<N, detail::ce_threads, 0, detail::stream()>>>(rows, logits, targets, V);
    SGT_CUDA_LAUNCHED(cross_entropy_rows_kernel);
    loss_sum r;
    r.sum = detail::transform_reduce_to_host<double, ::cuda::std::identity, double>(rows, N, ::cuda::std::identity{});
    r.count = std::int64_t(
        detail::transform_reduce_to_host<std::int32_t, detail::counted_target, double>(targets, N, detail::counted_target{}));
    return r;
}

// dlogits (N, V) = scale · (softmax(logits) − onehot(target)) on counted rows, 0 on ignored ones (overwrites).
template <class T>
void cross_entropy_backward(cuda, T* dlogits, const T* logits, const std::int32_t* targets, int N, int V, double scale) {
    if (N <= 0) return;
    detail::cross_entropy_backward_kernel<<<N, detail::ce_threads, 0, detail::stream()>>>(dlogits, logits, targets, V, scale);
    SGT_CUDA_LAUNCHED(cross_entropy_backward_kernel);
}

}  // namespace sgt
