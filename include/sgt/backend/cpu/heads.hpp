// sgt/backend/cpu/heads.hpp: packing the weights of a head subset, and per-head gains with their gradient.
//
// A loop over the head set S computes ONLY those heads (spec Sec. 1): their rows of W_Q/W_K/W_V and columns of
// W_O are packed into small matrices so that each projection is one matrix product, and the packed
// gradients are scattered back. Packing costs O(|S|·HD·C) per pass, negligible beside the B·T·C·|S|·HD products.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// dst (n·HD, C) = rows of src (NH·HD, C) of heads[0..n), in order.
template <class T>
void gather_head_rows(cpu, T* dst, const T* src, std::span<const int> heads, int HD, int C) {
    for (std::size_t i = 0; i < heads.size(); ++i)
        std::copy_n(src + std::int64_t(heads[i]) * HD * C, std::int64_t(HD) * C, dst + std::int64_t(i) * HD * C);
}

// dst rows of heads (NH·HD, C) += src (n·HD, C).
template <class T>
void scatter_add_head_rows(cpu, T* dst, const T* src, std::span<const int> heads, int HD, int C) {
    for (std::size_t i = 0; i < heads.size(); ++i)
        accumulate(cpu{}, dst + std::int64_t(heads[i]) * HD * C, src + std::int64_t(i) * HD * C, std::int64_t(HD) * C);
}

// dst (C, n·HD) = columns of src (C, NH·HD) of heads[0..n), in order.
template <class T>
void gather_head_cols(cpu, T* dst, const T* src, std::span<const int> heads, int HD, int C, int NH) {
    const int n = int(heads.size());
    for (int r = 0; r < C; ++r)
        for (int i = 0; i < n; ++i)
            std::copy_n(src + std::int64_t(r) * NH * HD + heads[i] * HD, HD, dst + std::int64_t(r) * n * HD + i * HD);
}

// dst columns of heads (C, NH·HD) += src (C, n·HD).
template <class T>
void scatter_add_head_cols(cpu, T* dst, const T* src, std::span<const int> heads, int HD, int C, int NH) {
    const int n = int(heads.size());
    for (int r = 0; r < C; ++r)  // C·n runs of HD values: added in place (one parallel op each would cost more)
        for (int i = 0; i < n; ++i)
            detail::vector_map<T>(dst + std::int64_t(r) * NH * HD + heads[i] * HD, HD) +=
                detail::const_vector_map<T>(src + std::int64_t(r) * n * HD + i * HD, HD);
}

// Per-head gains (the fade transition, a variant's learned gains): x (N, n, HD), head i of row r multiplied in
// place by its gain: gains (n), one per head, or (N, n), one per row and head, when per_position.
template <class T>
void head_gain_forward(cpu, T* x, const T* gains, std::int64_t N, int n, int HD, bool per_position) {
    for (std::int64_t r = 0; r < N; ++r)
        for (int i = 0; i < n; ++i) {
            const T g = gains[per_position ? r * n + i : i];
            if (g != T(1)) detail::vector_map<T>(x + (r * n + i) * HD, HD) *= g;
        }
}

// Backward of y = g ⊙ x: unless dgains is null, dgains (as gains) += Σ_d x·dy, x being the forward's input
// (per-head gains sum over the rows in order, in accum_t, so the result does not depend on threads); then dy is
// scaled by the gains in place, becoming ∂L/∂x.
template <class T>
void head_gain_backward(cpu, T* dgains, T* dy, const T* x, const T* gains, std::int64_t N, int n, int HD,
                        bool per_position) {
    using A = accum_t<T>;
    if (dgains != nullptr) {
        std::vector<A> sum(per_position ? 0 : std::size_t(n), A(0));
        for (std::int64_t r = 0; r < N; ++r)
            for (int i = 0; i < n; ++i) {
                const std::int64_t o = (r * n + i) * HD;
                const A dot = detail::const_vector_map<T>(x + o, HD).template cast<A>().dot(
                    detail::const_vector_map<T>(dy + o, HD).template cast<A>());
                if (per_position)
                    dgains[r * n + i] += T(dot);
                else
                    sum[std::size_t(i)] += dot;
            }
        if (!per_position)
            for (int i = 0; i < n; ++i) dgains[i] += T(sum[std::size_t(i)]);
    }
    head_gain_forward(cpu{}, dy, gains, N, n, HD, per_position);
}

}  // namespace sgt
