// sgt/backend/cpu/matmul.hpp: the linear layer y = x Wᵀ (weights stored (out, in), as PyTorch's Linear),
// forward and backward, on Eigen's matrix products (multi-threaded when OpenMP is on).
#pragma once

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// out (N, O) = in (N, I) · w (O, I)ᵀ; with accumulate, out += instead.
template <class T>
void matmul_forward(cpu, T* out, const T* in, const T* w, int N, int I, int O, bool accumulate = false) {
    detail::const_matrix_map<T> x(in, N, I), W(w, O, I);
    detail::matrix_map<T> y(out, N, O);
    if (accumulate)
        y.noalias() += x * W.transpose();
    else
        y.noalias() = x * W.transpose();
}

// din (N, I) += dout · w;  dw (O, I) += doutᵀ · in. Either gradient output may be null to skip it.
template <class T>
void matmul_backward(cpu, T* din, T* dw, const T* dout, const T* in, const T* w, int N, int I, int O) {
    detail::const_matrix_map<T> dy(dout, N, O);
    if (din) detail::matrix_map<T>(din, N, I).noalias() += dy * detail::const_matrix_map<T>(w, O, I);
    if (dw) detail::matrix_map<T>(dw, O, I).noalias() += dy.transpose() * detail::const_matrix_map<T>(in, N, I);
}

}  // namespace sgt
