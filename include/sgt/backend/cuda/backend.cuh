// sgt/backend/cuda/backend.cuh: the elementwise helpers of backend/cpu/backend.hpp on the device, and the
// kernel-side utilities the other .cuh files share (grid sizing, load/store in accum_t<T>, CUB reductions).
#pragma once

#include <cub/device/device_reduce.cuh>

#include <algorithm>
#include <cstdint>

#include "sgt/backend/cuda.hpp"

namespace sgt {

namespace detail {

constexpr int threads_per_block = 256;
inline unsigned blocks_for(std::int64_t n, int per_thread = 1) {
    const std::int64_t b = (n + std::int64_t(threads_per_block) * per_thread - 1) / (std::int64_t(threads_per_block) * per_thread);
    return unsigned(std::clamp<std::int64_t>(b, 1, 65535 * 16));
}

// splitmix64's finaliser: a 64-bit hash (dropout's masks, tune_products's operands and digests).
__host__ __device__ inline std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// mix64 of key + (i + 1) times the golden ratio: a uniform double in [0, 1).
__device__ inline double hash_uniform(std::uint64_t key, std::uint64_t i) {
    return double(mix64(key + (i + 1) * 0x9E3779B97F4A7C15ull) >> 11) * 0x1.0p-53;
}

template <class T>
__host__ __device__ inline accum_t<T> load(const T& x) {
    return static_cast<accum_t<T>>(x);
}
template <class T, class U>
__host__ __device__ inline T store(U x) {
    return static_cast<T>(x);
}

template <class T, class F>
__global__ void elementwise_kernel(T* out, std::int64_t n, F f) {
    for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += std::int64_t(gridDim.x) * blockDim.x)
        out[i] = f(i);
}

// out[i] = f(i) for i in [0, n), on the device.
template <class T, class F>
void for_each_index(T* out, std::int64_t n, F f) {
    if (n <= 0) return;
    elementwise_kernel<<<blocks_for(n, 4), threads_per_block, 0, detail::stream()>>>(out, n, f);
    SGT_CUDA_LAUNCHED(elementwise_kernel);
}

// Programmatic dependent launch (Hopper): a kernel started by launch_dependent may begin while the kernel before
// it in the stream is still running, to fetch what that kernel does not write (weights, older cache entries) into
// L2; it calls wait_for_prior_grids() before it touches anything else, which returns once the earlier kernel
// has finished and its writes are visible. allow_dependents() lets the next such kernel start. Both are no-ops
// before sm_90, where launch_dependent launches as <<<>>> does.
__device__ inline void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ inline void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ inline void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// 16 bytes from global to shared memory without passing through registers (cp.async, sm_80 and later); the
// thread that reads them waits for its own copies (async_copy_wait).
__device__ inline void async_copy16(void* smem, const void* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(gmem) : "memory");
#endif
}
__device__ inline void async_copy_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

inline bool dependent_launch_supported() {
    static const bool ok = [] {
        int device = 0, major = 0;
        SGT_CUDA_CHECK(cudaGetDevice(&device));
        SGT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
        return major >= 9;
    }();
    return ok;
}

inline int multiprocessors() {
    static const int count = [] {
        int device = 0, n = 0;
        SGT_CUDA_CHECK(cudaGetDevice(&device));
        SGT_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
        return n;
    }();
    return count;
}

// The shared memory a block may have with the opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize): 227 KB on
// Hopper.
inline std::size_t smem_optin_limit() {
    static const std::size_t limit = [] {
        int device = 0, bytes = 0;
        SGT_CUDA_CHECK(cudaGetDevice(&device));
        SGT_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        return std::size_t(bytes);
    }();
    return limit;
}

