// sgt/backend/cuda/swiglu.cuh: the SwiGLU gate s = silu(g) ⊙ u of the FFN, forward and backward.
#pragma once

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

template <class T>
void swiglu_forward(cuda, T* out, const T* gate, const T* up, std::int64_t n) {
    using A = accum_t<T>;
    detail::map(out, n, [] __device__(A g, A u) { return g / (A(1) + exp(-g)) * u; }, gate, up);
}

namespace detail {
// Elements [W·i, W·i + W) of the backward, as packs (W = 1: one element).
template <int W, class T>
__device__ void swiglu_backward_pack(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t i) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    const P g = reinterpret_cast<const P*>(gate)[i], u = reinterpret_cast<const P*>(up)[i],
            d = reinterpret_cast<const P*>(dout)[i];
    P dg, du;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        const A gk = load(g.v[k]), dk = load(d.v[k]);
        const A sig = A(1) / (A(1) + exp(-gk));
        dg.v[k] = store<T>(dk * load(u.v[k]) * sig * (A(1) + gk * (A(1) - sig)));
        du.v[k] = store<T>(dk * gk * sig);
    }
    reinterpret_cast<P*>(dgate)[i] = dg;
    reinterpret_cast<P*>(dup)[i] = du;
}

template <int W, class T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
    const std::int64_t packs = n / W, stride = std::int64_t(gridDim.x) * blockDim.x;
    const std::int64_t first = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
    for (std::int64_t i = first; i < packs; i += stride) swiglu_backward_pack<W>(dgate, dup, dout, gate, up, i);
    for (std::int64_t i = packs * W + first; i < n; i += stride) swiglu_backward_pack<1>(dgate, dup, dout, gate, up, i);
}
}  // namespace detail

// dgate = dout · u · silu'(g),  dup = dout · silu(g) (overwritten: the FFN's scratch; dgate may be dout, each
// pack is read before it is written);  silu'(g) = σ(g) (1 + g (1 − σ(g))).
template <class T>
void swiglu_backward(cuda, T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
    if (n <= 0) return;
    constexpr int W = detail::pack_width<T>;
    using detail::aligned16;
    if (aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) && aligned16(up))
        detail::swiglu_backward_kernel<W><<<detail::blocks_for(n, 2 * W), detail::threads_per_block, 0, detail::stream()>>>(dgate, dup, dout, gate, up, n);
    else
        detail::swiglu_backward_kernel<1><<<detail::blocks_for(n, 4), detail::threads_per_block, 0, detail::stream()>>>(dgate, dup, dout, gate, up, n);
    SGT_CUDA_LAUNCHED(swiglu_backward_kernel);
}

}  // namespace sgt
