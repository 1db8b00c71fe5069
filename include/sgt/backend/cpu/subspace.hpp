// sgt/backend/cpu/subspace.hpp: the row operations of a loop run computed in the looped heads' subspace
// (loop_subspace.hpp has the algebra): squared row norms s, the normalisation of projections a by s with RoPE after
// it, the update of s and u = x W_O by a pass's head outputs, and the column scaling W diag(γ) of the norm's weight
// folded into W.
// Rows of s are accum_t<T>, as the normalisation's sums are elsewhere.
#pragma once

#include <cmath>
#include <cstdint>

#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu/backend.hpp"
#include "sgt/backend/cpu/rope.hpp"

namespace sgt {

namespace detail {
inline std::int64_t subspace_grain(int N, int W) { return grain_for(N, std::max<std::int64_t>(1, 65536 / std::max(W, 1))); }
// 1 / sqrt(s / C + eps), with s clamped at 0 (a sum of squares that rounding took below it).
template <class A>
inline A subspace_rstd(A s, int C, double eps) {
    return A(1.0 / std::sqrt(std::max(double(s), 0.0) / C + eps));
}
}  // namespace detail

// s (N) = Σ_c x², rows of x (N, C).
template <class T>
void row_sum_squares(cpu, accum_t<T>* s, const T* x, int N, int C) {
    parallel_blocks(N, detail::subspace_grain(N, C), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n)
            s[n] = accum_t<T>(detail::const_vector_map<T>(x + n * C, C).template cast<double>().squaredNorm());
    });
}

// dx (N, C) += 2 ds ⊙ x: the gradient of s = Σ_c x² (row_sum_squares).
template <class T>
void row_sum_squares_backward(cpu, T* dx, const accum_t<T>* ds, const T* x, int N, int C) {
    parallel_blocks(N, detail::subspace_grain(N, C), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n)
            detail::vector_map<T>(dx + n * C, C) += T(2 * ds[n]) * detail::const_vector_map<T>(x + n * C, C);
    });
}

// out (N, W) = rope(a · r), r = 1 / sqrt(s / C + eps) per row: the RMS normalisation of a row whose projections a
// and squared norm s are known (a = x diag(γ) Wᵀ, so that out = RMSNorm(x; γ) Wᵀ), then the rotation of its first
// rope.heads head vectors (the q and k of a q, k, v row; none where rope.heads = 0).
template <class T>
void subspace_normalize(cpu, T* out, const T* a, const accum_t<T>* s, int N, int W, int C, double eps,
                        rope_rows<accum_t<T>> rope) {
    const int half = rope.HD / 2;
    parallel_blocks(N, detail::subspace_grain(N, W), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            detail::vector_map<T>(out + n * W, W) =
                T(detail::subspace_rstd(s[n], C, eps)) * detail::const_vector_map<T>(a + n * W, W);
            if (rope.heads > 0) {
                const std::int64_t t = n % rope.T;
                detail::rope_row(out + n * W, rope.cos + t * half, rope.sin + t * half, rope.heads, rope.HD, false);
            }
        }
    });
}

// Its backward from dout = ∂L/∂out (N, W), with `out` as the forward wrote it: ds += −r² / (2C) · Σ_w out ⊙ dout
// (∂L/∂s through r; the rotation, orthogonal, leaves the sum as it is) and da = or += rope⁻¹(r · dout) (∂L/∂a;
// `add` chooses). da may be dout itself (then add is false); otherwise dout is left unspecified.
template <class T>
void subspace_normalize_backward(cpu, accum_t<T>* ds, T* da, T* dout, const T* out, const accum_t<T>* s, int N, int W,
                                 int C, double eps, rope_rows<accum_t<T>> rope, bool add) {
    const int half = rope.HD / 2;
    parallel_blocks(N, detail::subspace_grain(N, W), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            auto dy = detail::vector_map<T>(dout + n * W, W);
            const double r = double(detail::subspace_rstd(s[n], C, eps));
            const double dot = (detail::const_vector_map<T>(out + n * W, W).template cast<double>().array() *
                                dy.template cast<double>().array()).sum();
            ds[n] += accum_t<T>(-r * r / (2.0 * C) * dot);
            dy *= T(r);
            if (rope.heads > 0) {
                const std::int64_t t = n % rope.T;
                detail::rope_row(dout + n * W, rope.cos + t * half, rope.sin + t * half, rope.heads, rope.HD, true);
            }
            if (add)
                detail::vector_map<T>(da + n * W, W) += dy;
            else if (da != dout)
                detail::vector_map<T>(da + n * W, W) = dy;
        }
    });
}

