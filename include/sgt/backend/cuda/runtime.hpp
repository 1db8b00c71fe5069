// sgt/backend/cuda/runtime.hpp: the host side of the CUDA backend: the backend tag, checked calls, device
// buffers, the per-thread context (cuBLASLt handle, workspace, scratch) and the transfers. Plain C++ over the
// CUDA runtime API, so any C++20 compiler builds code that uses it; the kernels are in the .cuh files beside it.
// Pointers passed to every op of this backend are DEVICE pointers.
//
// Precision: ops are templates over the stored type T (float, double or __nv_bfloat16); arithmetic runs in
// accum_t<T> (float for bf16), reductions in float or double. Work is issued on the thread's current stream
// (detail::stream(): the legacy default stream, except while a step_graph records or replays a step), so ops
// are ordered; the few results the host needs (a loss, a norm, entropies) are read back synchronously.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "sgt/backend/common.hpp"  // host_copy
#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/step_graph.hpp"

namespace sgt {

// ---- checked calls: every CUDA and cuBLASLt call goes through one of these ---------------------------------

namespace detail {
inline const char* cublasLt_status_name(cublasStatus_t code) {
    switch (code) {
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "cublasStatus_t";
    }
}

inline void cuda_check(cudaError_t code, const char* call, const char* file, int line) {
    if (code != cudaSuccess)
        fail("CUDA: {} failed with {} ({}: {}) at {}:{}", call, int(code), cudaGetErrorName(code),
             cudaGetErrorString(code), file, line);
}
inline void cublas_check(cublasStatus_t code, const char* call, const char* file, int line) {
    if (code != CUBLAS_STATUS_SUCCESS)
        fail("cuBLASLt: {} failed with {} ({}) at {}:{}", call, int(code), cublasLt_status_name(code), file, line);
}
}  // namespace detail

#define SGT_CUDA_CHECK(call) ::sgt::detail::cuda_check((call), #call, __FILE__, __LINE__)
#define SGT_CUBLAS_CHECK(call) ::sgt::detail::cublas_check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows here, a fault at the next synchronising call.
#define SGT_CUDA_LAUNCHED(kernel) ::sgt::detail::cuda_check(cudaGetLastError(), "launch of " #kernel, __FILE__, __LINE__)

namespace detail {
// Device allocations made by device_buffer since the program started: tests use it to show that a
// training step allocates nothing once its structure has run.
inline std::int64_t& device_allocations() {
    static std::int64_t n = 0;
    return n;
}

// Bytes held by device_buffers now, and the most ever held (what benchmarks report as peak GPU memory, like
// PyTorch's max_memory_allocated).
struct device_memory_counter {
    std::int64_t in_use = 0, peak = 0;
    void add(std::int64_t bytes) {
        in_use += bytes;
        peak = std::max(peak, in_use);
    }
};
inline device_memory_counter& device_memory() {
    static device_memory_counter c;
    return c;
}
}  // namespace detail

template <>
struct accum_type<__nv_bfloat16> {
    using type = float;
};
template <>
struct precision_name<__nv_bfloat16> {
    static constexpr const char* value = "bf16";
};

// ---- device memory ---------------------------------------------------------------------------------------

// An owning, move-only array in device memory with the part of std::vector's interface that the shared
// templates use (data, size, resize that keeps the contents), and reallocate, which does not keep them (for
// scratch, whose old contents are never read: copying them would copy memory that was never written).
// begin()/end() are device pointers, so a std::span over it is a typed view of device memory: read it on the host
// through copy_to_host.
template <class T>
class device_buffer {
public:
    device_buffer() = default;
    explicit device_buffer(std::size_t n) { resize(n); }
    device_buffer(const device_buffer&) = delete;
    device_buffer& operator=(const device_buffer&) = delete;
    device_buffer(device_buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    device_buffer& operator=(device_buffer&& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(n_, o.n_);
        return *this;
    }
    ~device_buffer() {
        if (p_) {
            cudaFree(p_);  // no throw from a destructor; a failed free at exit is harmless
            detail::device_memory().add(-std::int64_t(n_ * sizeof(T)));
        }
    }

    void resize(std::size_t n) {
        if (n == n_) return;
        T* p = nullptr;
        if (n > 0) {
            SGT_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
            ++detail::device_allocations();
            detail::device_memory().add(std::int64_t(n * sizeof(T)));
            if (n_ > 0) SGT_CUDA_CHECK(cudaMemcpy(p, p_, std::min(n, n_) * sizeof(T), cudaMemcpyDeviceToDevice));
        }
        if (p_) {
            SGT_CUDA_CHECK(cudaFree(p_));
            detail::device_memory().add(-std::int64_t(n_ * sizeof(T)));
        }
        p_ = p;
        n_ = n;
    }
    // Makes the buffer n elements long without keeping its contents (they are left unwritten).
    void reallocate(std::size_t n) {
        if (n == n_) return;
        if (p_) {
            SGT_CUDA_CHECK(cudaFree(p_));
            detail::device_memory().add(-std::int64_t(n_ * sizeof(T)));
            p_ = nullptr;
            n_ = 0;
        }
        if (n > 0) {
            SGT_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
            ++detail::device_allocations();
            detail::device_memory().add(std::int64_t(n * sizeof(T)));
            n_ = n;
        }
    }
    T* data() { return p_; }
    const T* data() const { return p_; }
    std::size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    T* begin() { return p_; }
    T* end() { return p_ + n_; }
    const T* begin() const { return p_; }
    const T* end() const { return p_ + n_; }

private:
    T* p_ = nullptr;
    std::size_t n_ = 0;
};

// A CUDA event (cudaEventCreateWithFlags), destroyed with its owner; converts to cudaEvent_t.
class device_event {
public:
    explicit device_event(unsigned flags = cudaEventDefault) { SGT_CUDA_CHECK(cudaEventCreateWithFlags(&e_, flags)); }
    device_event(const device_event&) = delete;
    device_event& operator=(const device_event&) = delete;
    ~device_event() { cudaEventDestroy(e_); }  // no throw from a destructor
    operator cudaEvent_t() const { return e_; }

private:
    cudaEvent_t e_ = nullptr;
};

struct cuda {
    static constexpr const char* name = "cuda";
    static constexpr bool host_memory = false;
    template <class T>
    using buffer = device_buffer<T>;
};

// The most bytes the device buffers have held at once in this process (the programs log it).
inline std::int64_t peak_device_bytes(cuda) { return detail::device_memory().peak; }

// How the bf16 attention core runs (fp32 and fp64 always materialise): `cudnn`, cuDNN's fused attention
// (cudnn_attention.hpp; only in a build with SGT_CUDNN, for head sizes that are multiples of 8 up to 128);
// `fused`, the flash-style kernels of flash_attention.cuh, which keep O(T) per row instead of the T x T
// matrices; `materialized`, cuBLASLt products and row kernels over the saved T x T matrices; `automatic`,
// cuDNN where the build has it and the head size allows, otherwise fused up to fused_attention_max_seq tokens,
// where it is also the faster: on an H100, fwd + bwd per layer, 0.56 against 0.72 ms at T = 256 and 0.82 against
// 0.86 ms at T = 512, but 2.46 against 2.25 ms at T = 1024 (docs/BENCHMARKS.md). Set per thread with
// set_attention_kernel; asking for a kernel that cannot run at a size falls back as `automatic` would.
enum class attention_kernel { automatic, cudnn, fused, materialized };
inline constexpr int fused_attention_max_seq = 512;

namespace detail {

// Per-thread state of the backend, made on first use: the cuBLASLt handle and its workspace, the ops' scratch
// (which only grows) and the attention kernel choice.
struct cuda_context {
    cublasLtHandle_t lt = nullptr;
    device_buffer<std::byte> workspace;  // cuBLASLt's
    cudaStream_t stream = nullptr;       // where ops are issued: the legacy default stream, or a recording graph's
    attention_kernel attention = attention_kernel::automatic;
    bool deterministic = true;  // see set_deterministic
    bool fuse_few_rows = true;  // see set_fuse_few_rows
    std::int64_t few_rows_tc_weights = 384 * 768;  // see set_few_rows_tensor_cores
    bool fuse_decode_passes = true;  // see set_fuse_decode_passes
    int decode_block_keys = 0;  // see set_decode_block_keys
    bool decode_tensor_cores = true;  // see set_decode_tensor_cores
    bool tune_products = true;  // see set_product_tuning

