// Tests of sgt/data/text.hpp: the byte-level text dataset, its split, batches and errors.
#include <doctest/doctest.h>

#include "../support.hpp"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "sgt/data/dataset.hpp"
#include "sgt/data/text.hpp"

namespace {

const std::filesystem::path shakespeare = std::filesystem::path(SGT_SHARED_DATA_DIR) / "tinyshakespeare.txt";

// byte i = i: a window's offset is its first byte, so every test below can see where a window came from.
sgt::text_dataset counting_corpus(double train_fraction = 0.5) {
    std::vector<std::uint8_t> bytes(256);
    for (int i = 0; i < 256; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);
    return sgt::text_dataset("counting", std::move(bytes), train_fraction);
}

using sgt::test::contains;
using sgt::test::error_of;

// A file in the temp directory, removed at scope exit.
struct temp_file {
    std::filesystem::path path;
    explicit temp_file(const std::string& name, const std::string& content) {
        path = std::filesystem::temp_directory_path() / name;
        std::ofstream(path, std::ios::binary) << content;
    }
    ~temp_file() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
};

}  // namespace

TEST_CASE("text_dataset models sgt::dataset with vocab 256") {
    static_assert(sgt::dataset<sgt::text_dataset>);
    CHECK(counting_corpus().vocab() == 256);
}

TEST_CASE("tinyshakespeare splits as nanoGPT's shakespeare_char: train 1,003,854 / val 111,540") {
    if (!std::filesystem::exists(shakespeare)) {
        MESSAGE("skipped: " << shakespeare.string() << " is absent");
        return;
    }
    const std::vector<std::uint8_t> raw = sgt::read_bytes(shakespeare);
    CHECK(raw.size() == 1115394);
    const sgt::text_dataset d(shakespeare);
    CHECK(d.size() == 1115394);
    CHECK(d.train_size() == 1003854);
    CHECK(d.val_size() == 111540);
    CHECK(d.describe() ==
          "text '" + shakespeare.string() + "': 1,115,394 bytes, train 1,003,854 / val 111,540");
    CHECK(std::equal(d.bytes().begin(), d.bytes().end(), raw.begin(), raw.end()));
    CHECK(std::string(d.bytes().begin(), d.bytes().begin() + 14) == "First Citizen:");

    // A training window, found in the file: inputs are file bytes at its offset, targets the same shifted by one.
    sgt::rng r(7);
    const int T = 128;
    const sgt::batch b = d.train_batch(r, 4, T);
    for (int row = 0; row < b.B; ++row) {
        const auto in = b.inputs.begin() + row * T;
        const auto it = std::search(d.bytes().begin(), d.bytes().end(), in, in + T);
        REQUIRE(it != d.bytes().end());
        const auto offset = static_cast<std::size_t>(it - d.bytes().begin());
        CHECK(offset + T + 1 <= d.train_size());
        for (int t = 0; t < T; ++t) CHECK(b.targets[static_cast<std::size_t>(row * T + t)] == raw[offset + t + 1]);
    }

    // The first val window starts right after the train split.
    const std::vector<sgt::batch> v = d.val_batches(2, 64, 1);
    REQUIRE(v.size() == 1);
    for (int t = 0; t < 64; ++t) {
        CHECK(v[0].inputs[static_cast<std::size_t>(t)] == raw[1003854 + static_cast<std::size_t>(t)]);
        CHECK(v[0].targets[static_cast<std::size_t>(t)] == raw[1003854 + static_cast<std::size_t>(t) + 1]);
    }
}

TEST_CASE("the split is floor(n * fraction), and describe groups thousands") {
    const auto d = counting_corpus(0.9);
    CHECK(d.train_size() == 230);  // floor(256 * 0.9) = floor(230.4)
    CHECK(d.val_size() == 26);
    CHECK(d.describe() == "text 'counting': 256 bytes, train 230 / val 26");
    const auto e = sgt::text_dataset::from_string("s", std::string(12345, 'a'), 0.5);
    CHECK(e.describe() == "text 's': 12,345 bytes, train 6,172 / val 6,173");
    CHECK(sgt::detail::group_thousands(1000000) == "1,000,000");
    CHECK(sgt::detail::group_thousands(999) == "999");
}

