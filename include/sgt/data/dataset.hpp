// sgt/data/dataset.hpp: the contract every data source meets, the concept sgt::dataset.
//
// A training loop takes any type that models sgt::dataset: byte-level text (text.hpp), the synthetic k-hop
// reasoning task (synthetic.hpp), token shards. It asks for
//   - random training batches, drawn from the run's sgt::rng only, so a run is reproducible and resumable;
//   - validation batches that are the same on every call, so val losses compare across steps and runs;
//   - a one-line description for the log;
//   - the vocabulary size V: every token id in inputs and targets is in [0, V) (targets may also be
//     sgt::ignore_target).
// B and T are chosen by the caller at each call, so one data source serves models of any sequence length.
#pragma once

#include <concepts>
#include <string>
#include <vector>

#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"

namespace sgt {

template <class D>
concept dataset = requires(D& d, const D& cd, rng& r, int B, int T, int max_batches) {
    // B sequences of T tokens at random places; targets are the next tokens (or ignore_target).
    { d.train_batch(r, B, T) } -> std::same_as<batch>;
    // At most max_batches batches of (B, T), deterministic: the same result on every call.
    { cd.val_batches(B, T, max_batches) } -> std::same_as<std::vector<batch>>;
    // One line for logs, e.g. "text 'x.txt': 1,115,394 bytes, train 1,003,854 / val 111,540".
    { cd.describe() } -> std::convertible_to<std::string>;
    // Tokens are in [0, vocab()).
    { cd.vocab() } -> std::convertible_to<int>;
};

}  // namespace sgt
