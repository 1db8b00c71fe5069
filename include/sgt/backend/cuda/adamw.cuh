// sgt/backend/cuda/adamw.cuh: one AdamW update of a parameter tensor, as backend/cpu/adamw.hpp, and its
// mixed-precision form: fp32 master weights and moments updated, the bf16 working copy rewritten from them.
#pragma once

#include <cmath>

#include "sgt/backend/common.hpp"  // adamw_hyper
#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {
// Updates master, m, v from grad; writes the result to param too when param != master. In M's precision (fp32
// for fp32 and bf16 models), W elements per thread and access where the pointers allow.
template <int W, class T, class M>
__device__ inline void adamw_pack(T* param, M* master, const T* grad, M* m, M* v, std::int64_t i, M beta1, M beta2,
                                  M eps, M step, M root_c2, M decay) {
    const pack<T, W> g = reinterpret_cast<const pack<T, W>*>(grad)[i];
    pack<M, W> mi = reinterpret_cast<pack<M, W>*>(m)[i], vi = reinterpret_cast<pack<M, W>*>(v)[i],
               p = reinterpret_cast<pack<M, W>*>(master)[i];
    pack<T, W> out;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        const M gk = M(load(g.v[k]));
        mi.v[k] = beta1 * mi.v[k] + (M(1) - beta1) * gk;
        vi.v[k] = beta2 * vi.v[k] + (M(1) - beta2) * gk * gk;
        p.v[k] = p.v[k] * decay - step * mi.v[k] / (sqrt(vi.v[k]) / root_c2 + eps);
        out.v[k] = store<T>(p.v[k]);
    }
    reinterpret_cast<pack<M, W>*>(m)[i] = mi;
    reinterpret_cast<pack<M, W>*>(v)[i] = vi;
    reinterpret_cast<pack<M, W>*>(master)[i] = p;
    if constexpr (!std::is_same_v<T, M>) reinterpret_cast<pack<T, W>*>(param)[i] = out;
}

template <int W, class T, class M>
__global__ void adamw_kernel(T* param, M* master, const T* grad, M* m, M* v, std::int64_t n, M beta1, M beta2, M eps,
                             M step, M root_c2, M decay) {
    const std::int64_t packs = n / W, stride = std::int64_t(gridDim.x) * blockDim.x;
    const std::int64_t first = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
    for (std::int64_t i = first; i < packs; i += stride)
        adamw_pack<W>(param, master, grad, m, v, i, beta1, beta2, eps, step, root_c2, decay);
    for (std::int64_t i = packs * W + first; i < n; i += stride)
        adamw_pack<1>(param, master, grad, m, v, i, beta1, beta2, eps, step, root_c2, decay);
}

template <class T, class M>
void adamw_launch(T* param, M* master, const T* grad, M* m, M* v, std::int64_t n, const adamw_hyper& h, double wd, int t) {
    if (n <= 0) return;
    const double c1 = 1.0 - std::pow(h.beta1, t), c2 = 1.0 - std::pow(h.beta2, t);
    const M beta1 = M(h.beta1), beta2 = M(h.beta2), eps = M(h.eps), step = M(h.lr / c1), root_c2 = M(std::sqrt(c2)),
            decay = M(1.0 - h.lr * wd);
    constexpr int W = 16 / sizeof(M) > 1 ? int(16 / sizeof(M)) : 1;
    auto aligned = [](const void* p, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; };
    if (W > 1 && aligned(master, sizeof(M) * W) && aligned(m, sizeof(M) * W) && aligned(v, sizeof(M) * W) &&
        aligned(grad, sizeof(T) * W) && aligned(param, sizeof(T) * W))
        adamw_kernel<W><<<blocks_for(n, 2 * W), threads_per_block, 0, detail::stream()>>>(param, master, grad, m, v, n, beta1, beta2, eps, step, root_c2, decay);
    else
        adamw_kernel<1><<<blocks_for(n, 4), threads_per_block, 0, detail::stream()>>>(param, master, grad, m, v, n, beta1, beta2, eps, step, root_c2, decay);
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
