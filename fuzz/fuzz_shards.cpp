// fuzz/fuzz_shards.cpp: libFuzzer target for sgt/data/shards.hpp (llm.c token shards). The shard reader takes
// files, so each input is written to a file in a directory of this process's own (under $TMPDIR, or /tmp) and
// opened from there. Any input must load or throw sgt::error; see harness.hpp for what is checked.
#include "harness.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>

namespace {

// This process's scratch directory, removed at normal exit.
struct scratch_dir {
    std::filesystem::path path = std::filesystem::temp_directory_path() /
                                 ("sgt_fuzz_shards_" + std::to_string(::getpid()));
    ~scratch_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const scratch_dir dir;
    sgt::fuzz::run_shards(std::as_bytes(std::span<const std::uint8_t>(data, size)), dir.path);
    return 0;
}
