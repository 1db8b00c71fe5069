// sgt/backend/cuda/backend.cuh: the elementwise helpers of backend/cpu/backend.hpp on the device, and the
// kernel-side utilities the other .cuh files share (grid sizing, load/store in accum_t<T>, CUB reductions).
#pragma once

#include <cub/device/device_reduce.cuh>

#include <algorithm>
#include <cstdint>

#include "sgt/backend/cuda.hpp"

namespace sgt {

namespace detail {

constexpr int threads_per_block = 256;
inline unsigned blocks_for(std::int64_t n, int per_thread = 1) {
    const std::int64_t b = (n + std::int64_t(threads_per_block) * per_thread - 1) / (std::int64_t(threads_per_block) * per_thread);
    return unsigned(std::clamp<std::int64_t>(b, 1, 65535 * 16));
}

template <class T>
__host__ __device__ inline accum_t<T> load(const T& x) {
    return static_cast<accum_t<T>>(x);
}
template <class T, class U>
__host__ __device__ inline T store(U x) {
    return static_cast<T>(x);
}

template <class T, class F>
__global__ void elementwise_kernel(T* out, std::int64_t n, F f) {
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
        out[i] = f(i);
}

// out[i] = f(i) for i in [0, n), on the device.
template <class T, class F>
void for_each_index(T* out, std::int64_t n, F f) {
    if (n <= 0) return;
    elementwise_kernel<<<blocks_for(n, 4), threads_per_block>>>(out, n, f);
    SGT_CUDA_LAUNCHED(elementwise_kernel);
}

struct square_to_double {
    template <class T>
    __device__ double operator()(const T& x) const {
        const double v = double(load(x));
        return v * v;
    }
};
struct is_not_finite {
    template <class T>
    __device__ int operator()(const T& x) const {
        return isfinite(double(load(x))) ? 0 : 1;
    }
};

// Σ op(x_i) over the device array, in double, by CUB; synchronous (the result comes to the host).
template <class T, class Op, class Out>
Out transform_reduce_to_host(const T* x, std::int64_t n, Op op) {
    if (n <= 0) return Out(0);
    auto& ctx = context();
    Out* out = reinterpret_cast<Out*>(ctx.reduce_out.data());
    std::size_t bytes = 0;
    SGT_CUDA_CHECK(cub::DeviceReduce::TransformReduce(nullptr, bytes, x, out, n, ::cuda::std::plus<Out>{}, op, Out(0)));
    void* temp = ctx.cub_scratch(bytes);
    SGT_CUDA_CHECK(cub::DeviceReduce::TransformReduce(temp, bytes, x, out, n, ::cuda::std::plus<Out>{}, op, Out(0)));
    Out h{};
    SGT_CUDA_CHECK(cudaMemcpy(&h, out, sizeof(Out), cudaMemcpyDeviceToHost));
    return h;
}

}  // namespace detail

// out = a + b (out may alias a or b).
template <class T>
void add(cuda, T* out, const T* a, const T* b, std::int64_t n) {
    detail::for_each_index(out, n, [=] __device__(std::int64_t i) {
        return detail::store<T>(detail::load(a[i]) + detail::load(b[i]));
    });
}

// y += x
template <class T>
void accumulate(cuda, T* y, const T* x, std::int64_t n) {
    detail::for_each_index(y, n, [=] __device__(std::int64_t i) {
        return detail::store<T>(detail::load(y[i]) + detail::load(x[i]));
    });
}

template <class T>
void scale(cuda, T* x, std::int64_t n, double s) {
    const accum_t<T> f = accum_t<T>(s);
    detail::for_each_index(x, n, [=] __device__(std::int64_t i) { return detail::store<T>(detail::load(x[i]) * f); });
}

// Σ x², accumulated in double.
template <class T>
double sum_squares(cuda, const T* x, std::int64_t n) {
    return detail::transform_reduce_to_host<T, detail::square_to_double, double>(x, n, detail::square_to_double{});
}

// True when every value is finite.
template <class T>
bool all_finite(cuda, const T* x, std::int64_t n) {
    // reduce_out holds doubles; an int count fits in its first word.
    return detail::transform_reduce_to_host<T, detail::is_not_finite, int>(x, n, detail::is_not_finite{}) == 0;
}

}  // namespace sgt