// A pass adds o W_Oᵀ to x, so u = x W_O gains t = o G (G = W_Oᵀ W_O) and s = ‖x‖² gains o·(2u + t):
// u_out = u_in + t,  s_out = s_in + Σ_j o ⊙ (2 u_in + t), rows of m = n·HD.
template <class T>
void subspace_update(cpu, accum_t<T>* s_out, T* u_out, const accum_t<T>* s_in, const T* u_in, const T* o, const T* t,
                     int N, int m) {
    parallel_blocks(N, detail::subspace_grain(N, m), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            const auto u = detail::const_vector_map<T>(u_in + n * m, m).template cast<double>().array();
            const auto tt = detail::const_vector_map<T>(t + n * m, m).template cast<double>().array();
            const auto oo = detail::const_vector_map<T>(o + n * m, m).template cast<double>().array();
            s_out[n] = accum_t<T>(double(s_in[n]) + (oo * (2.0 * u + tt)).sum());
            detail::vector_map<T>(u_out + n * m, m) =
                detail::const_vector_map<T>(u_in + n * m, m) + detail::const_vector_map<T>(t + n * m, m);
        }
    });
}

// Its backward, but for the products with G: from ds (∂L/∂s_out) and du (∂L/∂u_out, updated in place to ∂L/∂u_in),
// with u = u_out: w = du + ds ⊙ o (overwritten; ∂L/∂G = Σ oᵀ w, symmetrised by the caller), d_o += 2 ds ⊙ u,
// du += 2 ds ⊙ o. The caller adds du G into d_o before this call (it needs ∂L/∂u_out).
template <class T>
void subspace_update_backward(cpu, T* d_o, T* du, T* w, const accum_t<T>* ds, const T* o, const T* u, int N, int m) {
    parallel_blocks(N, detail::subspace_grain(N, m), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            const T g = T(ds[n]);
            const auto oo = detail::const_vector_map<T>(o + n * m, m);
            auto dun = detail::vector_map<T>(du + n * m, m);
            detail::vector_map<T>(w + n * m, m) = dun + g * oo;
            detail::vector_map<T>(d_o + n * m, m) += T(2) * g * detail::const_vector_map<T>(u + n * m, m);
            dun += T(2) * g * oo;
        }
    });
}

// out (rows, cols) = w diag(g).
template <class T>
void scale_columns(cpu, T* out, const T* w, const T* g, int rows, int cols) {
    const auto gm = detail::const_vector_map<T>(g, cols).array();
    parallel_blocks(rows, detail::subspace_grain(rows, cols), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t r = b; r < e; ++r)
            detail::vector_map<T>(out + r * cols, cols).array() = detail::const_vector_map<T>(w + r * cols, cols).array() * gm;
    });
}

// Its backward from dout (rows, cols): dw = dout diag(g) (overwritten), dg += Σ_rows dout ⊙ w (rows in order).
template <class T>
void scale_columns_backward(cpu, T* dw, T* dg, const T* dout, const T* w, const T* g, int rows, int cols) {
    const auto gm = detail::const_vector_map<T>(g, cols).array();
    auto dgm = detail::vector_map<T>(dg, cols);
    for (std::int64_t r = 0; r < rows; ++r) {
        const auto dy = detail::const_vector_map<T>(dout + r * cols, cols).array();
        detail::vector_map<T>(dw + r * cols, cols).array() = dy * gm;
        dgm.array() += dy * detail::const_vector_map<T>(w + r * cols, cols).array();
    }
}

}  // namespace sgt
