// sgt/dist/gradient_sync.hpp: what the trainer needs of data parallelism (train/trainer.hpp,
// set_data_parallel); the implementations are in dist/data_parallel.hpp (host memory) and dist/nccl.hpp (CUDA).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "sgt/core/error.hpp"

namespace sgt::dist {

// A range [offset, offset + count) of the flat parameter (and gradient) buffer.
struct param_range {
    std::int64_t offset = 0, count = 0;
    std::int64_t end() const { return offset + count; }
    bool operator==(const param_range&) const = default;
};

// ZeRO-1 (trainer::set_data_parallel with a sharded optimizer): rank `rank`'s share of a buffer of n elements,
// [cut(rank), cut(rank + 1)) with cut(r) = ⌊r·n / world⌋ rounded down to a multiple of 64 elements (so that every
// share starts aligned for the backends' packed loads) and cut(world) = n. Shares may be empty for tiny n.
inline param_range shard_of(std::int64_t n, int rank, int world) {
    require(n >= 0 && world >= 1 && rank >= 0 && rank < world, "data parallel: no share {} of {} over {} ranks", rank,
            n, world);
    auto cut = [&](int r) { return r == world ? n : (n / world * r + n % world * r / world) / 64 * 64; };
    return {cut(rank), cut(rank + 1) - cut(rank)};
}

// What the trainer needs of data parallelism (train/trainer.hpp, set_data_parallel). T is the model's value
// type, Backend its backend; the gradient buffer is in the backend's memory.
template <class T, class Backend>
class gradient_sync {
public:
    virtual ~gradient_sync() = default;
    virtual int rank() const = 0;
    virtual int world() const = 0;
    // Every rank's values (the same count on every rank), rank by rank; the same on every rank.
    virtual std::vector<double> all_gather(std::span<const double> mine) = 0;
    // A backward into `grads` (the model's whole gradient buffer) begins; ready() reports a final range of it;
    // after end_backward() the buffer holds the sum over the ranks, ordered before the backend's later work.
    virtual void begin_backward(std::span<T> grads) = 0;
    virtual void ready(param_range r) = 0;
    virtual void end_backward() = 0;

    // Whether the step's exchanges can be recorded with the rest of a step into a CUDA graph and replayed
    // (train/trainer.hpp): the calls above and share_ranges only enqueue work on the backend's streams and read
    // nothing back, so the same recorded work sums the next step's gradients. Then the trainer calls wait_step()
    // after the step, before anything reads a result back. A sync that works through host memory says no, and a
    // data-parallel step with it runs eagerly.
    virtual bool replayable() const { return false; }
    // Blocks until the step's exchanges (enqueued or replayed) are done, or fails with an sgt::error when a rank
    // fails meanwhile; a sync whose calls finish before they return has nothing to wait for.
    virtual void wait_step() {}

    // For a sharded optimizer (ZeRO-1); a sync that does not implement them refuses one.
    // share_ranges: `data` (backend memory, `elem_bytes` per element) gets every rank's range of it from that
    // rank, ranges[r] being rank r's (as shard_of gives them), ordered before the backend's later work.
    virtual void share_ranges(void* data, std::size_t elem_bytes, std::span<const param_range> ranges) {
        (void)data, (void)elem_bytes, (void)ranges;
        fail("data parallel: this gradient sync cannot share the ranges of a sharded optimizer (ZeRO-1)");
    }
    // gather_to_root: every rank's `mine` (host bytes, any length) on rank 0, rank by rank; empty elsewhere.
    virtual std::vector<std::byte> gather_to_root(std::span<const std::byte> mine) {
        (void)mine;
        fail("data parallel: this gradient sync cannot gather a sharded optimizer's state (ZeRO-1)");
    }
};

}  // namespace sgt::dist
