// sgt/dist/data_parallel.hpp: data-parallel training, the parts every backend shares.
//
// Every rank holds the whole model and trains on its rows of each global batch (rank_rows). A step is the step
// of one process over the global batch (train/trainer.hpp, set_data_parallel):
//   1. the ranks' target counts are gathered, so every rank scales its cross-entropy by 1 / (global count);
//   2. the backward reports each parameter range whose gradient is final (the LM head and final norm first, then
//      layer by layer down to the embedding); the ranges are coalesced into buckets and each bucket is summed
//      over the ranks as soon as it fills, while the backward goes on (on a GPU: on a second stream);
//   3. the loss sums and the entropies (Eq. 4, batch means per rank) are gathered and combined in rank order, so
//      every rank computes the same global loss and the same mean entropies, and the growth operator takes the
//      same decision everywhere: Θ is identical on every rank by construction;
//   4. clipping and AdamW run on every rank on the same summed gradient, so the weights stay identical.
// The rows of a rank are a slice of the global batch that every rank draws identically (the data stream's state
// is global), so a run resumes on another number of ranks as long as the global batch is the same.
//
// A backend's gradient_sync: host_data_parallel below (host memory, over dist/tcp_group.hpp), nccl_data_parallel
// in dist/nccl.hpp (CUDA device memory, over NCCL).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/dist/gradient_sync.hpp"
#include "sgt/dist/tcp_group.hpp"

namespace sgt::dist {

// Rows [rank·B/W, (rank + 1)·B/W) of a global batch of B sequences, for rank `rank` of `world`. B must be a
// multiple of W: every rank trains on as many sequences (the entropies are then a plain mean over ranks).
inline batch rank_rows(const batch& global, int rank, int world) {
    require(world >= 1 && rank >= 0 && rank < world, "data parallel: rank {} of world size {} is impossible", rank,
            world);
    require(global.B % world == 0,
            "data parallel: the global batch of {} sequences does not split over {} ranks; give a batch that is a "
            "multiple of the number of processes",
            global.B, world);
    if (world == 1) return global;
    const int rows = global.B / world;
    return batch_rows(global, rank * rows, rows);
}

// Coalesces the ranges the backward reports final into buckets of at least `bucket_elems` elements. ready()
// returns the buckets to reduce now; finish() the rest, including every range never reported, so that after a
// step each element of the buffer has been in exactly one bucket.
class bucketer {
public:
    bucketer(std::int64_t total, std::int64_t bucket_elems) : total_(total), bucket_(bucket_elems) {
        require(total >= 0 && bucket_elems > 0, "data parallel: expected a buffer length >= 0 and a bucket size > 0, "
                                                "found {} and {}", total, bucket_elems);
    }

    std::vector<param_range> ready(param_range r) {
        require(r.offset >= 0 && r.count >= 0 && r.end() <= total_,
                "data parallel: the range [{}, {}) is outside the buffer of {} elements", r.offset, r.end(), total_);
        std::vector<param_range> out;
        if (r.count == 0) return out;
        if (pending_.count > 0 && (r.end() == pending_.offset || r.offset == pending_.end())) {
            pending_ = {std::min(r.offset, pending_.offset), pending_.count + r.count};
        } else {
            if (pending_.count > 0) out.push_back(take_pending());
            pending_ = r;
        }
        if (pending_.count >= bucket_) out.push_back(take_pending());
        return out;
    }

