// sgt/backend/cuda/swiglu.cuh: the SwiGLU gate s = silu(g) ⊙ u of the FFN, forward and backward, over rows of F
// elements: s and ∂L/∂s (rows, F), g, u and their gradients rows of stride ld (backend/cpu/swiglu.hpp).
#pragma once

#include <initializer_list>

#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {
// Calls f(flat, at) for each of this thread's packs of W elements of the (rows, F) index space (F a multiple of W),
// grid-stride: flat is the pack's offset in the (rows, F) arrays, at in the arrays of row stride ld.
template <int W, class Fn>
__device__ inline void swiglu_each_pack(int rows, int F, std::int64_t ld, Fn&& f) {
    const std::int64_t per_row = F / W, packs = std::int64_t(rows) * per_row;
    const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < packs; i += stride) {
        const std::int64_t r = i / per_row, c = (i % per_row) * W;
        f(r * F + c, r * ld + c);
    }
}

template <int W, class T>
__global__ void swiglu_forward_kernel(T* out, const T* gate, const T* up, int rows, int F, std::int64_t ld) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    swiglu_each_pack<W>(rows, F, ld, [&](std::int64_t flat, std::int64_t at) {
        const P g = *reinterpret_cast<const P*>(gate + at), u = *reinterpret_cast<const P*>(up + at);
        P s;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const A gk = load(g.v[k]);
            s.v[k] = store<T>(gk / (A(1) + exp(-gk)) * load(u.v[k]));
        }
        *reinterpret_cast<P*>(out + flat) = s;
    });
}

template <int W, class T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int rows, int F,
                                       std::int64_t ld) {
    using A = accum_t<T>;
    using P = pack<T, W>;
    swiglu_each_pack<W>(rows, F, ld, [&](std::int64_t flat, std::int64_t at) {
        const P g = *reinterpret_cast<const P*>(gate + at), u = *reinterpret_cast<const P*>(up + at),
                d = *reinterpret_cast<const P*>(dout + flat);
        P dg, du;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const A gk = load(g.v[k]), dk = load(d.v[k]);
            const A sig = A(1) / (A(1) + exp(-gk));
            dg.v[k] = store<T>(dk * load(u.v[k]) * sig * (A(1) + gk * (A(1) - sig)));
            du.v[k] = store<T>(dk * gk * sig);
        }
        *reinterpret_cast<P*>(dgate + at) = dg;
        *reinterpret_cast<P*>(dup + at) = du;
    });
}

// Packs of 16 bytes where every row and pointer allows, else one element.
template <class T>
bool swiglu_packs(int F, std::int64_t ld, std::initializer_list<const void*> ptrs) {
    bool ok = F % pack_width<T> == 0 && ld % pack_width<T> == 0;
    for (const void* p : ptrs) ok = ok && aligned16(p);
    return ok;
}
}  // namespace detail

template <class T>
void swiglu_forward(cuda, T* out, const T* gate, const T* up, int rows, int F, std::int64_t ld) {
    const std::int64_t n = std::int64_t(rows) * F;
    if (n <= 0) return;
    constexpr int W = detail::pack_width<T>;
    if (detail::swiglu_packs<T>(F, ld, {out, gate, up}))
        detail::swiglu_forward_kernel<W><<<detail::blocks_for(n, W), detail::threads_per_block, 0, detail::stream()>>>(
            out, gate, up, rows, F, ld);
    else
        detail::swiglu_forward_kernel<1><<<detail::blocks_for(n), detail::threads_per_block, 0, detail::stream()>>>(
            out, gate, up, rows, F, ld);
    SGT_CUDA_LAUNCHED(swiglu_forward_kernel);
}

// dgate = dout · u · silu'(g),  dup = dout · silu(g) (overwritten: the FFN's scratch; with ld = F, dgate may be
// dout: each pack is read before it is written);  silu'(g) = σ(g) (1 + g (1 − σ(g))).
template <class T>
void swiglu_backward(cuda, T* dgate, T* dup, const T* dout, const T* gate, const T* up, int rows, int F,
                     std::int64_t ld) {
    const std::int64_t n = std::int64_t(rows) * F;
    if (n <= 0) return;
    constexpr int W = detail::pack_width<T>;
    if (detail::swiglu_packs<T>(F, ld, {dgate, dup, dout, gate, up}))
        detail::swiglu_backward_kernel<W><<<detail::blocks_for(n, 2 * W), detail::threads_per_block, 0,
                                            detail::stream()>>>(dgate, dup, dout, gate, up, rows, F, ld);
    else
        detail::swiglu_backward_kernel<1><<<detail::blocks_for(n, 4), detail::threads_per_block, 0,
                                            detail::stream()>>>(dgate, dup, dout, gate, up, rows, F, ld);
    SGT_CUDA_LAUNCHED(swiglu_backward_kernel);
}

}  // namespace sgt