TEST_CASE("train windows are consecutive bytes of the train split, targets shifted by one") {
    const auto d = counting_corpus();  // train = bytes 0..127, val = 128..255
    const int T = 8;
    sgt::rng r(1);
    std::set<int> offsets;
    for (int draw = 0; draw < 200; ++draw) {
        const sgt::batch b = d.train_batch(r, 16, T);
        REQUIRE(b.B == 16);
        REQUIRE(b.T == T);
        REQUIRE(b.inputs.size() == 16u * T);
        REQUIRE(b.targets.size() == 16u * T);
        for (int row = 0; row < b.B; ++row) {
            const int offset = b.inputs[static_cast<std::size_t>(row * T)];
            offsets.insert(offset);
            for (int t = 0; t < T; ++t) {
                CHECK(b.inputs[static_cast<std::size_t>(row * T + t)] == offset + t);
                CHECK(b.targets[static_cast<std::size_t>(row * T + t)] == offset + t + 1);
            }
            CHECK(offset + T < 128);  // the last target is still a train byte
        }
    }
    // Uniform over every start 0 .. train - T - 1 = 119: after 3200 draws all 120 have appeared.
    CHECK(offsets.size() == 120);
    CHECK(*offsets.begin() == 0);
    CHECK(*offsets.rbegin() == 119);
}

TEST_CASE("train_batch: same seed, same batch; other seed, other batch") {
    const auto c = counting_corpus();
    sgt::rng r1(42), r2(42), r3(43);
    const sgt::batch a = c.train_batch(r1, 8, 16);
    const sgt::batch b = c.train_batch(r2, 8, 16);
    const sgt::batch x = c.train_batch(r3, 8, 16);
    CHECK(a.inputs == b.inputs);
    CHECK(a.targets == b.targets);
    CHECK(a.inputs != x.inputs);
    // The rng advanced: a second draw differs from the first.
    CHECK(c.train_batch(r1, 8, 16).inputs != a.inputs);
}

TEST_CASE("val_batches: stride T from the start of val, non-overlapping, deterministic, partial batch dropped") {
    const auto d = counting_corpus();  // val = bytes 128..255: (128 - 1) / 8 = 15 windows of T = 8
    const int T = 8;
    const std::vector<sgt::batch> v = d.val_batches(4, T, 100);
    REQUIRE(v.size() == 3);  // 15 windows -> 3 full batches of 4, the partial 4th is dropped
    std::set<int> inputs_seen, targets_seen;
    int expected = 128;
    for (const sgt::batch& b : v) {
        CHECK(b.B == 4);
        CHECK(b.T == T);
        for (int row = 0; row < b.B; ++row) {
            for (int t = 0; t < T; ++t) {
                const auto p = static_cast<std::size_t>(row * T + t);
                CHECK(b.inputs[p] == expected + t);
                CHECK(b.targets[p] == expected + t + 1);
                CHECK(inputs_seen.insert(b.inputs[p]).second);    // no input byte twice
                CHECK(targets_seen.insert(b.targets[p]).second);  // no target byte twice
            }
            expected += T;
        }
    }
    CHECK(inputs_seen.size() == 96);
    CHECK(*inputs_seen.begin() == 128);
    CHECK(*targets_seen.rbegin() == 128 + 96);

    // Deterministic, and capped by max_batches (a prefix of the full list).
    const std::vector<sgt::batch> again = d.val_batches(4, T, 100);
    REQUIRE(again.size() == v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
        CHECK(again[i].inputs == v[i].inputs);
        CHECK(again[i].targets == v[i].targets);
    }
    const std::vector<sgt::batch> two = d.val_batches(4, T, 2);
    REQUIRE(two.size() == 2);
    CHECK(two[1].inputs == v[1].inputs);

    // Not one full batch of 32: one batch holding the 15 windows that fit.
    const std::vector<sgt::batch> small = d.val_batches(32, T, 5);
    REQUIRE(small.size() == 1);
    CHECK(small[0].B == 15);
    CHECK(small[0].inputs.size() == 15u * T);
    CHECK(small[0].inputs.back() == 128 + 15 * T - 1);
    CHECK(small[0].targets.back() == 128 + 15 * T);

    // Exactly one window fits when val holds T + 1 bytes.
    const std::vector<sgt::batch> one = d.val_batches(4, 127, 3);
    REQUIRE(one.size() == 1);
    CHECK(one[0].B == 1);
    CHECK(one[0].targets.back() == 255);
}

