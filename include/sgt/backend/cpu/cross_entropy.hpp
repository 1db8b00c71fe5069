// sgt/backend/cpu/cross_entropy.hpp: softmax cross-entropy of next-token targets, forward and backward.
// Targets below zero are ignored (not counted in the mean), as PyTorch's ignore_index.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "sgt/backend/common.hpp"
#include "sgt/backend/cpu/backend.hpp"

namespace sgt {

// logits (N, V); targets (N). Returns the sum and count of the per-position losses. Rows are summed in blocks
// and the blocks in order, so the sum does not depend on the thread count. lse (N), where given, receives each
// counted row's log Σ exp for the backward.
template <class T>
loss_sum cross_entropy_forward(cpu, const T* logits, const std::int32_t* targets, int N, int V,
                               accum_t<T>* lse = nullptr) {
    const std::int64_t min_rows = std::max<std::int64_t>(1, 16384 / std::max(V, 1));
    return parallel_sum<loss_sum>(N, min_rows, [&](std::int64_t b, std::int64_t e) {
        loss_sum part;
        for (std::int64_t n = b; n < e; ++n) {
            if (targets[n] < 0) continue;
            const auto z = detail::const_vector_map<T>(logits + n * V, V).template cast<double>().array();
            const double m = z.maxCoeff();
            const double s = (z - m).exp().sum();  // vectorised, in double
            part.sum += m + std::log(s) - z(targets[n]);
            if (lse) lse[n] = accum_t<T>(m + std::log(s));
            part.count += 1;
        }
        return part;
    });
}

// The same, with the sum written to *sum (the form a training step uses: on a GPU it stays in device memory
// until the step is done).
template <class T>
void cross_entropy_forward(cpu, const T* logits, const std::int32_t* targets, int N, int V, accum_t<T>* lse,
                           double* sum) {
    *sum = cross_entropy_forward(cpu{}, logits, targets, N, V, lse).sum;
}

// Both for a training step that knows its gradient scale at the forward: *sum = the sum of the counted positions'
// losses, then the logits overwritten by their gradient, scale · (softmax(logits) − onehot(target)) (0 on ignored
// rows). Here the two ops above in a row; a GPU reads the logits once for both.
template <class T>
void cross_entropy_forward_backward(cpu, T* logits, const std::int32_t* targets, int N, int V, double scale,
                                    double* sum);

// dlogits (N, V) = scale · (softmax(logits) − onehot(target)) on counted rows, 0 on ignored ones (overwrites; may
// be logits itself). scale = 1 / count gives the gradient of the mean loss. lse: the forward's, or null to
// recompute it.
template <class T>
void cross_entropy_backward(cpu, T* dlogits, const T* logits, const std::int32_t* targets, int N, int V, double scale,
                            const accum_t<T>* lse = nullptr) {
    const std::int64_t min_rows = std::max<std::int64_t>(1, 16384 / std::max(V, 1));
    parallel_blocks(N, detail::grain_for(N, min_rows), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t n = b; n < e; ++n) {
            const T* z = logits + n * V;
            T* dz = dlogits + n * V;
            if (targets[n] < 0) {
                std::fill(dz, dz + V, T(0));
                continue;
            }
            const auto zd = detail::const_vector_map<T>(z, V).template cast<double>().array();
            double l;
            if (lse) {
                l = double(lse[n]);
            } else {
                const double m = zd.maxCoeff();
                l = m + std::log((zd - m).exp().sum());
            }
            // exp evaluated into an aligned buffer first: Eigen splits a row between its vector and scalar exp
            // by the destination's alignment, which must not change the result (dz may be any buffer).
            thread_local Eigen::Array<double, Eigen::Dynamic, 1> e;
            e = (zd - l).exp() * scale;
            detail::vector_map<T>(dz, V).array() = e.template cast<T>();
            dz[targets[n]] -= T(scale);
        }
    });
}

template <class T>
void cross_entropy_forward_backward(cpu, T* logits, const std::int32_t* targets, int N, int V, double scale,
                                    double* sum) {
    std::vector<accum_t<T>> lse(std::size_t(std::max(N, 0)));
    cross_entropy_forward(cpu{}, logits, targets, N, V, lse.data(), sum);
    cross_entropy_backward(cpu{}, logits, logits, targets, N, V, scale, lse.data());
}

}  // namespace sgt
