// sgt/backend/cpu/swiglu.hpp: the SwiGLU gate s = silu(g) ⊙ u of the FFN W_2(silu(W_1 n) ⊙ W_3 n), forward and backward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// Vectorised (Eigen's exp over arrays): the scalar std::exp loop took most of the FFN's elementwise time.
template <class T>
void swiglu_forward(cpu, T* out, const T* gate, const T* up, std::int64_t n) {
    parallel_blocks(n, detail::grain_for(n, 1 << 15), [&](std::int64_t b, std::int64_t e) {
        const auto g = detail::const_vector_map<T>(gate + b, e - b).array();
        const auto u = detail::const_vector_map<T>(up + b, e - b).array();
        detail::vector_map<T>(out + b, e - b).array() = g / (T(1) + (-g).exp()) * u;
    });
}

// dgate = dout · u · silu'(g),  dup = dout · silu(g), silu'(g) = σ(g) (1 + g (1 − σ(g))); both overwritten (they
// are the FFN's scratch), and dgate may be dout itself. σ(g) is kept for a chunk of elements at a time, on the stack.
template <class T>
void swiglu_backward(cpu, T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
    constexpr int chunk = 256;
    parallel_blocks(n, detail::grain_for(n, 1 << 15), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; i += chunk) {
            const std::int64_t m = std::min<std::int64_t>(chunk, e - i);
            const auto g = detail::const_vector_map<T>(gate + i, m).array();
            const auto u = detail::const_vector_map<T>(up + i, m).array();
            const auto dy = detail::const_vector_map<T>(dout + i, m).array();
            const Eigen::Array<T, Eigen::Dynamic, 1, 0, chunk, 1> sig = T(1) / (T(1) + (-g).exp());
            detail::vector_map<T>(dup + i, m).array() = dy * g * sig;  // before dgate, which may be dout itself
            detail::vector_map<T>(dgate + i, m).array() = dy * u * sig * (T(1) + g * (T(1) - sig));
        }
    });
}

}  // namespace sgt
