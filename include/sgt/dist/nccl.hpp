// sgt/dist/nccl.hpp: data parallelism on CUDA GPUs over NCCL (dist/data_parallel.hpp says what a step does).
//
// One process per GPU. The processes meet in a tcp_group (dist/tcp_group.hpp), which carries NCCL's unique id
// from rank 0 to the others and, during training, the small host values of each step (counts, losses,
// entropies), so that Θ is the same on every rank by construction. The gradients are summed by ncclAllReduce,
// bucket by bucket, on a stream of their own while the backward goes on: each bucket waits (an event) for the
// backward work that finished it, and the step's later work (the clip, AdamW) waits for the last bucket. Nothing
// is read back during the step: the host waits once, after it (wait_step, which watches for failed ranks), so a
// step with these exchanges is recorded into the trainer's CUDA graph and replayed like a one-GPU step (NCCL's
// collectives can be captured into a graph).
// With bf16 gradients the sum is taken in bf16 (as NCCL adds) or, with `fp32_reduce`, in fp32: each bucket is
// widened into an fp32 copy, summed, and narrowed back once all buckets are in.
//
// NCCL is loaded when the first communicator is made (dlopen of the file SGT_NCCL_LIBRARY names, else of
// libnccl.so.2, then libnccl.so: dist/shared_library.hpp), not linked: a program built with NCCL's header runs
// without the library as long as it trains in one process, and says so clearly when it is asked for several.
// A rank whose collective does not finish within the group's timeout (another rank died, a network is down)
// aborts its communicator and fails with an sgt::error, instead of waiting forever.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "sgt/backend/cuda.hpp"
#include "sgt/dist/data_parallel.hpp"
#include "sgt/dist/shared_library.hpp"

namespace sgt::dist {

// The NCCL functions sgt calls, resolved at run time.
struct nccl_library {
    decltype(&ncclGetVersion) get_version = nullptr;
    decltype(&ncclGetUniqueId) get_unique_id = nullptr;
    decltype(&ncclCommInitRank) comm_init_rank = nullptr;
    decltype(&ncclAllReduce) all_reduce = nullptr;
    decltype(&ncclBroadcast) broadcast = nullptr;
    decltype(&ncclGroupStart) group_start = nullptr;
    decltype(&ncclGroupEnd) group_end = nullptr;
    decltype(&ncclCommGetAsyncError) comm_get_async_error = nullptr;
    decltype(&ncclCommAbort) comm_abort = nullptr;
    decltype(&ncclCommDestroy) comm_destroy = nullptr;
    decltype(&ncclGetErrorString) get_error_string = nullptr;
    int version = 0;

    // The library, loaded once; throws sgt::error when it cannot be found or lacks a function.
    static const nccl_library& get() {
        static const nccl_library lib = load();
        return lib;
    }

    void check(ncclResult_t r, const char* what) const {
        require(r == ncclSuccess, "NCCL: {} failed: {}", what, get_error_string ? get_error_string(r) : "(no message)");
    }

private:
    static nccl_library load() {
        const shared_library so(  // never closed: the functions stay valid
            library_candidates("SGT_NCCL_LIBRARY", {"libnccl.so.2", "libnccl.so"}), "NCCL",
            "several GPU processes need it: install it (the CUDA toolkit's, or `pip install nvidia-nccl-cu13`) and "
            "add its directory to LD_LIBRARY_PATH, or name the file in SGT_NCCL_LIBRARY");
        nccl_library lib;
        auto bind = [&](auto& fn, const char* name) { fn = so.function<std::remove_reference_t<decltype(fn)>>(name); };
        bind(lib.get_version, "ncclGetVersion");
        bind(lib.get_unique_id, "ncclGetUniqueId");
        bind(lib.comm_init_rank, "ncclCommInitRank");
        bind(lib.all_reduce, "ncclAllReduce");
        bind(lib.broadcast, "ncclBroadcast");
        bind(lib.group_start, "ncclGroupStart");
        bind(lib.group_end, "ncclGroupEnd");
        bind(lib.comm_get_async_error, "ncclCommGetAsyncError");
        bind(lib.comm_abort, "ncclCommAbort");
        bind(lib.comm_destroy, "ncclCommDestroy");
        bind(lib.get_error_string, "ncclGetErrorString");
        lib.check(lib.get_version(&lib.version), "ncclGetVersion");
        return lib;
    }
};

// Makes this process's GPU its local rank's (call before anything touches the GPU): GPU `local_rank`, or the
// only one a launcher left visible (CUDA_VISIBLE_DEVICES set to one GPU per process, as `srun --gpus-per-task=1`
// does). Throws sgt::error when the process sees fewer GPUs than that.
inline void select_device(cuda, const launch_env& e) {
    int count = 0;
    SGT_CUDA_CHECK(cudaGetDeviceCount(&count));
    const bool one_per_process = count == 1 && std::getenv("CUDA_VISIBLE_DEVICES") != nullptr;
    require(e.local_rank < count || one_per_process, "launch: rank {} has local rank {}, but this host has {} GPU{}",
            e.rank, e.local_rank, count, count == 1 ? "" : "s");
    SGT_CUDA_CHECK(cudaSetDevice(one_per_process ? 0 : e.local_rank));
}

template <class T>
class nccl_data_parallel final : public gradient_sync<T, cuda> {
public:
    struct options {
        bool fp32_reduce = false;                 // bf16 gradients: sum in fp32 instead of bf16
        std::int64_t bucket_bytes = 25 << 20;     // the least size of a bucket (PyTorch DDP's default)
    };