TEST_CASE("errors: missing file, directory, empty file, empty string") {
    const std::string missing = "/nonexistent/sgt-no-such-file.txt";
    std::string msg = error_of([&] { sgt::text_dataset d{std::filesystem::path(missing)}; });
    CHECK(contains(msg, "no such file"));
    CHECK(contains(msg, missing));
    CHECK(contains(error_of([&] { sgt::read_bytes(missing); }), "no such file"));

    const auto dir = std::filesystem::temp_directory_path();
    msg = error_of([&] { sgt::text_dataset d{dir}; });
    CHECK(contains(msg, "is a directory"));
    CHECK(contains(msg, dir.string()));

    const temp_file empty("sgt_test_text_empty.txt", "");
    CHECK(sgt::read_bytes(empty.path).empty());
    msg = error_of([&] { sgt::text_dataset d{empty.path}; });
    CHECK(contains(msg, "text '" + empty.path.string() + "': the file is empty (0 bytes)"));

    msg = error_of([] { sgt::text_dataset::from_string("embedded", ""); });
    CHECK(contains(msg, "text 'embedded': the text is empty (0 bytes)"));

    const temp_file small("sgt_test_text_small.txt", "hello, world");
    const sgt::text_dataset ok(small.path);
    CHECK(ok.size() == 12);
    CHECK(ok.train_size() == 10);
}

TEST_CASE("errors: a split shorter than T + 1 bytes, raised by check, train_batch and val_batches") {
    const auto d = sgt::text_dataset::from_string("x.txt", std::string(400, 'a'));  // train 360, val 40
    REQUIRE(d.train_size() == 360);
    REQUIRE(d.val_size() == 40);
    const std::string val_short =
        "text 'x.txt': the val split has 40 bytes, expected at least T+1 = 257 for one sequence";
    CHECK(error_of([&] { d.check(256); }) == val_short);
    sgt::rng r(0);
    CHECK(error_of([&] { d.train_batch(r, 2, 256); }) == val_short);
    CHECK(error_of([&] { d.val_batches(2, 256, 1); }) == val_short);
    CHECK(error_of([&] { d.check(39); }).empty());
    CHECK(contains(error_of([&] { d.check(40); }), "val split has 40 bytes, expected at least T+1 = 41"));

    CHECK(contains(error_of([&] { d.check(400); }),
                   "text 'x.txt': the train split has 360 bytes, expected at least T+1 = 401"));
    const auto v = sgt::text_dataset::from_string("y.txt", std::string(400, 'a'), 0.05);  // train 20
    CHECK(contains(error_of([&] { v.train_batch(r, 1, 20); }), "the train split has 20 bytes"));
}

TEST_CASE("errors: B, T, max_batches not positive; train fraction outside (0, 1)") {
    const auto d = counting_corpus();
    sgt::rng r(0);
    CHECK(contains(error_of([&] { d.train_batch(r, 0, 8); }), "B = 0, expected a positive batch size"));
    CHECK(contains(error_of([&] { d.train_batch(r, 2, 0); }), "T = 0, expected a positive sequence length"));
    CHECK(contains(error_of([&] { d.val_batches(-1, 8, 1); }), "B = -1, expected a positive batch size"));
    CHECK(contains(error_of([&] { d.val_batches(1, -3, 1); }), "T = -3, expected a positive sequence length"));
    CHECK(contains(error_of([&] { d.val_batches(1, 8, 0); }), "max_batches = 0, expected a positive count"));
    CHECK(contains(error_of([] { counting_corpus(1.0); }), "train fraction 1, expected a value in (0, 1)"));
    CHECK(contains(error_of([] { counting_corpus(0.0); }), "train fraction 0, expected a value in (0, 1)"));
}
