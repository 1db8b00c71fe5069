// sgt/backend/cpu/matmul.hpp: the linear layer y = x Wᵀ (weights stored (out, in), as PyTorch's Linear),
// forward and backward, on Eigen's matrix products. Each product is cut into blocks of output rows that depend
// on its size only, one Eigen product per block, the blocks spread over sgt::threads(): the reduction over the
// inner dimension is never split, so results do not depend on the thread count.
#pragma once

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

namespace detail {
// Output rows per block: at least 16 (Eigen's kernels work on a few rows at once), at most 64 blocks.
inline std::int64_t matmul_grain(std::int64_t rows) { return grain_for(rows, 16); }
}  // namespace detail

// out (N, O) = in (N, I) · w (O, I)ᵀ; with accumulate, out += instead.
template <class T>
void matmul_forward(cpu, T* out, const T* in, const T* w, int N, int I, int O, bool accumulate = false) {
    detail::const_matrix_map<T> W(w, O, I);
    parallel_blocks(N, detail::matmul_grain(N), [&](std::int64_t b, std::int64_t e) {
        detail::const_matrix_map<T> x(in + b * I, e - b, I);
        detail::matrix_map<T> y(out + b * O, e - b, O);
        if (accumulate)
            y.noalias() += x * W.transpose();
        else
            y.noalias() = x * W.transpose();
    });
}

// din (N, I) += dout · w;  dw (O, I) += doutᵀ · in. Either gradient output may be null to skip it.
template <class T>
void matmul_backward(cpu, T* din, T* dw, const T* dout, const T* in, const T* w, int N, int I, int O) {
    if (din) {
        detail::const_matrix_map<T> W(w, O, I);
        parallel_blocks(N, detail::matmul_grain(N), [&](std::int64_t b, std::int64_t e) {
            detail::const_matrix_map<T> dy(dout + b * O, e - b, O);
            detail::matrix_map<T>(din + b * I, e - b, I).noalias() += dy * W;
        });
    }
    if (dw) {
        detail::const_matrix_map<T> dy(dout, N, O), x(in, N, I);
        parallel_blocks(O, detail::matmul_grain(O), [&](std::int64_t b, std::int64_t e) {
            detail::matrix_map<T>(dw + b * I, e - b, I).noalias() += dy.middleCols(b, e - b).transpose() * x;
        });
    }
}

}  // namespace sgt