    // Every rank of `g` calls it at the same time; the current device is this rank's (select_device).
    nccl_data_parallel(tcp_group& g, options o = {})
        : group_(g), lib_(nccl_library::get()), options_(o),
          bucket_elems_(std::max<std::int64_t>(1, o.bucket_bytes / std::int64_t(sizeof(T)))) {
        ncclUniqueId id{};
        if (g.rank() == 0) lib_.check(lib_.get_unique_id(&id), "ncclGetUniqueId");
        g.broadcast(std::span<char>(id.internal, sizeof id.internal));
        lib_.check(lib_.comm_init_rank(&comm_, g.size(), id, g.rank()), "ncclCommInitRank");
        try {
            SGT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        } catch (...) {  // the destructor does not run for an object whose constructor threw
            lib_.comm_abort(comm_);
            throw;
        }
    }
    nccl_data_parallel(const nccl_data_parallel&) = delete;
    nccl_data_parallel& operator=(const nccl_data_parallel&) = delete;
    ~nccl_data_parallel() override {
        if (comm_ != nullptr) {
            if (failed_)
                lib_.comm_abort(comm_);
            else {
                cudaStreamSynchronize(stream_);
                lib_.comm_destroy(comm_);
            }
        }
        if (stream_) cudaStreamDestroy(stream_);
    }

    int rank() const override { return group_.rank(); }
    int world() const override { return group_.size(); }
    std::vector<double> all_gather(std::span<const double> mine) override { return group_.all_gather(mine); }
    int nccl_version() const { return lib_.version; }

    void begin_backward(std::span<T> grads) override {
        grads_ = grads;
        buckets_.emplace(std::int64_t(grads.size()), bucket_elems_);
        used_events_ = 0;
        if (widen()) wide_.resize(grads.size());
    }
    void ready(param_range r) override {
        for (const auto& b : buckets_->ready(r)) reduce(b);
    }
    void end_backward() override {
        for (const auto& b : buckets_->finish()) reduce(b);
        buckets_.reset();
        SGT_CUDA_CHECK(cudaEventRecord(done_, stream_));
        SGT_CUDA_CHECK(cudaStreamWaitEvent(::sgt::detail::stream(), done_, 0));
        if constexpr (is_bf16)  // not a plain `if`: convert<float, float> has no instantiation to link against
            if (widen()) convert(cuda{}, grads_.data(), wide_.data(), std::int64_t(grads_.size()));
    }
    bool replayable() const override { return lib_.version >= 20900; }  // NCCL 2.9 and later can be captured
    // The op stream's work so far (the step, eager or replayed, which joined the NCCL stream's) is done.
    void wait_step() override {
        SGT_CUDA_CHECK(cudaEventRecord(done_, ::sgt::detail::stream()));
        wait_for_done("the step's exchanges over NCCL");
    }
    // ZeRO-1: rank r's range of `data` from rank r to all, one ncclBroadcast per rank in one NCCL group, on the
    // NCCL stream after the op stream's work so far; the op stream's later work waits for it.
    void share_ranges(void* data, std::size_t elem_bytes, std::span<const param_range> ranges) override {
        require(int(ranges.size()) == world(), "data parallel: expected a range for each of {} ranks, found {}",
                world(), ranges.size());
        if (world() == 1) return;
        SGT_CUDA_CHECK(cudaEventRecord(done_, ::sgt::detail::stream()));
        SGT_CUDA_CHECK(cudaStreamWaitEvent(stream_, done_, 0));
        lib_.check(lib_.group_start(), "ncclGroupStart");
        for (int r = 0; r < world(); ++r) {
            const param_range x = ranges[std::size_t(r)];
            if (x.count == 0) continue;
            char* p = static_cast<char*>(data) + std::size_t(x.offset) * elem_bytes;
            lib_.check(lib_.broadcast(p, p, std::size_t(x.count) * elem_bytes, ncclUint8, r, comm_, stream_),
                       "ncclBroadcast");
        }
        lib_.check(lib_.group_end(), "ncclGroupEnd");
        SGT_CUDA_CHECK(cudaEventRecord(done_, stream_));
        SGT_CUDA_CHECK(cudaStreamWaitEvent(::sgt::detail::stream(), done_, 0));
    }
    // Host bytes, over the group's connections (checkpoints of a sharded optimizer).
    std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) override { return group_.gather(mine); }

private:
    static constexpr bool is_bf16 = std::is_same_v<T, __nv_bfloat16>;
    bool widen() const { return is_bf16 && options_.fp32_reduce; }

