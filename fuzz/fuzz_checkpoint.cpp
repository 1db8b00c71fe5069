// fuzz/fuzz_checkpoint.cpp: libFuzzer target for the metadata path of sgt/io/checkpoint.hpp's load_checkpoint.
// Any input must load or throw sgt::error, and a refused load must change nothing; see checkpoint_harness.hpp.
#include "checkpoint_harness.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    sgt::fuzz::run_checkpoint(std::as_bytes(std::span<const std::uint8_t>(data, size)));
    return 0;
}
