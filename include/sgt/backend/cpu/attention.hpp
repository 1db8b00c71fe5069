// sgt/backend/cpu/attention.hpp: the causal softmax attention core over n heads (Eq. 1-3), forward and
// backward, with the last-row entropy of every head (Eq. 4) taken in the same pass.
//
// Layout: qkv (B, T, 3, n, HD) holds RoPE'd queries, RoPE'd keys and values of the n heads being computed
// (the packed projection's output); out (B, T, n, HD); probs (B, n, T, T) the attention matrices, saved for
// the backward (zero above the diagonal).
//
// Causal blocks: the queries of a block of rows see only the keys up to its last row, so every product stops
// at the diagonal block, and the blocks above it (about half of the T x T work at T = 256) are never computed.
#pragma once

#include <algorithm>
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

// Query rows (and key columns) per causal block: few enough that little is computed above the diagonal, many
// enough that each product is still an efficient matrix product.
inline constexpr int attention_block = 64;

// n values of scratch of the calling thread, kept between calls: a fresh T x T buffer per head would be a
// fresh mapping from the system (page faults included) each time.
template <class T>
T* thread_scratch(std::int64_t n) {
    thread_local cpu::buffer<T> s;
    if (std::int64_t(s.size()) < n) s.resize(std::size_t(n));
    return s.data();
}
}  // namespace detail

// How many T the forward saves for the backward: the (B, n, T, T) attention matrices.
template <class T>
std::int64_t attention_saved_size(cpu, int B, int T_, int n, int /*HD*/) {
    return std::int64_t(B) * n * T_ * T_;
}

// entropy (B, n): length-normalised entropy of the last query row of each head and sequence (null: not taken).
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
            detail::strided_map<T> o(out + std::int64_t(b) * T_ * n * HD + std::int64_t(i) * HD, T_, HD,
                                     Eigen::OuterStride<>(std::int64_t(n) * HD));
            for (int r0 = 0; r0 < T_; r0 += detail::attention_block) {  // queries r0..r1-1 see keys 0..r1-1
                const int r1 = std::min(T_, r0 + detail::attention_block), rows = r1 - r0;
                p.block(r0, 0, rows, r1).noalias() = (q.middleRows(r0, rows) * k.topRows(r1).transpose()) * scale;
                for (int t = r0; t < r1; ++t) {  // causal softmax of row t over keys 0..t
                    auto r = p.row(t);
                    const T m = r.head(t + 1).maxCoeff();
                    r.head(t + 1) = (r.head(t + 1).array() - m).exp();
                    r.head(t + 1) /= r.head(t + 1).sum();
                    r.tail(T_ - t - 1).setZero();
                }
                o.middleRows(r0, rows).noalias() = p.block(r0, 0, rows, r1) * v.topRows(r1);
            }
            if (entropy) entropy[bh] = row_entropy<T>(std::span<const T>(p.row(T_ - 1).data(), std::size_t(T_)));
        }
    });
}

// dqkv (B, T, 3, n, HD) = gradients of the RoPE'd q, k and v (overwrites), from dout (B, T, n, HD).
// With S = scores and P = softmax(S): dP = dO Vᵀ, dV = Pᵀ dO, dS = P ⊙ (dP − rowsum(dP ⊙ P)),
// dQ = dS K / √HD, dK = dSᵀ Q / √HD. dQ goes by blocks of query rows (keys up to the block's last row), dK and
// dV by blocks of key rows (queries from the block's first row on): dS and P are zero above the diagonal.
template <class T>
void attention_backward(cpu, T* dqkv, const T* dout, const T* qkv, const T* probs, int B, int T_, int n, int HD) {
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    const T scale = T(1.0 / std::sqrt(double(HD)));
    constexpr int blk = detail::attention_block;
    parallel_blocks(std::int64_t(B) * n, 1, [&](std::int64_t first, std::int64_t last) {
        detail::matrix_map<T> ds(detail::thread_scratch<T>(std::int64_t(T_) * T_), T_, T_);  // dP, then dS in place
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
            for (int r0 = 0; r0 < T_; r0 += blk) {
                const int r1 = std::min(T_, r0 + blk), rows = r1 - r0;
                ds.block(r0, 0, rows, r1).noalias() = dout_m.middleRows(r0, rows) * v.topRows(r1).transpose();
                for (int t = r0; t < r1; ++t) {
                    const T dot = p.row(t).head(t + 1).dot(ds.row(t).head(t + 1));
                    ds.row(t).head(t + 1) =
                        p.row(t).head(t + 1).cwiseProduct((ds.row(t).head(t + 1).array() - dot).matrix());
                    ds.row(t).segment(t + 1, r1 - t - 1).setZero();
                }
                dq.middleRows(r0, rows).noalias() = (ds.block(r0, 0, rows, r1) * k.topRows(r1)) * scale;
            }
            for (int c0 = 0; c0 < T_; c0 += blk) {
                const int cols = std::min(T_, c0 + blk) - c0, below = T_ - c0;
                dk.middleRows(c0, cols).noalias() =
                    (ds.block(c0, c0, below, cols).transpose() * q.bottomRows(below)) * scale;
                dv.middleRows(c0, cols).noalias() = p.block(c0, c0, below, cols).transpose() * dout_m.bottomRows(below);
            }
        }
    });
}

}  // namespace sgt
