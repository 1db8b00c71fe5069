// Replays the fuzz corpora on every build: each file of fuzz/corpus/<target>/ and fuzz/crashes/<target>/ goes
// through the code the libFuzzer target runs (fuzz/harness.hpp, fuzz/checkpoint_harness.hpp) and must load or be
// refused with sgt::error, nothing else. The seeds named valid_* must load and pass every step; those named bad_*
// must be refused.
// scripts/fuzz.sh runs the fuzzers themselves (they need clang) and saves what crashes in fuzz/crashes/.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "../fuzz/checkpoint_harness.hpp"
#include "../fuzz/harness.hpp"

namespace {

namespace fs = std::filesystem;

const fs::path fuzz_dir = fs::path(__FILE__).parent_path().parent_path() / "fuzz";

std::vector<std::byte> read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE_MESSAGE(in.is_open(), "cannot open ", path.string());
    const std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> out(raw.size());
    std::transform(raw.begin(), raw.end(), out.begin(), [](char c) { return static_cast<std::byte>(c); });
    return out;
}

// The files of fuzz/<kind>/<target>/, sorted, dot files skipped; none when the directory does not exist.
std::vector<fs::path> inputs(const char* kind, const char* target) {
    std::vector<fs::path> out;
    const fs::path dir = fuzz_dir / kind / target;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file() && !e.path().filename().string().starts_with('.')) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

bool starts_with(const fs::path& p, const char* prefix) { return p.filename().string().starts_with(prefix); }

// A scratch directory of this process for the shard files, removed at the end.
struct scratch_dir {
    fs::path path = fs::temp_directory_path() / ("sgt_test_fuzz_regressions_" + std::to_string(::getpid()));
    ~scratch_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

}  // namespace

TEST_CASE("fuzz_safetensors: every seed and saved crash loads or throws sgt::error") {
    const auto seeds = inputs("corpus", "fuzz_safetensors");
    REQUIRE_MESSAGE(!seeds.empty(), "no seeds in ", (fuzz_dir / "corpus" / "fuzz_safetensors").string());
    CHECK(std::any_of(seeds.begin(), seeds.end(), [](const auto& p) { return starts_with(p, "valid_"); }));
    std::vector<fs::path> all = seeds;
    for (const auto& p : inputs("crashes", "fuzz_safetensors")) all.push_back(p);
    for (const auto& path : all) {
        CAPTURE(path.string());
        const std::vector<std::byte> bytes = read_file(path);
        sgt::fuzz::safetensors_result r;
        CHECK_NOTHROW(r = sgt::fuzz::run_safetensors(std::span<const std::byte>(bytes)));
        if (starts_with(path, "valid_")) {
            CHECK(r.parsed);
            CHECK(r.round_trip);
            CHECK((r.reads_ok > 0 || r.tensors == 0));
        }
        if (starts_with(path, "bad_")) CHECK_FALSE(r.parsed);
    }
}

TEST_CASE("fuzz_shards: every seed and saved crash loads or throws sgt::error") {
    const auto seeds = inputs("corpus", "fuzz_shards");
    REQUIRE_MESSAGE(!seeds.empty(), "no seeds in ", (fuzz_dir / "corpus" / "fuzz_shards").string());
    CHECK(std::any_of(seeds.begin(), seeds.end(), [](const auto& p) { return starts_with(p, "valid_"); }));
    std::vector<fs::path> all = seeds;
    for (const auto& p : inputs("crashes", "fuzz_shards")) all.push_back(p);
    const scratch_dir dir;
    for (const auto& path : all) {
        CAPTURE(path.string());
        const std::vector<std::byte> bytes = read_file(path);
        sgt::fuzz::shards_result r;
        CHECK_NOTHROW(r = sgt::fuzz::run_shards(std::span<const std::byte>(bytes), dir.path));
        if (starts_with(path, "valid_")) {
            CHECK(r.info);
            CHECK(r.opened);
            CHECK(r.tokens_ok);
            CHECK(r.train_failed == 0);
            CHECK(r.train_batches == 3 * static_cast<int>(sgt::fuzz::shard_fixed_dims.size() + 1));
            CHECK(r.val_ok);
        }
        if (starts_with(path, "bad_")) CHECK_FALSE(r.info);
    }
}

TEST_CASE("fuzz_checkpoint: every seed and saved crash loads or is refused with sgt::error, changing nothing") {
    const auto seeds = inputs("corpus", "fuzz_checkpoint");
    REQUIRE_MESSAGE(!seeds.empty(), "no seeds in ", (fuzz_dir / "corpus" / "fuzz_checkpoint").string());
    CHECK(std::any_of(seeds.begin(), seeds.end(), [](const auto& p) { return starts_with(p, "valid_"); }));
    std::vector<fs::path> all = seeds;
    for (const auto& p : inputs("crashes", "fuzz_checkpoint")) all.push_back(p);
    for (const auto& path : all) {
        CAPTURE(path.string());
        const std::vector<std::byte> bytes = read_file(path);
        sgt::fuzz::checkpoint_result r;
        CHECK_NOTHROW(r = sgt::fuzz::run_checkpoint(std::span<const std::byte>(bytes)));
        if (starts_with(path, "valid_")) CHECK(r.loaded);
        if (starts_with(path, "bad_")) {
            CHECK(r.files_ok);
            CHECK_FALSE(r.loaded);
        }
    }
    // The harness's own seed, from a checkpoint it writes, loads.
    const std::string seed = sgt::fuzz::checkpoint_seed();
    CHECK(sgt::fuzz::run_checkpoint(std::as_bytes(std::span<const char>(seed.data(), seed.size()))).loaded);
}

TEST_CASE("fuzz seeds cover both shard layouts") {
    bool u16 = false, u32 = false;
    for (const auto& path : inputs("corpus", "fuzz_shards")) {
        if (!starts_with(path, "valid_")) continue;
        const auto bytes = read_file(path);
        REQUIRE(bytes.size() >= 4);
        const auto magic = std::to_integer<std::uint32_t>(bytes[0]) | std::to_integer<std::uint32_t>(bytes[1]) << 8 |
                           std::to_integer<std::uint32_t>(bytes[2]) << 16 |
                           std::to_integer<std::uint32_t>(bytes[3]) << 24;
        u16 = u16 || magic == static_cast<std::uint32_t>(sgt::shard_magic_uint16);
        u32 = u32 || magic == static_cast<std::uint32_t>(sgt::shard_magic_uint32);
    }
    CHECK(u16);
    CHECK(u32);
}