    cuda_context() {
        SGT_CUBLAS_CHECK(cublasLtCreate(&lt));
        workspace.resize(std::size_t(32) << 20);  // 32 MiB, as cuBLAS recommends for Hopper
    }
    ~cuda_context() {
        if (lt) cublasLtDestroy(lt);
    }
    cuda_context(const cuda_context&) = delete;
    cuda_context& operator=(const cuda_context&) = delete;

    // Named scratch arrays of the ops (CUB's temporary storage, reduction results, partial sums, sort keys,
    // attention's permuted q/k/v...), grown on first use to the largest size asked for and reused after that.
    template <class U>
    U* scratch(int slot, std::int64_t n) {
        auto& b = scratch_[std::size_t(slot)];
        const std::size_t bytes = std::size_t(n) * sizeof(U);
        if (b.size() < bytes) b.reallocate(bytes);  // scratch: the old contents are not needed
        return reinterpret_cast<U*>(b.data());
    }
    // As scratch, but zeroed when it is (re)allocated: for counters that every use leaves at zero again.
    template <class U>
    U* zeroed_scratch(int slot, std::int64_t n) {
        auto& b = scratch_[std::size_t(slot)];
        const std::size_t bytes = std::size_t(n) * sizeof(U);
        if (b.size() < bytes) {
            b.reallocate(bytes);
            SGT_CUDA_CHECK(cudaMemsetAsync(b.data(), 0, bytes, stream));
        }
        return reinterpret_cast<U*>(b.data());
    }

