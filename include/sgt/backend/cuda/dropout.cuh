// sgt/backend/cuda/dropout.cuh: inverted dropout on a residual branch or the embeddings.
// The mask of element i is a hash of (a 64-bit draw from the host rng, i), so a run is reproducible from the
// rng's state, which checkpoints keep. The draws differ from the CPU backend's (which takes one per element).
#pragma once

#include "sgt/backend/cuda/backend.cuh"
#include "sgt/core/rng.hpp"

namespace sgt {

// mask (n) ∈ {0, 1/(1−p)}; x ⊙= mask. The mask is kept for the backward.
template <class T>
void dropout_forward(cuda, T* x, T* mask, std::int64_t n, double p, rng& r) {
    const std::uint64_t key = r.next_u64();
    const accum_t<T> keep = accum_t<T>(1.0 / (1.0 - p));
    detail::for_each_index(mask, n, [=] __device__(std::int64_t i) {
        return detail::store<T>(detail::hash_uniform(key, std::uint64_t(i)) < p ? accum_t<T>(0) : keep);
    });
    dropout_backward(cuda{}, x, mask, n);  // x ⊙= mask, the same product
}

// dx ⊙= mask, in place.
template <class T>
void dropout_backward(cuda, T* dx, const T* mask, std::int64_t n) {
    using A = accum_t<T>;
    detail::map(dx, n, [] __device__(A d, A m) { return d * m; }, static_cast<const T*>(dx), mask);
}

}  // namespace sgt
