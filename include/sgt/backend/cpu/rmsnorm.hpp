// sgt/backend/cpu/rmsnorm.hpp: RMSNorm(x; w) = x / sqrt(mean(x²) + eps) ⊙ w (spec Sec. 1), forward and backward.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

namespace detail {
// Rows per block of the RMSNorm passes: about 64K values.
inline std::int64_t rmsnorm_grain(int N, int C) {
    return grain_for(N, std::max<std::int64_t>(1, 65536 / std::max(C, 1)));
}
}  // namespace detail

// out (N, C), rstd (N) saved for the backward; in (N, C); w (C).
template <class T>
void rmsnorm_forward(cpu, T* out, T* rstd, const T* in, const T* w, int N, int C, double eps) {
    const auto wm = detail::const_vector_map<T>(w, C).array();
    parallel_blocks(N, detail::rmsnorm_grain(N, C), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            const auto x = detail::const_vector_map<T>(in + n * C, C);
            const double ss = x.template cast<double>().squaredNorm();
            const T r = T(1.0 / std::sqrt(ss / C + eps));
            rstd[n] = r;
            detail::vector_map<T>(out + n * C, C).array() = x.array() * r * wm;
        }
    });
}

// din (N, C) += ∂L/∂x; dw (C) += ∂L/∂w. With x̂ = x·rstd and g = dout ⊙ w:
// ∂L/∂x = rstd · (g − x̂ · mean(g ⊙ x̂)),  ∂L/∂w = Σ_n dout ⊙ x̂.
// Rows go in blocks; each block sums its rows' ∂L/∂w apart, and the blocks are added in order.
template <class T>
void rmsnorm_backward(cpu, T* din, T* dw, const T* dout, const T* in, const T* w, const T* rstd, int N, int C) {
    if (N <= 0) return;
    const std::int64_t grain = detail::rmsnorm_grain(N, C);
    const std::int64_t blocks = (N + grain - 1) / grain;
    std::vector<T, aligned_allocator<T>> partial(std::size_t(blocks * C), T(0));  // (blocks, C)
    const auto wm = detail::const_vector_map<T>(w, C).array();
    parallel_blocks(N, grain, [&](std::int64_t b, std::int64_t e) {
        auto dw_block = detail::vector_map<T>(partial.data() + (b / grain) * C, C).array();
        for (std::int64_t n = b; n < e; ++n) {
            const auto x = detail::const_vector_map<T>(in + n * C, C).array();
            const auto dy = detail::const_vector_map<T>(dout + n * C, C).array();
            const T r = rstd[n];
            const double dot =
                (dy.template cast<double>() * wm.template cast<double>() * x.template cast<double>()).sum() * r;
            const T m = T(dot / C);
            detail::vector_map<T>(din + n * C, C).array() += r * (dy * wm - x * r * m);
            dw_block += dy * (x * r);
        }
    });
    auto dwm = detail::vector_map<T>(dw, C);
    for (std::int64_t i = 0; i < blocks; ++i) dwm += detail::const_vector_map<T>(partial.data() + i * C, C);
}

}  // namespace sgt
