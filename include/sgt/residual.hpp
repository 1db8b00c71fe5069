// sgt/residual.hpp: the residual branch that closes an attention pass and an FFN (spec Sec. 1),
//
//     H' = H + dropout(x Wᵀ)        x (N, I), W (O, I), H and H' (N, O)
//
// forward and the gradient that enters the branch. Without dropout the residual is added inside the product (the
// backend's matmul_forward with an added input, cuBLASLt's C on the GPU): one pass over H' instead of three.
#pragma once

#include <cstdint>

#include "sgt/core/buffers.hpp"
#include "sgt/core/rng.hpp"

namespace sgt {

// out = in + dropout(x Wᵀ); mask (N, O) receives the dropout mask (grown here when dropout is on).
template <class T, class Backend, class Mask>
void residual_branch_forward(Backend be, T* out, Mask& mask, const T* x, const T* w, const T* in, int N, int I, int O,
                             double dropout, rng& dropout_rng) {
    const std::int64_t n = std::int64_t(N) * O;
    if (dropout > 0.0) {
        detail::grow(mask, n);
        matmul_forward(be, out, x, w, N, I, O);
        dropout_forward(be, out, mask.data(), n, dropout, dropout_rng);
        accumulate(be, out, in, n);
    } else {
        matmul_forward(be, out, x, w, N, I, O, false, in);
    }
}

// ∂L/∂(x Wᵀ) from ∂L/∂H' (dres, (N, O)): dres itself, or with dropout a copy into `scratch` through the mask.
template <class T, class Backend, class Buffer>
const T* residual_branch_grad(Backend be, const T* dres, Buffer& scratch, const T* mask, std::int64_t n,
                              double dropout) {
    if (dropout <= 0.0) return dres;
    detail::grow(scratch, n);
    copy(be, scratch.data(), dres, n);
    dropout_backward(be, scratch.data(), mask, n);
    return scratch.data();
}

}  // namespace sgt
