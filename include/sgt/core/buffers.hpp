// sgt/core/buffers.hpp: what the backend-generic templates share about buffers and the dimensions of a pass.
//
// Buffers only grow: a record or scratch buffer is resized the first time a larger pass needs it, so after the
// first step of a structure (or model::reserve) nothing is allocated. pass_dims are the run-time dimensions of
// one forward pass; the letters are those of config.hpp.
#pragma once

#include <cstdint>
#include <cstddef>

namespace sgt {

// Run-time dimensions of one forward pass. Letters as in config.hpp.
struct pass_dims {
    int B = 0, T = 0, C = 0, NH = 0, HD = 0, F = 0, V = 0;
    double eps = 1e-5;
    std::int64_t tokens() const { return std::int64_t(B) * T; }
};

namespace detail {
// Grows b to at least n elements; never shrinks, and what it held does not survive a growth (a buffer that can
// reallocate without copying does so: its old contents, possibly never written, are not worth a copy).
template <class Buffer>
void grow(Buffer& b, std::int64_t n) {
    if (std::int64_t(b.size()) >= n) return;
    if constexpr (requires { b.reallocate(std::size_t(n)); })
        b.reallocate(std::size_t(n));
    else
        b.resize(std::size_t(n));
}
}  // namespace detail

}  // namespace sgt
