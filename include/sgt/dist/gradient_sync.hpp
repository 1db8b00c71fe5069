// sgt/dist/gradient_sync.hpp: what the trainer needs of data parallelism (train/trainer.hpp,
// set_data_parallel); the implementations are in dist/data_parallel.hpp (host memory) and dist/nccl.hpp (CUDA).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace sgt::dist {

// A range [offset, offset + count) of the flat parameter (and gradient) buffer.
struct param_range {
    std::int64_t offset = 0, count = 0;
    std::int64_t end() const { return offset + count; }
    bool operator==(const param_range&) const = default;
};

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
};

}  // namespace sgt::dist
