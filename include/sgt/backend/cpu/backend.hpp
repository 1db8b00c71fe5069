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
#include <vector>

#include "sgt/core/rng.hpp"

namespace sgt {

struct cpu {
    static constexpr const char* name = "cpu";
    template <class T>
    using buffer = std::vector<T>;  // host memory; the CUDA backend uses device arenas instead
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
