// sgt/backend/cuda/cross_entropy.cuh: softmax cross-entropy of next-token targets, forward and backward.
// Targets below zero are ignored (not counted in the mean), as PyTorch's ignore_index. One block per row; the
// row's max and Σ exp in one pass (online softmax, 16-byte packs) reduced by cub::BlockReduce in float (double for
// double); the batch sum by cub::DeviceReduce. The forward can keep each row's log Σ exp, so that the backward reads
// the logits once and may write the gradient over them; or both run as one pass (cross_entropy_forward_backward).
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

// A thread's running (max, Σ exp) over W values at once: one rescale per pack, not per value.
template <int W, class A, class T>
__device__ void absorb(max_sum<A>& r, const pack<T, W>& p) {
    A x[W], m = r.m;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        x[k] = load(p.v[k]);
        m = max(m, x[k]);
    }
    A s = r.m == A(-INFINITY) ? A(0) : r.s * exp(r.m - m);
#pragma unroll
    for (int k = 0; k < W; ++k) s += exp(x[k] - m);
    r = {m, s};
}

// The row's log Σ exp(z), in every thread of the block (one pass over the row, in packs of W values).
template <int W, class T>
__device__ accum_t<T> row_log_sum_exp(const T* z, int V) {
    using A = accum_t<T>;
    using reduce = cub::BlockReduce<max_sum<A>, ce_threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ max_sum<A> shared;
    max_sum<A> r{A(-INFINITY), A(0)};
    const pack<T, W>* zp = reinterpret_cast<const pack<T, W>*>(z);
    for (int v = threadIdx.x; v < V / W; v += ce_threads) absorb<W>(r, zp[v]);
    r = reduce(temp).Reduce(r, combine_op<A>{});
    if (threadIdx.x == 0) shared = r;
    __syncthreads();
    return shared.m + log(shared.s);
}

// One block per row: the row's loss log Σ exp(z) − z[target], and its log Σ exp where lse is given.
template <int W, class T>
__global__ void cross_entropy_rows_kernel(double* row_loss, accum_t<T>* lse, const T* logits,
                                          const std::int32_t* targets, int V) {
    const std::int32_t tgt = targets[blockIdx.x];
    if (tgt < 0) {  // uniform per block: all threads leave together
        if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0;
        return;
    }
    const T* z = logits + std::int64_t(blockIdx.x) * V;
    const accum_t<T> l = row_log_sum_exp<W>(z, V);
    if (threadIdx.x == 0) {
        row_loss[blockIdx.x] = double(l) - double(load(z[tgt]));
        if (lse) lse[blockIdx.x] = l;
    }
}

// dz = scale · (exp(z − lse) − onehot(target)); the row's lse from the forward, or recomputed. dlogits may be
// logits itself (each value is read, then written, by the same thread).
template <int W, class T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* logits, const accum_t<T>* lse,
                                              const std::int32_t* targets, int V, double scale) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    const std::int32_t tgt = targets[blockIdx.x];
    P* dz = reinterpret_cast<P*>(dlogits + std::int64_t(blockIdx.x) * V);
    if (tgt < 0) {
        P zero;
#pragma unroll
        for (int k = 0; k < W; ++k) zero.v[k] = store<T>(A(0));
        for (int v = threadIdx.x; v < V / W; v += ce_threads) dz[v] = zero;
        return;
    }
    const T* z = logits + std::int64_t(blockIdx.x) * V;
    const A l = lse ? lse[blockIdx.x] : row_log_sum_exp<W>(z, V);
    const A s = A(scale);
    const P* zp = reinterpret_cast<const P*>(z);
    for (int v = threadIdx.x; v < V / W; v += ce_threads) {
        const P x = zp[v];
        P d;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const A p = exp(load(x.v[k]) - l);
            d.v[k] = store<T>(p * s - (v * W + k == tgt ? s : A(0)));
        }
        dz[v] = d;
    }
}

// The forward and the backward of one row in one kernel (a training step whose gradient scale is known at the
// forward): the block reads the row for its (max, Σ exp), then reads it again for the gradient, which it writes
// over the logits. With 1024 threads a block, two blocks an SM, the rows in flight (264 of 100 KB at a 50304-token
// vocabulary in bf16, on an H200) fit in L2, so the second read comes from L2 and the logits cross HBM once
// each way. The row's loss is taken before anything is written.
constexpr int ce_fused_threads = 1024;

