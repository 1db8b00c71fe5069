// sgt/train/lr_schedule.hpp: cosine learning-rate schedule with linear warm-up (the paper's setup, spec Sec. 5:
// 250 warm-up steps, cosine decay to 0.1× the peak).
#pragma once

#include <cmath>
#include <numbers>

#include "sgt/core/error.hpp"

namespace sgt {

struct cosine_schedule {
    double lr_max = 6e-4;
    int warmup = 250;         // steps of linear warm-up
    int total = 5035;         // steps of the run
    double min_ratio = 0.1;   // the floor, as a fraction of lr_max

    void validate() const {
        require(lr_max > 0.0, "lr schedule: expected a positive peak learning rate, found {}", lr_max);
        require(warmup >= 0 && total > 0 && warmup < total,
                "lr schedule: expected 0 <= warm-up < total steps, found warm-up {} and total {}", warmup, total);
        require(min_ratio >= 0.0 && min_ratio <= 1.0, "lr schedule: expected min_ratio in [0, 1], found {}", min_ratio);
    }

    // Learning rate of step t (counting from 1): lr_max·t/warmup during warm-up, then
    // lr_min + ½(lr_max − lr_min)(1 + cos(π·p)), p = (t − warmup)/(total − warmup), held at lr_min past the end.
    double operator()(int t) const {
        if (t <= warmup) return lr_max * t / warmup;
        const double p = std::min(1.0, double(t - warmup) / double(total - warmup));
        const double lr_min = min_ratio * lr_max;
        return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + std::cos(std::numbers::pi * p));
    }
};

}  // namespace sgt
