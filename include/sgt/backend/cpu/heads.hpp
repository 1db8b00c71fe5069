// sgt/backend/cpu/heads.hpp: packing the weights of a head subset, and per-head gains.
//
// A loop over the head set S computes ONLY those heads (spec Sec. 1): their rows of W_Q/W_K/W_V and columns of
// W_O are packed into small matrices so that each projection is one matrix product, and the packed
// gradients are scattered back. Packing costs O(|S|·HD·C) per pass, negligible beside the B·T·C·|S|·HD products.
#pragma once

#include <cstdint>
#include <span>

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
    for (int r = 0; r < C; ++r)
        for (int i = 0; i < n; ++i)
            accumulate(cpu{}, dst + std::int64_t(r) * NH * HD + heads[i] * HD, src + std::int64_t(r) * n * HD + i * HD, HD);
}

// x (N, n, HD): head i multiplied by gains[i], in place.
template <class T>
void scale_heads(cpu, T* x, std::span<const double> gains, std::int64_t N, int HD) {
    const int n = int(gains.size());
    for (std::int64_t r = 0; r < N; ++r)
        for (int i = 0; i < n; ++i)
            if (gains[i] != 1.0) scale(cpu{}, x + (r * n + i) * HD, HD, gains[i]);
}

}  // namespace sgt
