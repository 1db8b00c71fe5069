// sgt/backend/cpu/adamw.hpp: one AdamW update of a parameter tensor (decoupled weight decay, as
// torch.optim.AdamW): p ← p − lr·wd·p, then p ← p − lr/(1−β1^t) · m / (√v / √(1−β2^t) + ε).
#pragma once

#include <cmath>
#include <cstdint>

#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// step t counts from 1; wd is this tensor's weight decay (0 for norm weights).
template <class T>
void adamw_update(cpu, T* param, const T* grad, T* m, T* v, std::int64_t n, const adamw_hyper& h, double wd, int t) {
    const double c1 = 1.0 - std::pow(h.beta1, t), c2 = 1.0 - std::pow(h.beta2, t);
    const double step = h.lr / c1, root_c2 = std::sqrt(c2), decay = 1.0 - h.lr * wd;
    parallel_blocks(n, detail::grain_for(n, 65536), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) {
            const double g = grad[i];
            const double mi = h.beta1 * m[i] + (1.0 - h.beta1) * g;
            const double vi = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
            m[i] = T(mi);
            v[i] = T(vi);
            param[i] = T(double(param[i]) * decay - step * mi / (std::sqrt(vi) / root_c2 + h.eps));
        }
    });
}

}  // namespace sgt
