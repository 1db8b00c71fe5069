// sgt/infer/kv_cache.hpp: the KV cache of a looped model, with one slot per attention pass (spec Sec. 7).
//
// A frozen structure (structure.hpp) gives every attention pass a slot: per layer one for the first pass (all
// heads) and one per loop step k = 1..K_l holding the heads that step computes, since loop step k's keys and
// values are projections of H^(k-1) and differ from the first pass's (Block Loop: one such set per repeated
// pass). The cache is one arena sized ONCE, for a capacity in head vectors per token (a plan's exact need, or
// the compile-time loop budget's), max_batch sequences and max_context positions; binding a structure lays its
// slots out inside it, so changing the plan never allocates. Slot layout: k, v (max_batch, n, max_context, HD).
#pragma once

#include <cstdint>

#include "sgt/core/error.hpp"
#include "sgt/infer/structure.hpp"

namespace sgt {

template <class T, class Backend>
class kv_cache {
public:
    template <class U>
    using buffer = typename Backend::template buffer<U>;

    // Room for heads_per_token (key, value) head vectors per token, for max_batch sequences of max_context tokens.
    kv_cache(std::int64_t heads_per_token, int max_batch, int max_context, int head_dim)
        : capacity_(heads_per_token), max_batch_(max_batch), max_context_(max_context), HD_(head_dim) {
        require(heads_per_token > 0, "kv cache: expected a positive number of head vectors per token, found {}",
                heads_per_token);
        require(max_batch > 0, "kv cache: expected a positive batch size, found {}", max_batch);
        require(max_context > 0, "kv cache: expected a positive context, found {}", max_context);
        keys_.resize(std::size_t(elements()));
        values_.resize(std::size_t(elements()));
        fill_zero(Backend{}, keys_.data(), elements());
        fill_zero(Backend{}, values_.data(), elements());
    }

    // Lays out the slots of `s` (throws when it needs more head vectors per token than the cache holds).
    void bind(const frozen_structure& s) {
        require(s.heads_per_token <= capacity_,
                "kv cache: the structure needs {} (key, value) head vectors per token, the cache was built for {}",
                s.heads_per_token, capacity_);
        bound_ = s.heads_per_token;
    }

    // Keys and values of the slot of pass p, from sequence b0 on: (B, n, max_context, HD).
    T* keys(const frozen_pass& p, int b0 = 0) { return keys_.data() + slot_offset(p, b0); }
    T* values(const frozen_pass& p, int b0 = 0) { return values_.data() + slot_offset(p, b0); }

    std::int64_t capacity() const { return capacity_; }  // head vectors per token
    std::int64_t used() const { return bound_; }         // head vectors per token of the bound structure
    int max_batch() const { return max_batch_; }
    int max_context() const { return max_context_; }
    // Bytes of the whole arena (keys and values), and the part the bound structure uses.
    std::int64_t bytes() const { return 2 * elements() * std::int64_t(sizeof(T)); }
    std::int64_t used_bytes() const {
        return 2 * bound_ * max_batch_ * std::int64_t(max_context_) * HD_ * std::int64_t(sizeof(T));
    }

private:
    std::int64_t elements() const { return capacity_ * max_batch_ * std::int64_t(max_context_) * HD_; }
    std::int64_t slot_offset(const frozen_pass& p, int b0) const {
        const std::int64_t per_head = std::int64_t(max_context_) * HD_;
        return p.slot_offset * max_batch_ * per_head + std::int64_t(b0) * p.n() * per_head;
    }

    std::int64_t capacity_ = 0, bound_ = 0;
    int max_batch_, max_context_, HD_;
    buffer<T> keys_, values_;  // (capacity · max_batch · max_context · HD), slot after slot
};

}  // namespace sgt
