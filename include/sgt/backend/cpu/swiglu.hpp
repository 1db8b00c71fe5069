// sgt/backend/cpu/swiglu.hpp: the SwiGLU gate s = silu(g) ⊙ u of the FFN W_2(silu(W_1 n) ⊙ W_3 n), forward and backward.
#pragma once

#include <cmath>
#include <cstdint>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

template <class T>
void swiglu_forward(cpu, T* out, const T* gate, const T* up, std::int64_t n) {
    parallel_blocks(n, detail::grain_for(n, 65536), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) {
            const T g = gate[i];
            out[i] = g / (T(1) + std::exp(-g)) * up[i];
        }
    });
}

// dgate += dout · u · silu'(g),  dup += dout · silu(g);  silu'(g) = σ(g) (1 + g (1 − σ(g))).
template <class T>
void swiglu_backward(cpu, T* dgate, T* dup, const T* dout, const T* gate, const T* up, std::int64_t n) {
    parallel_blocks(n, detail::grain_for(n, 65536), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) {
            const T g = gate[i];
            const T sig = T(1) / (T(1) + std::exp(-g));
            dgate[i] += dout[i] * up[i] * sig * (T(1) + g * (T(1) - sig));
            dup[i] += dout[i] * g * sig;
        }
    });
}

}  // namespace sgt