    // Frees every scratch array (each grows again at its next use). Only while nothing in flight or recorded uses
    // them: for a program that measures its memory from a clean state (bench_cuda_step, between its variants).
    void release_scratch() {
        for (auto& b : scratch_) b.reallocate(0);
    }

private:
    std::array<device_buffer<std::byte>, 20> scratch_;
};

// The slots of cuda_context::scratch, one per op that needs one.
enum scratch_slot : int {
    slot_cub_temp,
    slot_reduce_out,
    slot_rmsnorm_partial,
    slot_ce_rows,
    slot_ce_sum,
    slot_sort_keys,
    slot_sort_values_in,
    slot_sort_values,
    slot_attn_q,
    slot_attn_k,
    slot_attn_v,
    slot_attn_o,
    slot_attn_dp,
    slot_attn_dq,
    slot_attn_dk,
    slot_attn_dv,
    slot_gate,
    slot_cudnn,  // cuDNN attention's workspace
    slot_decode_tickets,  // decode attention: per (sequence, head), the chunks done in this call
    slot_count
};
static_assert(slot_count <= 20, "cuda_context: more scratch slots than cuda_context::scratch_ holds");

inline cuda_context& context() {
    thread_local cuda_context c;
    return c;
}

// The stream this thread's ops are issued on.
inline cudaStream_t stream() { return context().stream; }

}  // namespace detail

// Chooses the bf16 attention kernels for this thread's later calls (attention_kernel says what each does).
inline void set_attention_kernel(cuda, attention_kernel k) { detail::context().attention = k; }
// Whether this thread's later ops must give bit-identical results run after run (the default). Only cuDNN's
// attention backward differs: without, it may accumulate dQ with atomics, which is faster and uses less memory.
inline void set_deterministic(cuda, bool on) { detail::context().deterministic = on; }
// Whether this thread's normed products of a few rows (decode_products.cuh: a decode step's) run as one fused
// kernel each (the default) or as the training ops they are composed of (to compare the two).
inline void set_fuse_few_rows(cuda, bool on) { detail::context().fuse_few_rows = on; }
// The most weight elements of a product of 5 to 32 rows (a decode step's at batch 5 to 32) that this thread's
// normed products take the tensor-core few-row kernel for (decode_products.cuh; bf16): by default 384 x 768, the
// q/k/v product of a gpt2 loop pass over 2 heads; 0 for the composition alone.
inline void set_few_rows_tensor_cores(cuda, std::int64_t max_weights) {
    require(max_weights >= 0, "set_few_rows_tensor_cores: expected a weight count of at least 0, found {}",
            max_weights);
    detail::context().few_rows_tc_weights = max_weights;
}
// Whether this thread's runs of decode attention passes over one row and a few heads (decode_pass.cuh) run as one
// cluster kernel each (the default) or as the ops they are composed of (to compare the two). Off, or with
// set_fuse_few_rows(false), the composition.
inline void set_fuse_decode_passes(cuda, bool on) { detail::context().fuse_decode_passes = on; }
// The keys one block of this thread's decode attention takes (decode.cuh): 64, 128 or 256, or 0 (the default) to
// choose by the shape. Results differ only in the order of the sums.
inline void set_decode_block_keys(cuda, int keys) {
    require(keys == 0 || keys == 64 || keys == 128 || keys == 256,
            "set_decode_block_keys: expected 0 (chosen by the shape), 64, 128 or 256 keys, found {}", keys);
    detail::context().decode_block_keys = keys;
}
// Whether this thread's decode attention in bf16 over heads of 64 or 128 and blocks of 128 keys (or of 64 where
// set_decode_block_keys asks for them) computes its scores and value sums on the tensor cores (the default; P rounded
// to bf16 before P V) or with a thread's multiply-adds in fp32 (to compare the two). Other types, head sizes and
// blocks always take the latter.
inline void set_decode_tensor_cores(cuda, bool on) { detail::context().decode_tensor_cores = on; }

// What tune_products did for one product shape (column-major m x n x k, as matmul.cuh writes it): the algorithms
// cuBLASLt's heuristics offered, how many of them gave the first one's result bit for bit on random operands, the
// one kept (0: the first), the medians of the first and of the kept one, and the time the tuning took.
struct product_tuning {
    int m = 0, n = 0, k = 0;
    bool ta = false, tb = false, accumulate = false;
    int element_bytes = 0;
    int candidates = 0, identical = 0, chosen = 0;
    double first_ms = 0.0, chosen_ms = 0.0;
    double seconds = 0.0;  // what looking at it took, operands and timings included
    const char* skipped = nullptr;  // why it was not timed (a batched product, scratch too large), or null
};
// Times cuBLASLt's other algorithms for each product shape this thread made a plan for since the last call, and
// keeps the fastest of those that give the heuristics' first choice's result bit for bit (on random operands of
// the shape), so that results do not depend on the tuning, its timings or the process. step_graph calls it before
// it records a step (the eager step before has made every plan it uses); set_product_tuning(false) turns that
// off. It allocates its random operands for the time of the call (at most 512 MiB; larger products keep the
// first choice) and synchronises the device: not while this thread's stream is being recorded.
void tune_products(cuda);
// Every shape tune_products has looked at on this thread, in the order of their plans.
std::vector<product_tuning> product_tunings(cuda);
// Whether step_graph tunes this thread's products before it records a step (the default; tune_products).
inline void set_product_tuning(cuda, bool on) { detail::context().tune_products = on; }

// ---- copies (stream-ordered) and transfers (synchronous) ------------------------------------------------

template <class T>
void fill_zero(cuda, T* x, std::int64_t n) {
    if (n > 0) SGT_CUDA_CHECK(cudaMemsetAsync(x, 0, std::size_t(n) * sizeof(T), detail::stream()));
}

template <class T>
void copy(cuda, T* dst, const T* src, std::int64_t n) {
    if (n > 0)
        SGT_CUDA_CHECK(cudaMemcpyAsync(dst, src, std::size_t(n) * sizeof(T), cudaMemcpyDeviceToDevice, detail::stream()));
}

// Host ↔ device (synchronous). On the CPU backend these are plain copies.
template <class T>
void copy_from_host(cuda, T* dst, const T* host_src, std::int64_t n) {
    if (n > 0) SGT_CUDA_CHECK(cudaMemcpy(dst, host_src, std::size_t(n) * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T>
void copy_to_host(cuda, T* host_dst, const T* src, std::int64_t n) {
    if (n > 0) SGT_CUDA_CHECK(cudaMemcpy(host_dst, src, std::size_t(n) * sizeof(T), cudaMemcpyDeviceToHost));
}

// Page-locked host memory (cudaMallocHost) for a std::vector: a copy between it and the device is one DMA, where
// a copy to or from pageable memory goes through a staging buffer of the driver's. Decode's logits, read back
// every step, are copied into it (host_copy).
template <class T>
struct pinned_allocator {
    using value_type = T;
    pinned_allocator() = default;
    template <class U>
    pinned_allocator(const pinned_allocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        void* p = nullptr;
        SGT_CUDA_CHECK(cudaMallocHost(&p, n * sizeof(T)));
        return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) noexcept { cudaFreeHost(p); }
    template <class U>
    bool operator==(const pinned_allocator<U>&) const noexcept {
        return true;
    }
};
namespace detail {
template <class T>
struct host_copy<cuda, T> {
    using type = std::vector<T, pinned_allocator<T>>;
};
}  // namespace detail

// ---- step graphs ----------------------------------------------------------------------------------------

// A step that runs many times with the same shapes and buffers (the decode step of infer/engine.hpp, a training
// step of train/trainer.hpp), recorded once as a CUDA graph and replayed: one launch per step instead of one per
// op. The first run is eager (it sizes every scratch buffer and makes the cuBLASLt plans, which a recording must
// not do); the second tunes the plans (tune_products, unless this graph or the thread says not to), then records
// the step on a stream of the graph's own, instantiates and launches it; later runs launch it. The stream is a
// blocking one, so work on the legacy default stream before and after (the token upload, the logits download)
// stays ordered with the replays. reset() forgets the recording (after the shapes or buffers change).
template <>
class step_graph<cuda> {
public:
    step_graph() = default;
    step_graph(const step_graph&) = delete;
    step_graph& operator=(const step_graph&) = delete;
    ~step_graph() {
        if (exec_) cudaGraphExecDestroy(exec_);
        if (stream_) cudaStreamDestroy(stream_);
    }

    template <class F>
    void run(F&& step) {
        if (!enabled_ || !warmed_) {
            step();
            warmed_ = true;
            return;
        }
        // A device allocation since the recording may have moved a buffer it uses (an op's scratch grown by other
        // work, an activation grown by a larger batch): run eagerly once more, then record again.
        if (exec_ && allocations_ != detail::device_allocations()) {
            reset();
            run(step);
            return;
        }
        if (!exec_) record(step);
        SGT_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
    }
    void reset() {
        if (exec_) SGT_CUDA_CHECK(cudaGraphExecDestroy(exec_));
        exec_ = nullptr;
        warmed_ = false;
    }
    bool captured() const { return exec_ != nullptr; }
    // Off: every run is eager (to measure what the graph saves).
    void set_enabled(bool on) {
        reset();
        enabled_ = on;
    }
    // Off: this graph records its step without tuning the products first (set_product_tuning(cuda, false) turns the
    // tuning off for every graph of the thread).
    void set_product_tuning(bool on) { tune_ = on; }

private:
    template <class F>
    void record(F& step) {
        if (!stream_) SGT_CUDA_CHECK(cudaStreamCreate(&stream_));
        auto& ctx = detail::context();
        if (tune_ && ctx.tune_products) tune_products(cuda{});  // the eager run before made the step's plans
        ctx.stream = stream_;
        cudaGraph_t graph = nullptr;
        try {
            SGT_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
            try {
                step();
            } catch (...) {
                cudaStreamEndCapture(stream_, &graph);
                if (graph) cudaGraphDestroy(graph);
                throw;
            }
            SGT_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
            ctx.stream = nullptr;
            const cudaError_t made = cudaGraphInstantiate(&exec_, graph, 0);
            cudaGraphDestroy(graph);
            SGT_CUDA_CHECK(made);
            allocations_ = detail::device_allocations();
        } catch (...) {
            ctx.stream = nullptr;
            exec_ = nullptr;
            throw;
        }
    }

    cudaStream_t stream_ = nullptr;
    cudaGraphExec_t exec_ = nullptr;
    std::int64_t allocations_ = 0;  // detail::device_allocations() when the recording was made
    bool warmed_ = false, enabled_ = true, tune_ = true;
};

}  // namespace sgt
