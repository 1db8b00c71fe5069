// sgt/backend/cpu/cross_entropy.hpp: softmax cross-entropy of next-token targets, forward and backward.
// Targets below zero are ignored (not counted in the mean), as PyTorch's ignore_index.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// logits (N, V); targets (N). Returns the sum and count of the per-position losses.
template <class T>
loss_sum cross_entropy_forward(cpu, const T* logits, const std::int32_t* targets, int N, int V) {
    double sum = 0.0;
    std::int64_t count = 0;
#pragma omp parallel for reduction(+ : sum, count) if (std::int64_t(N) * V > 65536)
    for (int n = 0; n < N; ++n) {
        if (targets[n] < 0) continue;
        const T* z = logits + std::int64_t(n) * V;
        const double m = double(*std::max_element(z, z + V));
        double s = 0.0;
        for (int v = 0; v < V; ++v) s += std::exp(double(z[v]) - m);
        sum += m + std::log(s) - double(z[targets[n]]);
        count += 1;
    }
    return {sum, count};
}

// dlogits (N, V) = scale · (softmax(logits) − onehot(target)) on counted rows, 0 on ignored ones (overwrites).
// scale = 1 / count gives the gradient of the mean loss.
template <class T>
void cross_entropy_backward(cpu, T* dlogits, const T* logits, const std::int32_t* targets, int N, int V, double scale) {
#pragma omp parallel for if (std::int64_t(N) * V > 65536)
    for (int n = 0; n < N; ++n) {
        const T* z = logits + std::int64_t(n) * V;
        T* dz = dlogits + std::int64_t(n) * V;
        if (targets[n] < 0) {
            std::fill(dz, dz + V, T(0));
            continue;
        }
        const double m = double(*std::max_element(z, z + V));
        double s = 0.0;
        for (int v = 0; v < V; ++v) s += std::exp(double(z[v]) - m);
        for (int v = 0; v < V; ++v) dz[v] = T(std::exp(double(z[v]) - m) / s * scale);
        dz[targets[n]] -= T(scale);
    }
}

}  // namespace sgt
