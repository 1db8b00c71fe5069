// bench/pass_trace/trace.cuh: the marks make_traced.py puts into a copy of the decode pass kernel. With TRACE, thread
// 0 of every block writes the SM's clock at mark i (TRS: after a block barrier, so the block's slowest warp);
// without, nothing (the same kernel but for those barriers: trace.cu times both).
#pragma once

__device__ long long g_trace[16][128];  // (block, mark): the cluster's blocks, 2 + 9 marks a pass

#if TRACE
#define TR(i)                                                    \
    do {                                                         \
        if (threadIdx.x == 0) g_trace[blockIdx.x][(i)] = clock64(); \
    } while (0)
#define TRS(i)           \
    do {                 \
        __syncthreads(); \
        TR(i);           \
    } while (0)
#else
#define TR(i) \
    do {      \
    } while (0)
#define TRS(i) \
    do {       \
    } while (0)
#endif
