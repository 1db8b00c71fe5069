// sgt/backend/cpu/dropout.hpp: inverted dropout on a residual branch or the embeddings.
#pragma once

#include <cstdint>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// mask (n) ∈ {0, 1/(1−p)} drawn from r; x ⊙= mask. The mask is kept for the backward.
template <class T>
void dropout_forward(cpu, T* x, T* mask, std::int64_t n, double p, rng& r) {
    const T keep = T(1.0 / (1.0 - p));
    for (std::int64_t i = 0; i < n; ++i) {
        mask[i] = r.uniform() < p ? T(0) : keep;
        x[i] *= mask[i];
    }
}

// dx ⊙= mask, in place.
template <class T>
void dropout_backward(cpu, T* dx, const T* mask, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) dx[i] *= mask[i];
}

}  // namespace sgt