    std::vector<param_range> finish() {
        std::vector<param_range> out;
        if (pending_.count > 0) out.push_back(take_pending());
        std::sort(done_.begin(), done_.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
        std::int64_t at = 0;
        for (const auto& d : done_) {
            require(d.offset >= at, "data parallel: the range [{}, {}) was reported twice in one backward", d.offset,
                    d.end());
            if (d.offset > at) out.push_back({at, d.offset - at});
            at = d.end();
        }
        if (at < total_) out.push_back({at, total_ - at});
        done_.clear();
        return out;
    }

private:
    param_range take_pending() {
        const param_range p = pending_;
        done_.push_back(p);
        pending_ = {};
        return p;
    }
    std::int64_t total_, bucket_;
    param_range pending_;
    std::vector<param_range> done_;
};

// A sharded optimizer's exchange in host memory over a tcp_group: every rank's range of `data` (elem_bytes per
// element; ranges[r] is rank r's) goes to its place on rank 0, which sends the ranges' whole span back to every rank.
inline void share_host_ranges(tcp_group& g, std::byte* data, std::size_t elem_bytes,
                              std::span<const param_range> ranges) {
    require(int(ranges.size()) == g.size(), "data parallel: expected a range for each of {} ranks, found {}", g.size(),
            ranges.size());
    if (g.size() == 1) return;
    std::vector<std::pair<std::size_t, std::size_t>> at;
    std::int64_t lo = ranges[0].offset, hi = ranges[0].end();
    for (const param_range& r : ranges) {
        at.emplace_back(std::size_t(r.offset) * elem_bytes, std::size_t(r.count) * elem_bytes);
        lo = std::min(lo, r.offset), hi = std::max(hi, r.end());
    }
    g.gather_in_place(data, at);
    g.broadcast(std::span<std::byte>(data + std::size_t(lo) * elem_bytes, std::size_t(hi - lo) * elem_bytes));
}

// Gradients in host memory (the CPU backend), summed over a tcp_group as each bucket fills (on rank 0, in rank
// order, accumulated in double and rounded once to T).
template <class T, class Backend>
class host_data_parallel final : public gradient_sync<T, Backend> {
    static_assert(Backend::host_memory, "host_data_parallel: the backend's buffers must be host memory; on a GPU use "
                                        "nccl_data_parallel (dist/nccl.hpp)");

public:
    // bucket_bytes: the least size of a bucket (25 MiB by default, as PyTorch's DDP).
    explicit host_data_parallel(tcp_group& g, std::int64_t bucket_bytes = 25 << 20)
        : group_(g), bucket_elems_(std::max<std::int64_t>(1, bucket_bytes / std::int64_t(sizeof(T)))) {}

    int rank() const override { return group_.rank(); }
    int world() const override { return group_.size(); }
    std::vector<double> all_gather(std::span<const double> mine) override { return group_.all_gather(mine); }

    void begin_backward(std::span<T> grads) override {
        grads_ = grads;
        buckets_.emplace(std::int64_t(grads.size()), bucket_elems_);
    }
    void ready(param_range r) override {
        for (const auto& b : buckets_->ready(r)) reduce(b);
    }
    void end_backward() override {
        for (const auto& b : buckets_->finish()) reduce(b);
        buckets_.reset();
    }
    void share_ranges(void* data, std::size_t elem_bytes, std::span<const param_range> ranges) override {
        share_host_ranges(group_, static_cast<std::byte*>(data), elem_bytes, ranges);
    }
    std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) override { return group_.gather(mine); }

private:
    void reduce(param_range b) {
        group_.template all_reduce_sum<T, double>(grads_.subspan(std::size_t(b.offset), std::size_t(b.count)));
    }
    tcp_group& group_;
    std::int64_t bucket_elems_;
    std::span<T> grads_;
    std::optional<bucketer> buckets_;
};

// How the programs make a backend's gradient sync (make_gradient_sync, found by argument-dependent lookup).
struct sync_options {
    bool fp32_reduce = false;              // bf16 gradients on a GPU: sum them in fp32 (dist/nccl.hpp)
    std::int64_t bucket_bytes = 25 << 20;  // the least size of a bucket
};

// A host-memory backend's: host_data_parallel over the group (CUDA's is in dist/nccl.hpp).
template <class T, class Backend>
    requires(Backend::host_memory)
std::unique_ptr<gradient_sync<T, Backend>> make_gradient_sync(Backend, tcp_group& g, const sync_options& o) {
    return std::make_unique<host_data_parallel<T, Backend>>(g, o.bucket_bytes);
}

// The device of this rank: nothing to choose on a host-memory backend (CUDA's is in dist/nccl.hpp).
template <class Backend>
    requires(Backend::host_memory)
void select_device(Backend, const launch_env&) {}

}  // namespace sgt::dist
