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
    buffer<T> gate;         // (B, T, F)  W_1 n
    buffer<T> up;           // (B, T, F)  W_3 n
    buffer<T> act;          // (B, T, F)  silu(gate) ⊙ up
    buffer<T> out;          // (B, T, C)
    buffer<T> mask;         // (B, T, C)  dropout mask of the branch
};

// Scratch shared by all FFN sublayers: RMSNorm_ffn(H) of the one at hand (the forward's, then the backward's
// recomputation), and the gradients (∂L/∂gate is written over ∂L/∂act).
template <class T, class Backend>
struct ffn_scratch {
    template <class U>
    using buffer = typename Backend::template buffer<U>;
    buffer<T> x;  // (B, T, C)
    buffer<T> dy, dx, dact, dup;
};

template <class T, class Backend>
void ffn_forward(Backend be, ffn_record<T, Backend>& r, ffn_scratch<T, Backend>& s, const ffn_weights<T>& w,
                 const T* in, const pass_dims& d, double dropout, rng& dropout_rng) {
    const std::int64_t N = d.tokens();
    detail::grow(r.rstd, N);
    detail::grow(s.x, N * d.C);
    detail::grow(r.gate, N * d.F);
    detail::grow(r.up, N * d.F);
    detail::grow(r.act, N * d.F);
    detail::grow(r.out, N * d.C);
    r.in = in;
    rmsnorm_forward(be, s.x.data(), r.rstd.data(), in, w.norm, int(N), d.C, d.eps);
    matmul_forward(be, r.gate.data(), s.x.data(), w.w1, int(N), d.C, d.F);
    matmul_forward(be, r.up.data(), s.x.data(), w.w3, int(N), d.C, d.F);
    swiglu_forward(be, r.act.data(), r.gate.data(), r.up.data(), N * d.F);
    residual_branch_forward(be, r.out.data(), r.mask, r.act.data(), w.w2, in, int(N), d.F, d.C, dropout, dropout_rng);
}

// dres: on entry ∂L/∂h, on exit ∂L/∂H.
template <class T, class Backend>
void ffn_backward(Backend be, T* dres, const ffn_grads<T>& g, ffn_record<T, Backend>& r, const ffn_weights<T>& w,
                  ffn_scratch<T, Backend>& s, const pass_dims& d, double dropout) {
    const std::int64_t N = d.tokens();
    detail::grow(s.dx, N * d.C);
    detail::grow(s.dact, N * d.F);
    detail::grow(s.dup, N * d.F);
    const T* dy = residual_branch_grad(be, static_cast<const T*>(dres), s.dy, r.mask.data(), N * d.C, dropout);
    // The scratch gradients are overwritten (no zeroing first); the weight gradients accumulate into g.
    matmul_backward(be, s.dact.data(), g.w2, dy, r.act.data(), w.w2, int(N), d.F, d.C, overwrite{.din = true});
    T* dgate = s.dact.data();  // ∂L/∂gate over ∂L/∂act (elementwise, in place)
    swiglu_backward(be, dgate, s.dup.data(), s.dact.data(), r.gate.data(), r.up.data(), N * d.F);
    rmsnorm_forward(be, s.x.data(), r.rstd.data(), r.in, w.norm, int(N), d.C, d.eps);  // x again, bit for bit
    matmul_backward(be, s.dx.data(), g.w1, dgate, s.x.data(), w.w1, int(N), d.C, d.F, overwrite{.din = true});
    matmul_backward(be, s.dx.data(), g.w3, s.dup.data(), s.x.data(), w.w3, int(N), d.C, d.F);
    rmsnorm_backward(be, dres, g.norm, s.dx.data(), r.in, w.norm, r.rstd.data(), int(N), d.C);
}

}  // namespace sgt
