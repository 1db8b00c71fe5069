// sgt/backend/cpu/backend.hpp: the CPU backend tag, its buffers and the elementwise helpers every model needs.
//
// Backends are tag types. Every leaf op is a free function overloaded on the tag as its first argument:
// backend/cpu/rmsnorm.hpp gives rmsnorm_forward(cpu, ...), and backend/cuda/rmsnorm.cuh will give
// rmsnorm_forward(cuda, ...) with the same parameters. Shared templates call `rmsnorm_forward(Backend{}, ...)`;
// an op a backend lacks fails to compile with an error naming the op and the backend tag.
// Gradients ACCUMULATE (+=) into their outputs throughout, as the residual stream needs.
//
// Threads: the ops parallelise with parallel_blocks, over blocks whose bounds depend on the problem size only,
// and reductions add their blocks' partial results in block order, so that results do not depend on the thread
// count (core/threads.hpp). Eigen's own product threading, which splits a product by the thread count and sizes
// its blocking by it, stays off: each Eigen product runs on one thread inside a block. The same holds for
// OpenBLAS where Eigen's products go through it (CMake's SGT_OPENBLAS, which defines EIGEN_USE_BLAS): it is set
// to one thread per call, whatever OPENBLAS_NUM_THREADS says.
#pragma once

#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <new>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/core/threads.hpp"
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
    // Out of memory is an sgt::error that says how much was asked for.
    T* allocate(std::size_t n) {
        require(n <= std::size_t(-1) / sizeof(T), "out of memory: a buffer of {} elements of {} bytes overflows",
                n, sizeof(T));
        try {
            return static_cast<T*>(::operator new(n * sizeof(T), alignment));
        } catch (const std::bad_alloc&) {
            fail("out of memory: cannot allocate a buffer of {} bytes ({:.2f} GiB) on the host", n * sizeof(T),
                 double(n * sizeof(T)) / double(1 << 30));
        }
    }
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
template <class T>  // a block of columns of a row-major matrix: rows `stride` elements apart
using strided_matrix_map = Eigen::Map<row_matrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using const_strided_matrix_map = Eigen::Map<const row_matrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using vector_map = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
template <class T>
using const_vector_map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;
}  // namespace detail

namespace detail {

#if defined(EIGEN_HAS_OPENMP)
// Eigen was included before this header with its OpenMP threading on: turn it off at run time instead.
inline const bool eigen_single_threaded = (Eigen::setNbThreads(1), true);
#endif

#if defined(SGT_OPENBLAS)
extern "C" void openblas_set_num_threads(int);
#endif

// OpenBLAS, where Eigen's products go through it, splits a product over its own threads, by their number: one per
// call instead (our blocks are the parallelism). Set on the first parallel op, once OpenBLAS has initialised
// itself (setting it from a static initialiser, possibly before OpenBLAS's own, crashed its thread server).
inline void blas_single_threaded() {
#if defined(SGT_OPENBLAS)
    static const bool once = (openblas_set_num_threads(1), true);
    (void)once;
#endif
}

// At most this many blocks per parallel op, so that per-block partial results fit on the stack.
inline constexpr std::int64_t max_blocks = 64;

// Block size for n items, at least `min_grain` of them, and at most max_blocks blocks: a function of n only.
inline std::int64_t grain_for(std::int64_t n, std::int64_t min_grain) {
    return std::max<std::int64_t>(min_grain, (n + max_blocks - 1) / max_blocks);
}

}  // namespace detail

// Calls f(begin, end) for the blocks [0, grain), [grain, 2 grain), ... of [0, n) on sgt::threads() threads.
// The blocks depend on n and grain only; f must not throw.
template <class F>
void parallel_blocks(std::int64_t n, std::int64_t grain, F&& f) {
    if (n <= 0) return;
    const std::int64_t blocks = (n + grain - 1) / grain;
    const int nt = int(std::min<std::int64_t>(threads(), blocks));
    detail::blas_single_threaded();
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (std::int64_t b = 0; b < blocks; ++b) f(b * grain, std::min(n, (b + 1) * grain));
}

// Σ over the blocks of parallel_blocks(n, grain_for(n, min_grain)) of block_sum(begin, end) -> Acc, added in
// block order: the same bits on any number of threads. Acc needs += and a value-initialised zero.
template <class Acc, class F>
Acc parallel_sum(std::int64_t n, std::int64_t min_grain, F&& block_sum) {
    const std::int64_t grain = detail::grain_for(n, min_grain);
    std::array<Acc, detail::max_blocks> partial{};
    parallel_blocks(n, grain, [&](std::int64_t b, std::int64_t e) { partial[std::size_t(b / grain)] = block_sum(b, e); });
    Acc total{};
    for (std::int64_t i = 0; i * grain < n; ++i) total += partial[std::size_t(i)];
    return total;
}

namespace detail {
// Elements per block of the elementwise ops below: enough work that a block is worth a thread.
inline std::int64_t elementwise_grain(std::int64_t n) { return grain_for(n, 1 << 15); }
}  // namespace detail

template <class T>
void fill_zero(cpu, T* x, std::int64_t n) {
    parallel_blocks(n, detail::elementwise_grain(n), [&](std::int64_t b, std::int64_t e) { std::fill(x + b, x + e, T(0)); });
}

template <class T>
void copy(cpu, T* dst, const T* src, std::int64_t n) {
    parallel_blocks(n, detail::elementwise_grain(n), [&](std::int64_t b, std::int64_t e) { std::copy(src + b, src + e, dst + b); });
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
    parallel_blocks(n, detail::elementwise_grain(n), [&](std::int64_t i, std::int64_t e) {
        detail::vector_map<T>(out + i, e - i) =
            detail::const_vector_map<T>(a + i, e - i) + detail::const_vector_map<T>(b + i, e - i);
    });
}

// y += x
template <class T>
void accumulate(cpu, T* y, const T* x, std::int64_t n) {
    parallel_blocks(n, detail::elementwise_grain(n), [&](std::int64_t b, std::int64_t e) {
        detail::vector_map<T>(y + b, e - b) += detail::const_vector_map<T>(x + b, e - b);
    });
}

template <class T>
void scale(cpu, T* x, std::int64_t n, double s) {
    parallel_blocks(n, detail::elementwise_grain(n), [&](std::int64_t b, std::int64_t e) {
        detail::vector_map<T>(x + b, e - b) *= T(s);
    });
}

// Σ x², accumulated in double (in blocks, added in order: independent of the thread count).
template <class T>
double sum_squares(cpu, const T* x, std::int64_t n) {
    return parallel_sum<double>(n, 1 << 14, [&](std::int64_t b, std::int64_t e) {
        return detail::const_vector_map<T>(x + b, e - b).template cast<double>().squaredNorm();
    });
}

// The same into backend memory: *out = Σ x² (on a GPU without a round trip to the host).
template <class T>
void sum_squares(cpu, const T* x, std::int64_t n, double* out) {
    *out = sum_squares(cpu{}, x, n);
}

// True when every value is finite.
template <class T>
bool all_finite(cpu, const T* x, std::int64_t n) {
    return detail::const_vector_map<T>(x, n).allFinite();
}

}  // namespace sgt
