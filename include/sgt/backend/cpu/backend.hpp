// sgt/backend/cpu/backend.hpp: the CPU backend tag, its buffers and the elementwise helpers every model needs.
//
// Backends are tag types. Every leaf op is a free function overloaded on the tag as its first argument:
// backend/cpu/rmsnorm.hpp gives rmsnorm_forward(cpu, ...), and backend/cuda/rmsnorm.cuh will give
// rmsnorm_forward(cuda, ...) with the same parameters. Shared templates call `rmsnorm_forward(Backend{}, ...)`;
// an op a backend lacks fails to compile with an error naming the op and the backend tag.
// Gradients ACCUMULATE (+=) into their outputs throughout, as the residual stream needs.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/core/step_graph.hpp"

namespace sgt {

// Allocator of 64-byte-aligned memory (a cache line, and any SIMD width). Alignment is part of reproducibility:
// Eigen's vectorised reductions peel a different number of leading elements at different alignments, so with
// malloc's 16 bytes the same values at different addresses could round differently, and a run resumed into
// fresh buffers would not match the original bit for bit.
template <class T>
struct aligned_allocator {
    using value_type = T;
    static constexpr std::align_val_t alignment{64};
    aligned_allocator() = default;
    template <class U>
    aligned_allocator(const aligned_allocator<U>&) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), alignment)); }
    void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, alignment); }
    template <class U>
    bool operator==(const aligned_allocator<U>&) const noexcept { return true; }
};

struct cpu {
    static constexpr const char* name = "cpu";
    static constexpr bool host_memory = true;  // buffers are host memory: spans over them can be read directly
    template <class T>
    using buffer = std::vector<T, aligned_allocator<T>>;  // host memory; the CUDA backend uses device arenas
};

namespace detail {
template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using matrix_map = Eigen::Map<row_matrix<T>>;
template <class T>
using const_matrix_map = Eigen::Map<const row_matrix<T>>;
template <class T>
using vector_map = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <class T>
using const_vector_map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
}  // namespace detail

template <class T>
void fill_zero(cpu, T* x, std::int64_t n) {
    std::fill(x, x + n, T(0));
}

template <class T>
void copy(cpu, T* dst, const T* src, std::int64_t n) {
    std::copy(src, src + n, dst);
}

// Host <-> backend memory: plain copies here; transfers on the CUDA backend.
template <class T>
void copy_from_host(cpu, T* dst, const T* host_src, std::int64_t n) {
    std::copy(host_src, host_src + n, dst);
}
template <class T>
void copy_to_host(cpu, T* host_dst, const T* src, std::int64_t n) {
    std::copy(src, src + n, host_dst);
}

// out = a + b (out may alias a or b).
template <class T>
void add(cpu, T* out, const T* a, const T* b, std::int64_t n) {
    detail::vector_map<T>(out, n) = detail::const_vector_map<T>(a, n) + detail::const_vector_map<T>(b, n);
}

// y += x
template <class T>
void accumulate(cpu, T* y, const T* x, std::int64_t n) {
    detail::vector_map<T>(y, n) += detail::const_vector_map<T>(x, n);
}

template <class T>
void scale(cpu, T* x, std::int64_t n, double s) {
    detail::vector_map<T>(x, n) *= T(s);
}

// Σ x², accumulated in double.
template <class T>
double sum_squares(cpu, const T* x, std::int64_t n) {
    return detail::const_vector_map<T>(x, n).template cast<double>().squaredNorm();
}

// True when every value is finite.
template <class T>
bool all_finite(cpu, const T* x, std::int64_t n) {
    return detail::const_vector_map<T>(x, n).allFinite();
}

}  // namespace sgt
