// sgt/backend/cuda/adamw.cuh: AdamW with global-norm clipping over runs of one parameter buffer, as
// backend/cpu/adamw.hpp, in one launch for up to adamw_runs_per_launch runs; and its mixed-precision form: fp32
// master weights and moments updated, the bf16 working copy rewritten from them. The rate, the bias corrections
// and the squared norm are read from device memory, so that a training step recorded as a CUDA graph updates the
// weights with each replay's own values and never waits for the host.
#pragma once

#include <cmath>
#include <span>

#include "sgt/backend/common.hpp"  // adamw_hyper, adamw_run, adamw_step_values, clip_factor
#include "sgt/backend/cuda/backend.cuh"

namespace sgt {

namespace detail {
inline constexpr int adamw_runs_per_launch = 96;
inline constexpr int adamw_packs_per_thread = 2;

// The runs of one launch, passed by value (2.7 KB of kernel parameters): run r takes blocks [first_block[r],
// first_block[r + 1]), each `chunk` elements of it.
struct adamw_launch_runs {
    std::int64_t offset[adamw_runs_per_launch];
    std::int64_t n[adamw_runs_per_launch];
    double decay[adamw_runs_per_launch];
    int first_block[adamw_runs_per_launch + 1];
    int count;
};

// Updates master, m, v from grad·f; writes the result to param too when param != master. In M's precision (fp32
// for fp32 and bf16 models), W elements at index i (in packs of W).
template <int W, class T, class M>
__device__ inline void adamw_pack(T* param, M* master, const T* grad, M* m, M* v, std::int64_t i, M f, M beta1,
                                  M beta2, M eps, M step, M root_c2, M decay) {
    const pack<T, W> g = reinterpret_cast<const pack<T, W>*>(grad)[i];
    pack<M, W> mi = reinterpret_cast<pack<M, W>*>(m)[i], vi = reinterpret_cast<pack<M, W>*>(v)[i],
               p = reinterpret_cast<pack<M, W>*>(master)[i];
    pack<T, W> out;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        const M gk = M(load(g.v[k])) * f;
        mi.v[k] = beta1 * mi.v[k] + (M(1) - beta1) * gk;
        vi.v[k] = beta2 * vi.v[k] + (M(1) - beta2) * gk * gk;
        p.v[k] = p.v[k] * decay - step * mi.v[k] / (sqrt(vi.v[k]) / root_c2 + eps);
        out.v[k] = store<T>(p.v[k]);
    }
    reinterpret_cast<pack<M, W>*>(m)[i] = mi;
    reinterpret_cast<pack<M, W>*>(v)[i] = vi;
    reinterpret_cast<pack<M, W>*>(master)[i] = p;
    if constexpr (!std::is_same_v<T, M>) reinterpret_cast<pack<T, W>*>(param)[i] = out;
}

// One block: `chunk` elements of one run. W > 1 needs every run's offset and the pointers aligned to W elements.
template <int W, class T, class M>
__global__ void adamw_kernel(T* param, M* master, const T* grad, M* m, M* v, adamw_launch_runs runs, M beta1,
                             M beta2, M eps, double clip, const adamw_step_values* s, const double* grad_sq,
                             int parts) {
    constexpr std::int64_t chunk = std::int64_t(threads_per_block) * W * adamw_packs_per_thread;
    __shared__ double sq;
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int i = 0; i < parts; ++i) total += grad_sq[i];
        sq = total;
    }
    __syncthreads();
    if (!isfinite(sq)) return;  // a non-finite gradient leaves weights and moments as they were
    int r = 0;                  // the run of this block: the last whose first block is at or before it
    for (int lo = 0, hi = runs.count - 1; lo <= hi;) {
        const int mid = (lo + hi) / 2;
        if (runs.first_block[mid] <= int(blockIdx.x)) r = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    const double lr = s->lr;
    const M f = M(clip_factor(sqrt(sq), clip)), step = M(lr / s->bias1), root_c2 = M(sqrt(s->bias2)),
            decay = M(1.0 - lr * runs.decay[r]);
    const std::int64_t begin = runs.offset[r] + std::int64_t(int(blockIdx.x) - runs.first_block[r]) * chunk;
    const std::int64_t end = min(begin + chunk, runs.offset[r] + runs.n[r]);
    const std::int64_t first_pack = begin / W, packs = (end - begin) / W;  // begin is a multiple of W
    for (std::int64_t i = threadIdx.x; i < packs; i += blockDim.x)
        adamw_pack<W>(param, master, grad, m, v, first_pack + i, f, beta1, beta2, eps, step, root_c2, decay);
    for (std::int64_t i = begin + packs * W + threadIdx.x; i < end; i += blockDim.x)
        adamw_pack<1>(param, master, grad, m, v, i, f, beta1, beta2, eps, step, root_c2, decay);
}

