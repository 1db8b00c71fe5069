// sgt/backend/cuda/cudnn_attention.hpp: the bf16 attention core (Eq. 1-3) through cuDNN's fused scaled
// dot-product attention, forward and backward, for a build configured with SGT_CUDNN (CMake defines
// SGT_WITH_CUDNN and compiles cudnn_attention.cpp into sgt::cuda_kernels). attention.cuh calls these when
// attention_kernel says so; the last-row entropy (Eq. 4) stays with our own kernel.
//
// Layouts as the rest of the backend: qkv (B, T, 3, n, HD) and dqkv alike; out and dout (B, T, n, HD); lse
// (B, n, T) float, each query row's log-sum-exp of its scaled scores, written by the forward for the backward.
// cuDNN reads and writes these strided views in place, so nothing is permuted. Graphs are built once per shape
// and thread and cached; their workspace is the context's scratch. With deterministic (the default, see
// set_deterministic) the backward accumulates dQ in a fixed order, through a workspace of B·n·T² bf16.
#pragma once

#include <cstdint>

namespace sgt::detail::cudnn {

// Whether cuDNN's kernels serve this head size (multiples of 8 up to 128).
constexpr bool supports_head_dim(int HD) { return HD % 8 == 0 && HD > 0 && HD <= 128; }

void attention_forward(void* out, float* lse, const void* qkv, int B, int T_, int n, int HD);
void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out, const float* lse, int B,
                        int T_, int n, int HD, bool deterministic);

// The cuDNN library's version, as cudnnGetVersion reports it (e.g. 91500 for 9.15.0).
long version();

}  // namespace sgt::detail::cudnn