// Lets `kernel` take `bytes` of dynamic shared memory (above 48 KB, up to smem_optin_limit()).
template <class Kernel>
void allow_smem(Kernel kernel, std::size_t bytes) {
    SGT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <class... Params, class... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, Args... args) {
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream();
    cfg.attrs = &attr;
    cfg.numAttrs = dependent_launch_supported() ? 1 : 0;
    SGT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

// The sum of x over the 32 lanes of a warp, in every lane.
template <class A>
__device__ inline A warp_sum(A x) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// W consecutive elements moved as one access: 16 bytes for W = 16 / sizeof(T).
template <class T, int W>
struct alignas(sizeof(T) * W) pack {
    T v[W];
};
template <class T>
constexpr int pack_width = sizeof(T) >= 16 ? 1 : int(16 / sizeof(T));

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// out[i] = f(in[i]...), computed in accum_t<T>; each thread moves whole packs, the last n % W elements one by one.
template <int W, class T, class F, class... In>
__global__ void map_kernel(T* out, std::int64_t n, F f, const In*... in) {
    const std::int64_t packs = n / W, stride = std::int64_t(gridDim.x) * blockDim.x;
    const std::int64_t first = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
    for (std::int64_t i = first; i < packs; i += stride) {
        pack<T, W> o;
        auto apply = [&](const pack<In, W>&... p) {
#pragma unroll
            for (int k = 0; k < W; ++k) o.v[k] = store<T>(f(load(p.v[k])...));
        };
        apply(reinterpret_cast<const pack<In, W>*>(in)[i]...);
        reinterpret_cast<pack<T, W>*>(out)[i] = o;
    }
    for (std::int64_t i = packs * W + first; i < n; i += stride) out[i] = store<T>(f(load(in[i])...));
}

// out[i] = f(in[i]...) for i in [0, n) (out may be one of the inputs), with 16-byte accesses where the types
// and the pointers allow.
template <class T, class F, class... In>
void map(T* out, std::int64_t n, F f, const In*... in) {
    if (n <= 0) return;
    constexpr int W = pack_width<T>;
    if (W > 1 && aligned16(out) && (aligned16(in) && ...) && ((sizeof(In) == sizeof(T)) && ...)) {
        map_kernel<W><<<blocks_for(n, 2 * W), threads_per_block, 0, detail::stream()>>>(out, n, f, in...);
    } else {
        map_kernel<1><<<blocks_for(n, 4), threads_per_block, 0, detail::stream()>>>(out, n, f, in...);
    }
    SGT_CUDA_LAUNCHED(map_kernel);
}

struct square_to_double {
    template <class T>
    __device__ double operator()(const T& x) const {
        const double v = double(load(x));
        return v * v;
    }
};
struct is_not_finite {
    template <class T>
    __device__ int operator()(const T& x) const {
        return isfinite(double(load(x))) ? 0 : 1;
    }
};

// *out (device memory) = Σ op(x_i) over the device array, by CUB; stream-ordered (n = 0 writes 0).
template <class T, class Op, class Out>
void transform_reduce(const T* x, std::int64_t n, Op op, Out* out) {
    if (n <= 0) {
        SGT_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(Out), stream()));
        return;
    }
    std::size_t bytes = 0;
    SGT_CUDA_CHECK(cub::DeviceReduce::TransformReduce(nullptr, bytes, x, out, n, ::cuda::std::plus<Out>{}, op, Out(0),
                                                      stream()));
    void* temp = context().scratch<std::byte>(slot_cub_temp, std::int64_t(bytes));
    SGT_CUDA_CHECK(cub::DeviceReduce::TransformReduce(temp, bytes, x, out, n, ::cuda::std::plus<Out>{}, op, Out(0),
                                                      stream()));
}

// The same, with the result brought to the host (synchronous).
template <class T, class Op, class Out>
Out transform_reduce_to_host(const T* x, std::int64_t n, Op op) {
    if (n <= 0) return Out(0);
    Out* out = context().scratch<Out>(slot_reduce_out, 1);
    transform_reduce(x, n, op, out);
    Out h{};
    SGT_CUDA_CHECK(cudaMemcpy(&h, out, sizeof(Out), cudaMemcpyDeviceToHost));
    return h;
}

}  // namespace detail

// out = a + b (out may alias a or b).
template <class T>
void add(cuda, T* out, const T* a, const T* b, std::int64_t n) {
    using A = accum_t<T>;
    detail::map(out, n, [] __device__(A x, A y) { return x + y; }, a, b);
}

// y += x
template <class T>
void accumulate(cuda, T* y, const T* x, std::int64_t n) {
    using A = accum_t<T>;
    detail::map(y, n, [] __device__(A a, A b) { return a + b; }, static_cast<const T*>(y), x);
}

template <class T>
void scale(cuda, T* x, std::int64_t n, double s) {
    using A = accum_t<T>;
    const A f = A(s);
    detail::map(x, n, [f] __device__(A a) { return a * f; }, static_cast<const T*>(x));
}

// Σ x², accumulated in double.
template <class T>
double sum_squares(cuda, const T* x, std::int64_t n) {
    return detail::transform_reduce_to_host<T, detail::square_to_double, double>(x, n, detail::square_to_double{});
}

// The same into device memory (stream-ordered, no host round trip: a recorded step can hold it).
template <class T>
void sum_squares(cuda, const T* x, std::int64_t n, double* out) {
    detail::transform_reduce<T, detail::square_to_double, double>(x, n, detail::square_to_double{}, out);
}

// True when every value is finite.
template <class T>
bool all_finite(cuda, const T* x, std::int64_t n) {
    return detail::transform_reduce_to_host<T, detail::is_not_finite, int>(x, n, detail::is_not_finite{}) == 0;
}

}  // namespace sgt
