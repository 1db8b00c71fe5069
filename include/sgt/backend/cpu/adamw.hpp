// sgt/backend/cpu/adamw.hpp: AdamW (decoupled weight decay, as torch.optim.AdamW) with global-norm clipping, over
// runs of one parameter buffer: g ← g·clip_factor(‖g‖), p ← p − lr·wd·p, then p ← p − lr/(1−β1^t) · m / (√v /
// √(1−β2^t) + ε).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// ‖g‖² is the sum of grad_sq[0..parts) (sum_squares of the trainable gradients, in backend memory); the rate and
// the bias corrections of step t are *s. Nothing is written when ‖g‖² is not finite.
template <class T>
void adamw_update(cpu, T* param, const T* grad, T* m, T* v, std::span<const adamw_run> runs, const adamw_hyper& h,
                  const adamw_step_values* s, const double* grad_sq, int parts) {
    double sq = 0.0;
    for (int i = 0; i < parts; ++i) sq += grad_sq[i];
    if (!std::isfinite(sq)) return;
    const double f = clip_factor(std::sqrt(sq), h.clip);
    const double step = s->lr / s->bias1, root_c2 = std::sqrt(s->bias2);
    for (const adamw_run& r : runs) {
        const double decay = 1.0 - s->lr * r.decay;
        T *p = param + r.offset, *mr = m + r.offset, *vr = v + r.offset;
        const T* g = grad + r.offset;
        parallel_blocks(r.n, detail::grain_for(r.n, 65536), [&](std::int64_t b, std::int64_t e) {
            for (std::int64_t i = b; i < e; ++i) {
                const double gi = double(g[i]) * f;
                const double mi = h.beta1 * mr[i] + (1.0 - h.beta1) * gi;
                const double vi = h.beta2 * vr[i] + (1.0 - h.beta2) * gi * gi;
                mr[i] = T(mi);
                vr[i] = T(vi);
                p[i] = T(double(p[i]) * decay - step * mi / (std::sqrt(vi) / root_c2 + h.eps));
            }
        });
    }
}

}  // namespace sgt