template <int W, class T>
__global__ void __launch_bounds__(ce_fused_threads)
    cross_entropy_fused_kernel(T* logits, double* row_loss, const std::int32_t* targets, int V, double scale) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    using reduce = cub::BlockReduce<max_sum<A>, ce_fused_threads>;
    __shared__ typename reduce::TempStorage temp;
    __shared__ max_sum<A> shared;
    const std::int32_t tgt = targets[blockIdx.x];
    P* z = reinterpret_cast<P*>(logits + std::int64_t(blockIdx.x) * V);
    const int packs = V / W;
    if (tgt < 0) {  // uniform per block
        P zero;
#pragma unroll
        for (int k = 0; k < W; ++k) zero.v[k] = store<T>(A(0));
        for (int v = threadIdx.x; v < packs; v += ce_fused_threads) z[v] = zero;
        if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0;
        return;
    }
    const A target_logit = threadIdx.x == 0 ? load(logits[std::int64_t(blockIdx.x) * V + tgt]) : A(0);
    max_sum<A> r{A(-INFINITY), A(0)};
    for (int v = threadIdx.x; v < packs; v += ce_fused_threads) absorb<W>(r, z[v]);
    r = reduce(temp).Reduce(r, combine_op<A>{});
    if (threadIdx.x == 0) shared = r;
    __syncthreads();  // every thread has read the row (and thread 0 the target's logit): writing may begin
    const A l = shared.m + log(shared.s), s = A(scale);
    if (threadIdx.x == 0) row_loss[blockIdx.x] = double(l) - double(target_logit);
    for (int v = threadIdx.x; v < packs; v += ce_fused_threads) {
        const P x = z[v];
        P d;
#pragma unroll
        for (int k = 0; k < W; ++k) d.v[k] = store<T>(exp(load(x.v[k]) - l) * s - (v * W + k == tgt ? s : A(0)));
        z[v] = d;
    }
}

// 16-byte packs where V and the pointers allow, else one value at a time.
template <class T, class F>
void with_ce_width(int V, std::initializer_list<const void*> ptrs, F&& f) {
    constexpr int W = pack_width<T>;
    bool ok = V % W == 0;
    for (const void* p : ptrs) ok = ok && aligned16(p);
    if (W > 1 && ok) f.template operator()<W>();
    else f.template operator()<1>();
}

struct counted_target {
    __device__ double operator()(std::int32_t t) const { return t >= 0 ? 1.0 : 0.0; }
};

// *sum (device memory) = the sum of the N row losses that launch(rows) writes into a scratch (0 when N = 0).
template <class Launch>
void sum_row_losses(int N, double* sum, Launch&& launch) {
    if (N <= 0) {
        fill_zero(cuda{}, sum, 1);
        return;
    }
    double* rows = context().scratch<double>(slot_ce_rows, N);
    launch(rows);
    transform_reduce(rows, N, ::cuda::std::identity{}, sum);
}

}  // namespace detail

// logits (N, V); targets (N), device memory. *sum (device memory) = the sum of the counted positions' losses,
// stream-ordered (a training step reads it when the step is done). lse (N), where given, receives each counted
// row's log Σ exp for the backward.
template <class T>
void cross_entropy_forward(cuda, const T* logits, const std::int32_t* targets, int N, int V, accum_t<T>* lse,
                           double* sum) {
    detail::sum_row_losses(N, sum, [&](double* rows) {
        detail::with_ce_width<T>(V, {logits}, [&]<int W>() {
            detail::cross_entropy_rows_kernel<W><<<N, detail::ce_threads, 0, detail::stream()>>>(rows, lse, logits, targets, V);
        });
        SGT_CUDA_LAUNCHED(cross_entropy_rows_kernel);
    });
}

// The same, returning the sum and the count of the counted positions (synchronous).
template <class T>
loss_sum cross_entropy_forward(cuda, const T* logits, const std::int32_t* targets, int N, int V, accum_t<T>* lse) {
    if (N <= 0) return {};
    double* sum = detail::context().scratch<double>(detail::slot_ce_sum, 1);
    cross_entropy_forward(cuda{}, logits, targets, N, V, lse, sum);
    loss_sum r;
    copy_to_host(cuda{}, &r.sum, static_cast<const double*>(sum), 1);
    r.count = std::int64_t(
        detail::transform_reduce_to_host<std::int32_t, detail::counted_target, double>(targets, N, detail::counted_target{}));
    return r;
}

// Both in one pass over the logits, for a training step that knows its gradient scale at the forward: *sum
// (device memory) = the sum of the counted positions' losses, as cross_entropy_forward; then the logits are
// overwritten by scale · (softmax(logits) − onehot(target)) on counted rows, 0 on ignored ones, as
// cross_entropy_backward. Reads the logits from HBM once where the other two read them twice.
template <class T>
void cross_entropy_forward_backward(cuda, T* logits, const std::int32_t* targets, int N, int V, double scale,
                                    double* sum) {
    detail::sum_row_losses(N, sum, [&](double* rows) {
        detail::with_ce_width<T>(V, {logits}, [&]<int W>() {
            detail::cross_entropy_fused_kernel<W><<<N, detail::ce_fused_threads, 0, detail::stream()>>>(logits, rows, targets, V, scale);
        });
        SGT_CUDA_LAUNCHED(cross_entropy_fused_kernel);
    });
}

// dlogits (N, V) = scale · (softmax(logits) − onehot(target)) on counted rows, 0 on ignored ones (overwrites; may
// be logits itself). lse: the forward's, or null to recompute it.
template <class T>
void cross_entropy_backward(cuda, T* dlogits, const T* logits, const std::int32_t* targets, int N, int V, double scale,
                            const accum_t<T>* lse) {
    if (N <= 0) return;
    detail::with_ce_width<T>(V, {dlogits, logits}, [&]<int W>() {
        detail::cross_entropy_backward_kernel<W><<<N, detail::ce_threads, 0, detail::stream()>>>(dlogits, logits, lse, targets, V, scale);
    });
    SGT_CUDA_LAUNCHED(cross_entropy_backward_kernel);
}

}  // namespace sgt
