// sgt/ffn.hpp: the SwiGLU feed-forward sublayer h = H + W_2(silu(W_1 n) ⊙ W_3 n), n = RMSNorm_ffn(H)
// (spec Sec. 1), forward and backward. Backend-generic.
#pragma once

#include <cstdint>

#include "sgt/backend/common.hpp"  // overwrite
#include "sgt/core/buffers.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/residual.hpp"

namespace sgt {

template <class T>
struct ffn_weights {
    const T* norm;  // (C)     RMSNorm_ffn
    const T* w1;    // (F, C)  gate_proj
    const T* w3;    // (F, C)  up_proj
    const T* w2;    // (C, F)  down_proj
};

template <class T>
struct ffn_grads {
    T *norm, *w1, *w3, *w2;
};

template <class T, class Backend>
struct ffn_record {
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    const T* in = nullptr;  // (B, T, C)
    buffer<T> rstd;         // (B, T)     of RMSNorm_ffn(H) (its output is recomputed in the backward, not kept)
    buffer<T> gu;           // (B, T, 2F) [W_1 n, W_3 n] per token: one product with [W_1; W_3]
    buffer<T> act;          // (B, T, F)  silu(gate) ⊙ up
    buffer<T> out;          // (B, T, C)
    buffer<T> mask;         // (B, T, C)  dropout mask of the branch
};

// Scratch shared by all FFN sublayers: RMSNorm_ffn(H) of the one at hand (the forward's, then the backward's
// recomputation), and the gradients; w13 and dw13 only where W_1 and W_3 (or their gradients) are not adjacent.
template <class T, class Backend>
struct ffn_scratch {
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    buffer<T> x;  // (B, T, C)
    buffer<T> dy, dx, dact, dgu;
    buffer<T> w13, dw13;  // (2F, C)
};

namespace detail {
// [W_1; W_3] as one (2F, C) matrix: the weights themselves when the table keeps them adjacent (it does: gate_proj,
// then up_proj), else a copy in the scratch.
template <class T, class Backend>
const T* gate_up_weights(Backend be, const ffn_weights<T>& w, ffn_scratch<T, Backend>& s, const pass_dims& d) {
    const std::int64_t FC = std::int64_t(d.F) * d.C;
    if (w.w3 == w.w1 + FC) return w.w1;
    grow(s.w13, 2 * FC);
    copy(be, s.w13.data(), w.w1, FC);
    copy(be, s.w13.data() + FC, w.w3, FC);
    return s.w13.data();
}
}  // namespace detail

// The gate and up products are one product with [W_1; W_3] (its rows adjacent in the parameter table), and so
// are their two input-gradient products in the backward: one (N, 2F) x (2F, C) product instead of two of K = F,
// the second of which read and wrote ∂L/∂n again (measured on an H200: docs/BENCHMARKS.md).
template <class T, class Backend>
void ffn_forward(Backend be, ffn_record<T, Backend>& r, ffn_scratch<T, Backend>& s, const ffn_weights<T>& w,
                 const T* in, const pass_dims& d, double dropout, rng& dropout_rng) {
    const std::int64_t N = d.tokens();
    detail::grow(r.rstd, N);
    detail::grow(s.x, N * d.C);
    detail::grow(r.gu, N * 2 * d.F);
    detail::grow(r.act, N * d.F);
    detail::grow(r.out, N * d.C);
    r.in = in;
    rmsnorm_forward(be, s.x.data(), r.rstd.data(), in, w.norm, int(N), d.C, d.eps);
    matmul_forward(be, r.gu.data(), s.x.data(), detail::gate_up_weights(be, w, s, d), int(N), d.C, 2 * d.F);
    swiglu_forward(be, r.act.data(), r.gu.data(), r.gu.data() + d.F, int(N), d.F, 2 * std::int64_t(d.F));
    residual_branch_forward(be, r.out.data(), r.mask, r.act.data(), w.w2, in, int(N), d.F, d.C, dropout, dropout_rng);
}

// dres: on entry ∂L/∂h, on exit ∂L/∂H.
template <class T, class Backend>
void ffn_backward(Backend be, T* dres, const ffn_grads<T>& g, ffn_record<T, Backend>& r, const ffn_weights<T>& w,
                  ffn_scratch<T, Backend>& s, const pass_dims& d, double dropout) {
    const std::int64_t N = d.tokens(), FC = std::int64_t(d.F) * d.C;
    detail::grow(s.dx, N * d.C);
    detail::grow(s.dact, N * d.F);
    detail::grow(s.dgu, N * 2 * d.F);
    const T* dy = residual_branch_grad(be, static_cast<const T*>(dres), s.dy, r.mask.data(), N * d.C, dropout);
    // The scratch gradients are overwritten (no zeroing first); the weight gradients accumulate into g.
    matmul_backward(be, s.dact.data(), g.w2, dy, r.act.data(), w.w2, int(N), d.F, d.C, overwrite{.din = true});
    T* const dgu = s.dgu.data();  // [∂L/∂gate, ∂L/∂up] per token
    swiglu_backward(be, dgu, dgu + d.F, s.dact.data(), r.gu.data(), r.gu.data() + d.F, int(N), d.F,
                    2 * std::int64_t(d.F));
    rmsnorm_forward(be, s.x.data(), r.rstd.data(), r.in, w.norm, int(N), d.C, d.eps);  // x again, bit for bit
    const bool direct = g.w3 == g.w1 + FC;  // [∂L/∂W_1; ∂L/∂W_3] adjacent, as the weights
    // Where W_1 and W_3 are apart, gate_up_weights copies them again: the scratch copy is shared by every FFN
    // sublayer, so the forward's may since have been overwritten by a later layer's.
    if (!direct) detail::grow(s.dw13, 2 * FC);
    matmul_backward(be, s.dx.data(), direct ? g.w1 : s.dw13.data(), dgu, s.x.data(),
                    detail::gate_up_weights(be, w, s, d), int(N), d.C, 2 * d.F,
                    overwrite{.din = true, .dw = !direct});
    if (!direct) {
        accumulate(be, g.w1, s.dw13.data(), FC);
        accumulate(be, g.w3, s.dw13.data() + FC, FC);
    }
    rmsnorm_backward(be, dres, g.norm, s.dx.data(), r.in, w.norm, r.rstd.data(), int(N), d.C);
}

}  // namespace sgt
