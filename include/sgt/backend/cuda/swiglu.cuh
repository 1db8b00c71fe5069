// sgt/backend/cuda/swiglu.cuh: the SwiGLU gate s = silu(g) ⊙ u of the FFN, forward and backward.
#pragma once

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

template <class T>
void swiglu_forward(cuda, T* out, const T* gate, const T* up, std::int64_t n) {
    detail::for_each_index(out, n, [=] __device__(std::int64_t i) {
        const auto g = detail::load(gate[i]);
        return detail::store<T>(g / (decltype(g)(1) + exp(-g)) * detail::load(up[i]));
    });
}

namespace detail {
template <class T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
    using A = accum_t<T>;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x) {
        const A g = load(gate[i]), d = load(dout[i]);
        const A sig = A(1) / (A(1) + exp(-g));
        dgate[i] = store<T>(load(dgate[i]) + d * load(up[i]) * sig * (A(1) + g * (A(1) - sig)));
        dup[i] = store<T>(load(dup[i]) + d * g * sig);
    }
}
}  // namespace detail

// dgate += dout · u · silu'(g),  dup += dout · silu(g);  silu'(g) = σ(g) (1 + g (1 − σ(g))).
template <class T>
void swiglu_backward(cuda, T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
    if (n <= 0) return;
    detail::swiglu_backward_kernel<<<detail::blocks_for(n, 4), detail::threads_per_block>>>(dgate, dup, dout, gate, up, n);
    SGT_CUDA_LAUNCHED(swiglu_backward_kernel);
}

}  // namespace sgt