    static constexpr ncclDataType_t type_of() {
        if constexpr (std::is_same_v<T, float>) return ncclFloat32;
        else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
        else if constexpr (is_bf16) return ncclBfloat16;
        else static_assert(sizeof(T) == 0, "nccl_data_parallel: gradients must be float, double or bf16");
    }

    // One bucket: after the backward work that finished it (an event on the op stream), on the NCCL stream.
    void reduce(param_range b) {
        if (used_events_ == events_.size()) events_.emplace_back(cudaEventDisableTiming);
        const cudaEvent_t e = events_[used_events_++];
        void* data = grads_.data() + b.offset;
        ncclDataType_t type = type_of();
        if constexpr (is_bf16)
            if (widen()) {
                convert(cuda{}, wide_.data() + b.offset, grads_.data() + b.offset, b.count);
                data = wide_.data() + b.offset;
                type = ncclFloat32;
            }
        SGT_CUDA_CHECK(cudaEventRecord(e, ::sgt::detail::stream()));
        SGT_CUDA_CHECK(cudaStreamWaitEvent(stream_, e, 0));
        lib_.check(lib_.all_reduce(data, data, std::size_t(b.count), type, ncclSum, comm_, stream_), "ncclAllReduce");
    }

    // Waits for done_ (recorded after `what`), watching NCCL's asynchronous errors and the group's connections (a
    // rank that exited leaves NCCL waiting for it); gives up after the group's timeout.
    void wait_for_done(const char* what) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(group_.timeout_s());
        for (int polls = 0;; ++polls) {
            const cudaError_t q = cudaEventQuery(done_);
            if (q == cudaSuccess) return;
            if (q != cudaErrorNotReady) SGT_CUDA_CHECK(q);
            ncclResult_t async = ncclSuccess;
            lib_.check(lib_.comm_get_async_error(comm_, &async), "ncclCommGetAsyncError");
            if (async != ncclSuccess) {
                failed_ = true;
                group_.abort();
                fail("rank {}: NCCL reported an error during {}: {}", rank(), what, lib_.get_error_string(async));
            }
            if (polls % 256 == 255) {  // about every 5 ms
                if (const int gone = group_.closed_peer(); gone >= 0) {
                    failed_ = true;
                    group_.abort();
                    fail("rank {}: rank {} exited during {} (its connection closed)", rank(), gone, what);
                }
            }
            if (std::chrono::steady_clock::now() > deadline) {
                failed_ = true;
                group_.abort();
                fail("rank {}: {} did not finish within {} s (SGT_DIST_TIMEOUT): another rank has probably died or "
                     "hangs; this rank gives up",
                     rank(), what, group_.timeout_s());
            }
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
    }

    tcp_group& group_;
    const nccl_library& lib_;
    options options_;
    std::int64_t bucket_elems_;
    ncclComm_t comm_ = nullptr;
    cudaStream_t stream_ = nullptr;
    device_event done_{cudaEventDisableTiming};
    std::deque<device_event> events_;  // one per bucket of a step, made as the buckets first need them
    std::size_t used_events_ = 0;
    std::span<T> grads_;
    std::optional<bucketer> buckets_;
    device_buffer<float> wide_;  // fp32 copies of bf16 gradients (fp32_reduce)
    bool failed_ = false;
};

// The gradient sync of a CUDA model (the programs' factory; see host_data_parallel's for the CPU).
template <class T>
std::unique_ptr<gradient_sync<T, cuda>> make_gradient_sync(cuda, tcp_group& g, const sync_options& o) {
    return std::make_unique<nccl_data_parallel<T>>(
        g, typename nccl_data_parallel<T>::options{.fp32_reduce = o.fp32_reduce, .bucket_bytes = o.bucket_bytes});
}

}  // namespace sgt::dist
