// sgt/backend/cuda/adamw.cuh: one AdamW update of a parameter tensor, as backend/cpu/adamw.hpp, and its
// mixed-precision form: fp32 master weights and moments updated, the bf16 working copy rewritten from them.
#pragma once

#include <cmath>

#include "sgt/backend/common.hpp"  // adamw_hyper
#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {
// Updates master, m, v from grad; writes the result to param too when param != master.
template <class T, class M>
__global__ void adamw_kernel(T* param, M* master, const T* grad, M* m, M* v, std::int64_t n, double beta1,
                             double beta2, double eps, double step, double root_c2, double decay) {
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
        const double g = double(load(grad[i]));
        const double mi = beta1 * double(m[i]) + (1.0 - beta1) * g;
        const double vi = beta2 * double(v[i]) + (1.0 - beta2) * g * g;
        m[i] = M(mi);
        v[i] = M(vi);
        const M p = M(double(master[i]) * decay - step * mi / (sqrt(vi) / root_c2 + eps));
        master[i] = p;
        if constexpr (!std::is_same_v<T, M>) param[i] = store<T>(p);
    }
}

template <class T, class M>
void adamw_launch(T* param, M* master, const T* grad, M* m, M* v, std::int64_t n, const adamw_hyper& h, double wd, int t) {
    if (n <= 0) return;
    const double c1 = 1.0 - std::pow(h.beta1, t), c2 = 1.0 - std::pow(h.beta2, t);
    adamw_kernel<<<blocks_for(n, 4), threads_per_block, 0, detail::stream()>>>(param, master, grad, m, v, n, h.beta1, h.beta2, h.eps,
                                                          h.lr / c1, std::sqrt(c2), 1.0 - h.lr * wd);
    SGT_CUDA_LAUNCHED(adamw_kernel);
}
}  // namespace detail

// step t counts from 1; wd is this tensor's weight decay (0 for norm weights).
template <class T>
void adamw_update(cuda, T* param, const T* grad, T* m, T* v, std::int64_t n, const adamw_hyper& h, double wd, int t) {
    detail::adamw_launch(param, param, grad, m, v, n, h, wd, t);
}

// Mixed precision: master (n) fp32 weights, m and v fp32; param (n) the low-precision copy the model runs on.
template <class T, class M>
void adamw_update(cuda, T* param, const T* grad, M* master, M* m, M* v, std::int64_t n, const adamw_hyper& h,
                  double wd, int t) {
    detail::adamw_launch(param, master, grad, m, v, n, h, wd, t);
}

// dst (n) = src converted to another precision (e.g. bf16 weights → fp32 master weights).
template <class D, class S>
void convert(cuda, D* dst, const S* src, std::int64_t n) {
    detail::for_each_index(dst, n, [=] __device__(std::int64_t i) { return detail::store<D>(detail::load(src[i])); });
}

}  // namespace sgt
