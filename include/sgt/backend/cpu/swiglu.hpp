// sgt/backend/cpu/swiglu.hpp: the SwiGLU gate s = silu(g) ⊙ u of the FFN W_2(silu(W_1 n) ⊙ W_3 n), forward and backward.
//
// Over `rows` rows of F elements: s and ∂L/∂s are (rows, F); g, u and their gradients are rows of stride ld, so
// that they may be the two halves of one (rows, 2F) product with [W_1; W_3] (ld = 2F, u = g + F), or two arrays
// of their own (ld = F).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

namespace detail {
constexpr int swiglu_chunk = 256;  // elements a step: its exponentials go into an aligned array on the stack

// Calls f(i, at, m) over the threads for the pieces of the flat (rows, F) index space that lie within one row, at
// most swiglu_chunk elements each: elements [i, i + m) of the (rows, F) arrays, [at, at + m) of those of stride ld.
template <class F>
void swiglu_chunks(int rows, int cols, std::int64_t ld, F&& f) {
    const std::int64_t n = std::int64_t(rows) * cols;
    parallel_blocks(n, grain_for(n, 1 << 15), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e;) {
            const std::int64_t r = i / cols, j = i % cols;
            const std::int64_t m = std::min<std::int64_t>({e - i, cols - j, swiglu_chunk});
            f(i, r * ld + j, m);
            i += m;
        }
    });
}
}  // namespace detail

// Vectorised (Eigen's exp over arrays): the scalar std::exp loop took most of the FFN's elementwise time. Eigen
// computes the elements before its destination's first aligned address with the scalar exp and the rest with its
// packet exp, which differ in the last bit, so e^{-g} goes into an aligned buffer on the stack a chunk at a time
// (as in the backward): the result is the same wherever out lies (issue found by a test of the strided layout).
template <class T>
void swiglu_forward(cpu, T* out, const T* gate, const T* up, int rows, int F, std::int64_t ld) {
    detail::swiglu_chunks(rows, F, ld, [&](std::int64_t i, std::int64_t at, std::int64_t m) {
        const auto g = detail::const_vector_map<T>(gate + at, m).array();
        const auto u = detail::const_vector_map<T>(up + at, m).array();
        const Eigen::Array<T, Eigen::Dynamic, 1, 0, detail::swiglu_chunk, 1> den = T(1) + (-g).exp();
        detail::vector_map<T>(out + i, m).array() = g / den * u;
    });
}

// dgate = dout · u · silu'(g),  dup = dout · silu(g), silu'(g) = σ(g) (1 + g (1 − σ(g))); both overwritten (they
// are the FFN's scratch), and with ld = F dgate may be dout itself. σ(g) is kept for a chunk of elements at a time,
// on the stack.
template <class T>
void swiglu_backward(cpu, T* dgate, T* dup, const T* dout, const T* gate, const T* up, int rows, int F,
                     std::int64_t ld) {
    detail::swiglu_chunks(rows, F, ld, [&](std::int64_t i, std::int64_t at, std::int64_t m) {
        const auto g = detail::const_vector_map<T>(gate + at, m).array();
        const auto u = detail::const_vector_map<T>(up + at, m).array();
        const auto dy = detail::const_vector_map<T>(dout + i, m).array();
        const Eigen::Array<T, Eigen::Dynamic, 1, 0, detail::swiglu_chunk, 1> sig = T(1) / (T(1) + (-g).exp());
        detail::vector_map<T>(dup + at, m).array() = dy * g * sig;  // before dgate, which may be dout itself
        detail::vector_map<T>(dgate + at, m).array() = dy * u * sig * (T(1) + g * (T(1) - sig));
    });
}

}  // namespace sgt
