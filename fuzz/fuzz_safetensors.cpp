// fuzz/fuzz_safetensors.cpp: libFuzzer target for sgt/io/safetensors.hpp's reader (and, on what it accepts, the
// typed reads and the writer). Any input must load or throw sgt::error; see harness.hpp for what is checked.
#include "harness.hpp"

#include <cstddef>
#include <cstdint>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    sgt::fuzz::run_safetensors(std::as_bytes(std::span<const std::uint8_t>(data, size)));
    return 0;
}
