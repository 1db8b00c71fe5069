// bench/pass_trace/trace.cu: the decode pass kernel (backend/cuda/decode_pass.cuh) alone at gpt2's shape, bf16:
// C = 768, a run of `passes` passes over 2 heads of 64, `rows` sequences at position context − 24 of a filled
// cache, random weights. Prints the time of a launch (CUDA events, median of 50 groups of 20 launches back to back
// after 10) and, built with TRACE=1, the cycles of each step of a pass (mean over the cluster's blocks and the
// passes) from one more launch. Built and run by run.sh; the numbers of docs/BENCHMARKS.md's "The pass kernel's
// second form" came from it.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "pass_traced.cuh"

using T = __nv_bfloat16;
using namespace sgt;

template <class U>
U* random_device(std::size_t n, float sd, std::mt19937& g) {
    std::vector<U> h(n);
    std::normal_distribution<float> d(0.f, sd);
    for (auto& v : h) v = U(d(g));
    U* p = nullptr;
    SGT_CUDA_CHECK(cudaMalloc(&p, n * sizeof(U)));
    SGT_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(U), cudaMemcpyHostToDevice));
    return p;
}

int main(int argc, char** argv) {
    const int B = argc > 1 ? std::atoi(argv[1]) : 1, ctx = argc > 2 ? std::atoi(argv[2]) : 1024;
    const int S = argc > 3 ? std::atoi(argv[3]) : 3, C = 768, n = 2, HD = 64, pos = ctx - 24;
    if (B < 1 || B > detail::pass_max_rows || S < 1 || S > detail::pass_max_slots || ctx < 32) {
        std::printf("usage: trace [rows 1-%d] [context >= 32] [passes 1-%d]\n", detail::pass_max_rows,
                    detail::pass_max_slots);
        return 2;
    }
    std::mt19937 g(1);
    detail::pass_args<T> p{};
    p.x = random_device<T>(std::size_t(B) * C, 1.f, g);
    p.norm = random_device<T>(C, 1.f, g);
    p.w_qkv = random_device<T>(std::size_t(3) * n * HD * C, 1.f / std::sqrt(float(C)), g);
    p.w_o = random_device<T>(std::size_t(C) * n * HD, 1.f / std::sqrt(float(n * HD)), g);
    std::vector<float> cs(std::size_t(ctx) * HD / 2), sn(cs.size());
    for (int t = 0; t < ctx; ++t)
        for (int j = 0; j < HD / 2; ++j) {
            const double f = t * std::pow(10000.0, -2.0 * j / HD);
            cs[std::size_t(t) * HD / 2 + j] = float(std::cos(f)), sn[std::size_t(t) * HD / 2 + j] = float(std::sin(f));
        }
    float *d_cos = nullptr, *d_sin = nullptr;
    SGT_CUDA_CHECK(cudaMalloc(&d_cos, cs.size() * 4));
    SGT_CUDA_CHECK(cudaMalloc(&d_sin, sn.size() * 4));
    SGT_CUDA_CHECK(cudaMemcpy(d_cos, cs.data(), cs.size() * 4, cudaMemcpyHostToDevice));
    SGT_CUDA_CHECK(cudaMemcpy(d_sin, sn.data(), sn.size() * 4, cudaMemcpyHostToDevice));
    p.cos_table = d_cos, p.sin_table = d_sin;
    const std::vector<int> start(std::size_t(B), pos);
    int* d_start = nullptr;
    SGT_CUDA_CHECK(cudaMalloc(&d_start, B * sizeof(int)));
    SGT_CUDA_CHECK(cudaMemcpy(d_start, start.data(), B * sizeof(int), cudaMemcpyHostToDevice));
    p.start = d_start;
    for (int s = 0; s < S; ++s) {
        p.keys[s] = random_device<T>(std::size_t(B) * n * ctx * HD, 1.f, g);
        p.values[s] = random_device<T>(std::size_t(B) * n * ctx * HD, 1.f, g);
        p.gains[s] = nullptr;
    }
    p.slots = S, p.B = B, p.C = C, p.n = n, p.HD = HD, p.ctx = ctx, p.eps = 1e-5;
    const int blocks = detail::pass_cluster_size<T, 8>();
    if (blocks == 0) {
        std::printf("trace: the pass kernel needs sm_90\n");
        return 1;
    }
    const std::size_t smem = detail::pass_smem<T>(B, C, n, HD, blocks).total;
    T* x0 = random_device<T>(std::size_t(B) * C, 1.f, g);  // x back to this before each group of launches

    cudaEvent_t e0, e1;
    SGT_CUDA_CHECK(cudaEventCreate(&e0));
    SGT_CUDA_CHECK(cudaEventCreate(&e1));
    std::vector<float> us;
    for (int it = 0; it < 60; ++it) {
        SGT_CUDA_CHECK(cudaMemcpyAsync(p.x, x0, std::size_t(B) * C * sizeof(T), cudaMemcpyDeviceToDevice, detail::stream()));
        SGT_CUDA_CHECK(cudaEventRecord(e0, detail::stream()));
        for (int r = 0; r < 20; ++r) detail::launch_decode_pass<T, 8>(p, smem);
        SGT_CUDA_CHECK(cudaEventRecord(e1, detail::stream()));
        SGT_CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        SGT_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (it >= 10) us.push_back(ms * 1000.f / 20);
    }
    std::sort(us.begin(), us.end());
    const float median = us[us.size() / 2];
    std::printf("rows %d, context %d, %d passes, %d blocks%s: %.2f us a launch, %.2f us a pass\n", B, ctx, S, blocks,
                TRACE ? " (traced)" : "", median, median / S);
#if TRACE
    SGT_CUDA_CHECK(cudaDeviceSynchronize());
    detail::launch_decode_pass<T, 8>(p, smem);  // alone, for the marks
    SGT_CUDA_CHECK(cudaDeviceSynchronize());
    static long long clk[16][128];
    SGT_CUDA_CHECK(cudaMemcpyFromSymbol(clk, g_trace, sizeof clk));
    const char* step[9] = {"normalisation", "q/k/v",       "barrier", "attention",     "block merge",
                           "barrier",       "merge",       "output product", "barrier"};
    double mean[9] = {}, total = 0;
    for (int s = 0; s < S; ++s)
        for (int k = 0; k < 9; ++k)
            for (int b = 0; b < blocks; ++b)
                mean[k] += double(clk[b][2 + 9 * s + k + 1] - clk[b][2 + 9 * s + k]) / (blocks * S);
    std::printf("  cycles a pass, mean over blocks:");
    for (int k = 0; k < 9; ++k) std::printf(" %s %.0f%s", step[k], mean[k], k < 8 ? " |" : "");
    for (double m : mean) total += m;
    std::printf("; total %.0f\n", total);
#endif
    return 0;
}
