// sgt/backend/cpu/rmsnorm.hpp: RMSNorm(x; w) = x / sqrt(mean(x²) + eps) ⊙ w (spec Sec. 1), forward and backward.
#pragma once

#include <cmath>
#include <cstdint>

#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// out (N, C), rstd (N) saved for the backward; in (N, C); w (C).
template <class T>
void rmsnorm_forward(cpu, T* out, T* rstd, const T* in, const T* w, int N, int C, double eps) {
    parallel_blocks(N, detail::grain_for(N, std::max<std::int64_t>(1, 65536 / std::max(C, 1))),
                    [&](std::int64_t b, std::int64_t e) {
                        for (std::int64_t n = b; n < e; ++n) {
                            const T* x = in + n * C;
                            T* y = out + n * C;
                            double ss = 0.0;
                            for (int c = 0; c < C; ++c) ss += double(x[c]) * x[c];
                            const T r = T(1.0 / std::sqrt(ss / C + eps));
                            rstd[n] = r;
                            for (int c = 0; c < C; ++c) y[c] = x[c] * r * w[c];
                        }
                    });
}

// din (N, C) += ∂L/∂x; dw (C) += ∂L/∂w. With x̂ = x·rstd and g = dout ⊙ w:
// ∂L/∂x = rstd · (g − x̂ · mean(g ⊙ x̂)),  ∂L/∂w = Σ_n dout ⊙ x̂.
template <class T>
void rmsnorm_backward(cpu, T* din, T* dw, const T* dout, const T* in, const T* w, const T* rstd, int N, int C) {
    for (int n = 0; n < N; ++n) {
        const T* x = in + std::int64_t(n) * C;
        const T* dy = dout + std::int64_t(n) * C;
        T* dx = din + std::int64_t(n) * C;
        const T r = rstd[n];
        double dot = 0.0;
        for (int c = 0; c < C; ++c) dot += double(dy[c]) * w[c] * x[c] * r;
        const T m = T(dot / C);
        for (int c = 0; c < C; ++c) {
            const T xhat = x[c] * r;
            dx[c] += r * (dy[c] * w[c] - xhat * m);
            dw[c] += dy[c] * xhat;
        }
    }
}

}  // namespace sgt
