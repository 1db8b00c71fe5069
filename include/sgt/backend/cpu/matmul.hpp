// sgt/backend/cpu/matmul.hpp: the linear layer y = x Wᵀ (weights stored (out, in), as PyTorch's Linear),
// forward and backward, on Eigen's matrix products (over OpenBLAS where CMake's SGT_OPENBLAS is on). Each product
// is cut into blocks of output rows that depend on its size only, one Eigen product per block, the blocks spread
// over sgt::threads(): the reduction over the inner dimension is never split, so results do not depend on the
// thread count.
#pragma once

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

namespace detail {
// Output rows per block: about 256. Each block is a product of its own that packs the whole other operand again
// (the weights, or the input for a weight gradient), so that small blocks pay for that packing many times: 16-row
// blocks made the char_small step's products 1.4x slower than 256-row ones. At least 4 blocks and an even number,
// so that 2 or 4 threads share them evenly; at least 16 rows (the kernels work on a few rows at once), at most
// 64 blocks.
inline std::int64_t matmul_grain(std::int64_t rows) {
    std::int64_t blocks = std::max<std::int64_t>(4, (rows + 255) / 256);
    blocks = std::min(blocks + blocks % 2, max_blocks);
    return std::max<std::int64_t>(16, (rows + blocks - 1) / blocks);
}
}  // namespace detail

// out (N, O) = in (N, I) · w (O, I)ᵀ, plus `add` (N, O) where given (a residual: out may alias it); with
// accumulate, out += instead. A product of up to 16 rows (a decode step's: one row per sequence), which would be
// one block of rows, over a weight matrix of at least 2^20 elements is cut into blocks of output columns instead,
// so that the threads share the reading of the weights (gpt2's layer products and LM head; smaller ones are not
// worth waking the threads for).
template <class T>
void matmul_forward(cpu, T* out, const T* in, const T* w, int N, int I, int O, bool accumulate = false,
                    const T* add = nullptr) {
    detail::const_matrix_map<T> W(w, O, I);
    auto product = [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
        detail::const_matrix_map<T> x(in + r0 * I, r1 - r0, I);
        detail::strided_matrix_map<T> y(out + r0 * O + c0, r1 - r0, c1 - c0, Eigen::OuterStride<>(O));
        if (add && add != out)
            y = detail::const_strided_matrix_map<T>(add + r0 * O + c0, r1 - r0, c1 - c0, Eigen::OuterStride<>(O));
        if (accumulate || add)
            y.noalias() += x * W.middleRows(c0, c1 - c0).transpose();
        else
            y.noalias() = x * W.middleRows(c0, c1 - c0).transpose();
    };
    if (N <= 16 && std::int64_t(O) * I >= (std::int64_t(1) << 20))
        parallel_blocks(O, detail::matmul_grain(O), [&](std::int64_t b, std::int64_t e) { product(0, N, b, e); });
    else
        parallel_blocks(N, detail::matmul_grain(N), [&](std::int64_t b, std::int64_t e) { product(b, e, 0, O); });
}

// din (N, I) += dout · w;  dw (O, I) += doutᵀ · in (each = instead where `ow` says). Either gradient output may
// be null to skip it.
template <class T>
void matmul_backward(cpu, T* din, T* dw, const T* dout, const T* in, const T* w, int N, int I, int O,
                     overwrite ow = {}) {
    if (din) {
        detail::const_matrix_map<T> W(w, O, I);
        parallel_blocks(N, detail::matmul_grain(N), [&](std::int64_t b, std::int64_t e) {
            detail::const_matrix_map<T> dy(dout + b * O, e - b, O);
            detail::matrix_map<T> dx(din + b * I, e - b, I);
            if (ow.din)
                dx.noalias() = dy * W;
            else
                dx.noalias() += dy * W;
        });
    }
    if (dw) {
        detail::const_matrix_map<T> dy(dout, N, O), x(in, N, I);
        parallel_blocks(O, detail::matmul_grain(O), [&](std::int64_t b, std::int64_t e) {
            detail::matrix_map<T> g(dw + b * I, e - b, I);
            if (ow.dw)
                g.noalias() = dy.middleCols(b, e - b).transpose() * x;
            else
                g.noalias() += dy.middleCols(b, e - b).transpose() * x;
        });
    }
}

}  // namespace sgt
