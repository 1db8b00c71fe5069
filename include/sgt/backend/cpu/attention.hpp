// sgt/backend/cpu/attention.hpp: the causal softmax attention core over n heads (Eq. 1-3), forward and
// backward, with the last-row entropy of every head (Eq. 4) taken in the same pass.
//
// Layout: qkv (B, T, 3, n, HD) holds RoPE'd queries, RoPE'd keys and values of the n heads being computed
// (the packed projection's output); out (B, T, n, HD); probs (B, n, T, T) the attention matrices, saved for
// the backward (zero above the diagonal).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "sgt/backend/cpu/backend.hpp"
#include "sgt/core/row_entropy.hpp"

namespace sgt {

namespace detail {
template <class T>
using strided_map = Eigen::Map<row_matrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using const_strided_map = Eigen::Map<const row_matrix<T>, 0, Eigen::OuterStride<>>;
}  // namespace detail

// How many T the forward saves for the backward: the (B, n, T, T) attention matrices.
template <class T>
std::int64_t attention_saved_size(cpu, int B, int T_, int n, int /*HD*/) {
    return std::int64_t(B) * n * T_ * T_;
}

// entropy (B, n): length-normalised entropy of the last query row of each head and sequence.
template <class T>
void attention_forward(cpu, T* out, T* probs, double* entropy, const T* qkv, int B, int T_, int n, int HD) {
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    const T scale = T(1.0 / std::sqrt(double(HD)));
    parallel_blocks(std::int64_t(B) * n, 1, [&](std::int64_t first, std::int64_t last) {
        for (std::int64_t bh = first; bh < last; ++bh) {
            const int b = int(bh / n), i = int(bh % n);
            const T* base = qkv + std::int64_t(b) * T_ * row + std::int64_t(i) * HD;
            detail::const_strided_map<T> q(base, T_, HD, Eigen::OuterStride<>(row));
            detail::const_strided_map<T> k(base + std::int64_t(n) * HD, T_, HD, Eigen::OuterStride<>(row));
            detail::const_strided_map<T> v(base + 2 * std::int64_t(n) * HD, T_, HD, Eigen::OuterStride<>(row));
            detail::matrix_map<T> p(probs + std::int64_t(bh) * T_ * T_, T_, T_);
            p.noalias() = (q * k.transpose()) * scale;
            for (int t = 0; t < T_; ++t) {  // causal softmax of row t over keys 0..t
                auto r = p.row(t);
                const T m = r.head(t + 1).maxCoeff();
                r.head(t + 1) = (r.head(t + 1).array() - m).exp();
                r.head(t + 1) /= r.head(t + 1).sum();
                r.tail(T_ - t - 1).setZero();
            }
            detail::strided_map<T> o(out + std::int64_t(b) * T_ * n * HD + std::int64_t(i) * HD, T_, HD,
                                     Eigen::OuterStride<>(std::int64_t(n) * HD));
            o.noalias() = p * v;
            entropy[bh] = row_entropy<T>(std::span<const T>(p.row(T_ - 1).data(), std::size_t(T_)));
        }
    });
}

// dqkv (B, T, 3, n, HD) = gradients of the RoPE'd q, k and v (overwrites), from dout (B, T, n, HD).
// With S = scores and P = softmax(S): dP = dO Vᵀ, dV = Pᵀ dO, dS = P ⊙ (dP − rowsum(dP ⊙ P)),
// dQ = dS K / √HD, dK = dSᵀ Q / √HD.
template <class T>
void attention_backward(cpu, T* dqkv, const T* dout, const T* qkv, const T* probs, int B, int T_, int n, int HD) {
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    const T scale = T(1.0 / std::sqrt(double(HD)));
    parallel_blocks(std::int64_t(B) * n, 1, [&](std::int64_t first, std::int64_t last) {
        for (std::int64_t bh = first; bh < last; ++bh) {
            const int b = int(bh / n), i = int(bh % n);
            const std::int64_t off = std::int64_t(b) * T_ * row + std::int64_t(i) * HD;
            const std::int64_t nh = std::int64_t(n) * HD;
            detail::const_strided_map<T> q(qkv + off, T_, HD, Eigen::OuterStride<>(row));
            detail::const_strided_map<T> k(qkv + off + nh, T_, HD, Eigen::OuterStride<>(row));
            detail::const_strided_map<T> v(qkv + off + 2 * nh, T_, HD, Eigen::OuterStride<>(row));
            detail::strided_map<T> dq(dqkv + off, T_, HD, Eigen::OuterStride<>(row));
            detail::strided_map<T> dk(dqkv + off + nh, T_, HD, Eigen::OuterStride<>(row));
            detail::strided_map<T> dv(dqkv + off + 2 * nh, T_, HD, Eigen::OuterStride<>(row));
            detail::const_strided_map<T> dout_m(dout + std::int64_t(b) * T_ * nh + std::int64_t(i) * HD, T_, HD,
                                                Eigen::OuterStride<>(nh));
            detail::const_matrix_map<T> p(probs + std::int64_t(bh) * T_ * T_, T_, T_);
            detail::row_matrix<T> ds = dout_m * v.transpose();  // dP, then dS in place
            for (int t = 0; t < T_; ++t) {
                const T dot = p.row(t).head(t + 1).dot(ds.row(t).head(t + 1));
                ds.row(t).head(t + 1) = p.row(t).head(t + 1).cwiseProduct((ds.row(t).head(t + 1).array() - dot).matrix());
                ds.row(t).tail(T_ - t - 1).setZero();
            }
            dv.noalias() = p.transpose() * dout_m;
            dq.noalias() = (ds * k) * scale;
            dk.noalias() = (ds.transpose() * q) * scale;
        }
    });
}

}  // namespace sgt