template <int W, class T, class M>
void adamw_launch_all(T* param, M* master, const T* grad, M* m, M* v, std::span<const adamw_run> runs,
                      const adamw_hyper& h, const adamw_step_values* s, const double* grad_sq, int parts) {
    constexpr std::int64_t chunk = std::int64_t(threads_per_block) * W * adamw_packs_per_thread;
    for (std::size_t first = 0; first < runs.size(); first += adamw_runs_per_launch) {
        adamw_launch_runs l{};
        std::int64_t blocks = 0;
        for (std::size_t r = first; r < runs.size() && l.count < adamw_runs_per_launch; ++r) {
            if (runs[r].n <= 0) continue;
            l.offset[l.count] = runs[r].offset;
            l.n[l.count] = runs[r].n;
            l.decay[l.count] = runs[r].decay;
            l.first_block[l.count++] = int(blocks);
            blocks += (runs[r].n + chunk - 1) / chunk;
        }
        if (l.count == 0) continue;
        require(blocks < (std::int64_t(1) << 31), "cuda adamw_update: {} blocks exceed a grid", blocks);
        l.first_block[l.count] = int(blocks);
        adamw_kernel<W><<<unsigned(blocks), threads_per_block, 0, detail::stream()>>>(
            param, master, grad, m, v, l, M(h.beta1), M(h.beta2), M(h.eps), h.clip, s, grad_sq, parts);
        SGT_CUDA_LAUNCHED(adamw_kernel);
    }
}

template <class T, class M>
void adamw_launch(T* param, M* master, const T* grad, M* m, M* v, std::span<const adamw_run> runs,
                  const adamw_hyper& h, const adamw_step_values* s, const double* grad_sq, int parts) {
    constexpr int W = 16 / sizeof(M) > 1 ? int(16 / sizeof(M)) : 1;
    auto aligned = [](const void* p, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; };
    bool packed = W > 1 && aligned(master, sizeof(M) * W) && aligned(m, sizeof(M) * W) &&
                  aligned(v, sizeof(M) * W) && aligned(grad, sizeof(T) * W) && aligned(param, sizeof(T) * W);
    for (const adamw_run& r : runs) packed = packed && r.offset % W == 0;
    if (packed)
        adamw_launch_all<W>(param, master, grad, m, v, runs, h, s, grad_sq, parts);
    else
        adamw_launch_all<1>(param, master, grad, m, v, runs, h, s, grad_sq, parts);
}
}  // namespace detail

template <class T>
void adamw_update(cuda, T* param, const T* grad, T* m, T* v, std::span<const adamw_run> runs, const adamw_hyper& h,
                  const adamw_step_values* s, const double* grad_sq, int parts) {
    detail::adamw_launch(param, param, grad, m, v, runs, h, s, grad_sq, parts);
}

// Mixed precision: master fp32 weights, m and v fp32; param the low-precision copy the model runs on.
template <class T, class M>
void adamw_update(cuda, T* param, const T* grad, M* master, M* m, M* v, std::span<const adamw_run> runs,
                  const adamw_hyper& h, const adamw_step_values* s, const double* grad_sq, int parts) {
    detail::adamw_launch(param, master, grad, m, v, runs, h, s, grad_sq, parts);
}

// dst (n) = src converted to another precision (e.g. bf16 weights → fp32 master weights).
template <class D, class S>
void convert(cuda, D* dst, const S* src, std::int64_t n) {
    detail::for_each_index(dst, n, [=] __device__(std::int64_t i) { return detail::store<D>(detail::load(src[i])); });
}

}  // namespace sgt
