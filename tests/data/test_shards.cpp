// Tests of sgt/data/shards.hpp: llm.c token shards (both dtypes), the resumable training stream, val batches,
// the glob, and every bad input. The shards are written here, by a writer that lays out the header itself.
#include <doctest/doctest.h>

#include "../support.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "sgt/data/dataset.hpp"
#include "sgt/data/shards.hpp"
#include "sgt/data/text.hpp"

namespace {

namespace fs = std::filesystem;

// The layout of llm.c's dev/data/data_common.py, written out independently of the library's constants.
constexpr std::int32_t magic_u16 = 20240520;
constexpr std::int32_t version_u16 = 1;
constexpr std::int32_t magic_u32 = 20240801;
constexpr std::int32_t version_u32 = 7;

void put_le(std::string& out, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

struct shard_spec {
    std::int32_t magic = magic_u16;
    std::int32_t version = version_u16;
    std::int64_t count = -1;  // header[2]; -1: tokens.size()
    int token_bytes = 2;
    std::int64_t drop_bytes = 0;   // bytes cut off the end (a truncated file)
    std::int64_t extra_bytes = 0;  // bytes appended after the tokens
};

shard_spec u16() { return {}; }
shard_spec u32() { return {magic_u32, version_u32, -1, 4, 0, 0}; }

// Writes a shard: 256 little-endian int32 (magic, version, count, zeros), then the tokens little-endian.
void write_shard(const fs::path& path, const std::vector<std::uint32_t>& tokens, shard_spec spec = u16()) {
    std::string out;
    const std::int64_t count = spec.count >= 0 ? spec.count : static_cast<std::int64_t>(tokens.size());
    put_le(out, static_cast<std::uint32_t>(spec.magic), 4);
    put_le(out, static_cast<std::uint32_t>(spec.version), 4);
    put_le(out, static_cast<std::uint32_t>(count), 4);
    for (int i = 3; i < 256; ++i) put_le(out, 0, 4);
    REQUIRE(out.size() == 1024);
    for (std::uint32_t t : tokens) put_le(out, t, spec.token_bytes);
    out.resize(out.size() - static_cast<std::size_t>(spec.drop_bytes));
    out.append(static_cast<std::size_t>(spec.extra_bytes), '\0');
    std::ofstream f(path, std::ios::binary);
    f.write(out.data(), static_cast<std::streamsize>(out.size()));
    REQUIRE(f.good());
}

// A fresh directory under the temp directory, removed at scope exit.
struct temp_dir {
    fs::path path;
    temp_dir() {
        static std::atomic<int> counter{0};
        static const unsigned run = std::random_device{}();
        path = fs::temp_directory_path() /
               ("sgt_test_shards_" + std::to_string(run) + "_" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// n tokens, token i = (start + i * stride) % modulo: distinct neighbours, so a misplaced window shows.
std::vector<std::uint32_t> ramp(std::size_t n, std::uint32_t start, std::uint32_t stride, std::uint32_t modulo) {
    std::vector<std::uint32_t> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint32_t>((start + i * stride) % modulo);
    return v;
}

// True when `b` is the B*T + 1 tokens of `src` at `offset`: inputs[i] = src[offset + i], targets[i] = src[.. + 1].
bool batch_is(const sgt::batch& b, const std::vector<std::uint32_t>& src, std::size_t offset) {
    const std::size_t n = static_cast<std::size_t>(b.B) * static_cast<std::size_t>(b.T);
    if (b.inputs.size() != n || b.targets.size() != n || offset + n + 1 > src.size()) return false;
    for (std::size_t i = 0; i < n; ++i) {
        if (b.inputs[i] != static_cast<std::int32_t>(src[offset + i])) return false;
        if (b.targets[i] != static_cast<std::int32_t>(src[offset + i + 1])) return false;
    }
    return true;
}

bool same_batch(const sgt::batch& a, const sgt::batch& b) {
    return a.B == b.B && a.T == b.T && a.inputs == b.inputs && a.targets == b.targets;
}

using sgt::test::contains;
using sgt::test::error_of;

}  // namespace

TEST_CASE("shard_dataset models sgt::dataset; wildcard matching") {
    static_assert(sgt::dataset<sgt::shard_dataset>);
    using sgt::detail::wildcard_match;
    CHECK(wildcard_match("x_train_*.bin", "x_train_000001.bin"));
    CHECK(wildcard_match("x_train_*.bin", "x_train_.bin"));
    CHECK_FALSE(wildcard_match("x_train_*.bin", "x_train_000001.bin.tmp"));
    CHECK_FALSE(wildcard_match("x_train_*.bin", "x_val_000000.bin"));
    CHECK(wildcard_match("x_?.bin", "x_1.bin"));
    CHECK_FALSE(wildcard_match("x_?.bin", "x_12.bin"));
    CHECK(wildcard_match("*a*b*", "zzazzbzz"));
    CHECK_FALSE(wildcard_match("*a*b", "zzazzbzz"));
    CHECK(wildcard_match("plain.bin", "plain.bin"));
}

TEST_CASE("uint16 shards read back token for token, in name order") {
    temp_dir d;
    const auto s0 = ramp(100, 3, 517, 50000);  // values above 255: both bytes of a token matter
    const auto s1 = ramp(60, 11, 1031, 50000);
    const auto v0 = ramp(40, 7, 263, 50000);
    write_shard(d / "x_train_000001.bin", s1);  // written first, read second: order is by name
    write_shard(d / "x_train_000000.bin", s0);
    write_shard(d / "x_train_000000.bin.tmp", ramp(100, 0, 1, 7));  // does not match the pattern
    write_shard(d / "x_val_000000.bin", v0);
    sgt::shard_dataset ds(d / "x_train_*.bin", d / "x_val_*.bin", 50000);

    REQUIRE(ds.train_shards().size() == 2);
    CHECK(ds.train_shards()[0].path.filename() == "x_train_000000.bin");
    CHECK(ds.train_shards()[1].path.filename() == "x_train_000001.bin");
    CHECK(ds.train_shards()[0].dtype == sgt::token_dtype::uint16);
    CHECK(ds.train_tokens() == 160);
    CHECK(ds.val_tokens() == 40);
    CHECK(ds.vocab() == 50000);

    sgt::rng r(1);
    const sgt::batch b0 = ds.train_batch(r, 3, 8);
    CHECK(b0.B == 3);
    CHECK(b0.T == 8);
    CHECK(batch_is(b0, s0, 0));
    CHECK(ds.position() == sgt::shard_position{0, 24});
    CHECK(batch_is(ds.train_batch(r, 3, 8), s0, 24));
    CHECK(batch_is(ds.train_batch(r, 3, 8), s0, 48));
    CHECK(ds.position() == sgt::shard_position{0, 72});

    const std::string d_line = ds.describe();
    CHECK(contains(d_line, d / "x_train_*.bin"));
    CHECK(contains(d_line, "2 shards, 160 tokens (uint16)"));
    CHECK(contains(d_line, "1 shard, 40 tokens (uint16)"));
    CHECK(contains(d_line, "vocab 50000"));
}

TEST_CASE("uint32 shards (llm.c's llama-3 layout, version 7) read back token ids above 65535") {
    temp_dir d;
    const auto s0 = ramp(50, 70000, 4099, 128256);
    const auto v0 = ramp(30, 100000, 7919, 128256);
    write_shard(d / "y_train_0.bin", s0, u32());
    write_shard(d / "y_val_0.bin", v0, u32());
    sgt::shard_dataset ds(d / "y_train_*.bin", d / "y_val_*.bin", 128256);
    CHECK(ds.train_shards()[0].dtype == sgt::token_dtype::uint32);
    sgt::rng r(0);
    const sgt::batch b = ds.train_batch(r, 2, 10);
    CHECK(batch_is(b, s0, 0));
    CHECK(*std::max_element(b.inputs.begin(), b.inputs.end()) > 65535);
    const auto val = ds.val_batches(1, 10, 5);
    REQUIRE(val.size() == 2);  // (30 - 1) / 10 = 2 windows of 11 tokens
    CHECK(batch_is(val[0], v0, 0));
    CHECK(batch_is(val[1], v0, 10));
    CHECK(contains(ds.describe(), "(uint32)"));
}

TEST_CASE("the stream moves to the next shard when a batch does not fit, and wraps around to the first") {
    temp_dir d;
    const auto s0 = ramp(10, 1, 1, 1000);
    const auto s1 = ramp(13, 500, 3, 1000);
    write_shard(d / "z_train_a.bin", s0);
    write_shard(d / "z_train_b.bin", s1);
    write_shard(d / "z_val_a.bin", ramp(20, 0, 1, 1000));
    sgt::shard_dataset ds(d / "z_train_?.bin", d / "z_val_?.bin", 1000);
    sgt::rng r(0);
    // B*T = 4, a batch reads 5 tokens: shard 0 (10 tokens) holds batches at 0 and 4; at 8 only 2 are left.
    CHECK(batch_is(ds.train_batch(r, 2, 2), s0, 0));
    CHECK(batch_is(ds.train_batch(r, 2, 2), s0, 4));
    CHECK(ds.position() == sgt::shard_position{0, 8});
    CHECK(batch_is(ds.train_batch(r, 2, 2), s1, 0));  // crossed to shard 1
    CHECK(batch_is(ds.train_batch(r, 2, 2), s1, 4));
    CHECK(batch_is(ds.train_batch(r, 2, 2), s1, 8));  // 8 + 5 = 13: exactly fits
    CHECK(ds.position() == sgt::shard_position{1, 12});
    CHECK(batch_is(ds.train_batch(r, 2, 2), s0, 0));  // wrapped around to shard 0
    CHECK(ds.position() == sgt::shard_position{0, 4});
    // A batch larger than shard 0 (B*T + 1 = 11) skips it: only shard 1 can serve it.
    CHECK(batch_is(ds.train_batch(r, 1, 10), s1, 0));
    CHECK(batch_is(ds.train_batch(r, 1, 10), s1, 0));
    CHECK(ds.position() == sgt::shard_position{1, 10});
    // Larger than every shard: an error that names the need and the largest shard.
    const std::string e = error_of([&] { ds.train_batch(r, 2, 7); });
    CHECK(contains(e, "B*T+1 = 15"));
    CHECK(contains(e, "expected at most 13"));
    CHECK(ds.position() == sgt::shard_position{1, 10});
}

TEST_CASE("position() and seek() resume the stream exactly, in a fresh dataset or the same one") {
    temp_dir d;
    const auto s2 = ramp(41, 2, 13, 300);
    write_shard(d / "r_train_0.bin", ramp(37, 5, 7, 300));
    write_shard(d / "r_train_1.bin", ramp(29, 9, 11, 300));
    write_shard(d / "r_train_2.bin", s2);
    write_shard(d / "r_val_0.bin", ramp(20, 0, 1, 300));
    const std::string train = d / "r_train_*.bin", val = d / "r_val_*.bin";
    sgt::rng r(0);

    sgt::shard_dataset a(train, val, 300);
    for (int i = 0; i < 4; ++i) a.train_batch(r, 2, 5);
    const sgt::shard_position saved = a.position();
    std::vector<sgt::batch> expected;
    for (int i = 0; i < 9; ++i) expected.push_back(a.train_batch(r, 2, 5));  // crosses shards and wraps

    sgt::shard_dataset b(train, val, 300);
    b.seek(saved);
    CHECK(b.position() == saved);
    for (int i = 0; i < 9; ++i) CHECK(same_batch(b.train_batch(r, 2, 5), expected[static_cast<std::size_t>(i)]));
    CHECK(b.position() == a.position());

    a.seek(saved);  // the same object, whose resident shard is another one now
    for (int i = 0; i < 9; ++i) CHECK(same_batch(a.train_batch(r, 2, 5), expected[static_cast<std::size_t>(i)]));
    // Offset == the shard's token count is valid: the next batch starts the following shard.
    a.seek({1, 29});
    CHECK(batch_is(a.train_batch(r, 1, 4), s2, 0));
    CHECK(a.position() == sgt::shard_position{2, 4});
}

TEST_CASE("a failed seek names expected and found and leaves the stream unchanged") {
    temp_dir d;
    write_shard(d / "q_train_0.bin", ramp(30, 1, 1, 100));
    write_shard(d / "q_train_1.bin", ramp(25, 3, 7, 100));
    write_shard(d / "q_val_0.bin", ramp(20, 0, 1, 100));
    sgt::shard_dataset ds(d / "q_train_*.bin", d / "q_val_*.bin", 100);
    sgt::shard_dataset twin(d / "q_train_*.bin", d / "q_val_*.bin", 100);
    sgt::rng r(0);
    ds.train_batch(r, 2, 3);
    twin.train_batch(r, 2, 3);
    const sgt::shard_position before = ds.position();

    const std::string e1 = error_of([&] { ds.seek({2, 0}); });
    CHECK(contains(e1, "seek to shard 2"));
    CHECK(contains(e1, "below 2"));
    CHECK(ds.position() == before);
    const std::string e2 = error_of([&] { ds.seek({1, 26}); });
    CHECK(contains(e2, "offset 26"));
    CHECK(contains(e2, "at most its 25 tokens"));
    CHECK(contains(e2, "q_train_1.bin"));
    CHECK(ds.position() == before);
    for (int i = 0; i < 6; ++i) CHECK(same_batch(ds.train_batch(r, 2, 3), twin.train_batch(r, 2, 3)));
}

TEST_CASE("val batches: llm.c's order over the val shards, deterministic, at most max_batches") {
    temp_dir d;
    const auto v0 = ramp(23, 1, 3, 500);
    const auto v1 = ramp(17, 2, 5, 500);
    write_shard(d / "v_train_0.bin", ramp(50, 0, 1, 500));
    write_shard(d / "v_val_0.bin", v0);
    write_shard(d / "v_val_1.bin", v1);
    sgt::shard_dataset ds(d / "v_train_*.bin", d / "v_val_*.bin", 500);
    // B*T = 6: shard 0 (23 tokens) holds 3 batches, at 0, 6, 12; shard 1 (17 tokens) 2, at 0 and 6.
    const auto all = ds.val_batches(2, 3, 100);
    REQUIRE(all.size() == 5);
    CHECK(batch_is(all[0], v0, 0));
    CHECK(batch_is(all[1], v0, 6));
    CHECK(batch_is(all[2], v0, 12));
    CHECK(batch_is(all[3], v1, 0));
    CHECK(batch_is(all[4], v1, 6));
    const auto again = ds.val_batches(2, 3, 100);
    for (std::size_t i = 0; i < all.size(); ++i) CHECK(same_batch(all[i], again[i]));
    const auto four = ds.val_batches(2, 3, 4);
    REQUIRE(four.size() == 4);
    CHECK(batch_is(four[3], v1, 0));
    // No shard holds B*T + 1 = 31 tokens: one smaller batch of the windows of T + 1 = 4 tokens in shard 0.
    const auto small = ds.val_batches(10, 3, 5);
    REQUIRE(small.size() == 1);
    CHECK(small[0].B == 7);  // (23 - 1) / 3
    CHECK(batch_is(small[0], v0, 0));
    // Not even one sequence fits.
    CHECK(contains(error_of([&] { ds.val_batches(1, 30, 1); }), "T+1 = 31"));
    CHECK(contains(error_of([&] { ds.val_batches(1, 3, 0); }), "max_batches = 0"));
    CHECK(contains(error_of([&] { ds.val_batches(0, 3, 1); }), "B = 0"));
}

TEST_CASE("byte-level shards of a text give the same val batches as text_dataset on the same split") {
    temp_dir d;
    std::string text;
    for (int i = 0; i < 40; ++i) text += "Line " + std::to_string(i * 37) + ": to be, or not to be.\n";
    const sgt::text_dataset txt = sgt::text_dataset::from_string("t", text);
    const std::vector<std::uint32_t> train_tokens(text.begin(), text.begin() + static_cast<long>(txt.train_size()));
    const std::vector<std::uint32_t> val_tokens(text.begin() + static_cast<long>(txt.train_size()), text.end());
    write_shard(d / "t_train_000000.bin", train_tokens);
    write_shard(d / "t_val_000000.bin", val_tokens);
    sgt::shard_dataset ds(d / "t_train_*.bin", d / "t_val_*.bin", 256);
    const auto a = txt.val_batches(4, 16, 10);
    const auto b = ds.val_batches(4, 16, 10);
    REQUIRE(!a.empty());
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(same_batch(a[i], b[i]));
}

TEST_CASE("bad shards: each error names the file and the expected and found values") {
    temp_dir d;
    write_shard(d / "ok_val_0.bin", ramp(20, 0, 1, 100));
    const std::string val = d / "ok_val_*.bin";
    const auto open = [&](const std::string& train) { return error_of([&] { sgt::shard_dataset(train, val, 100); }); };

    SUBCASE("truncated: the size disagrees with the header count") {
        shard_spec spec = u16();
        spec.drop_bytes = 3;
        write_shard(d / "bad.bin", ramp(50, 0, 1, 100), spec);
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "bad.bin"));
        CHECK(contains(e, "expected 1124 bytes"));
        CHECK(contains(e, "found 1121"));
        CHECK(contains(e, "truncated"));
    }
    SUBCASE("uint32 truncated by a whole token") {
        shard_spec spec = u32();
        spec.drop_bytes = 4;
        write_shard(d / "bad.bin", ramp(10, 0, 1, 100), spec);
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "expected 1064 bytes"));
        CHECK(contains(e, "found 1060"));
    }
    SUBCASE("trailing bytes after the tokens") {
        shard_spec spec = u16();
        spec.extra_bytes = 2;
        write_shard(d / "bad.bin", ramp(50, 0, 1, 100), spec);
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "expected 1124 bytes"));
        CHECK(contains(e, "found 1126"));
        CHECK(contains(e, "trailing"));
    }
    SUBCASE("a uint32 count read as uint16 tokens: the size check catches the wrong dtype") {
        shard_spec spec = u32();
        spec.magic = magic_u16;
        spec.version = version_u16;
        write_shard(d / "bad.bin", ramp(50, 0, 1, 100), spec);
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "expected 1124 bytes"));
        CHECK(contains(e, "found 1224"));
    }
    SUBCASE("shorter than the header") {
        std::ofstream(d / "bad.bin", std::ios::binary) << "not a shard";
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "11 bytes"));
        CHECK(contains(e, "1024-byte header"));
    }
    SUBCASE("wrong magic") {
        shard_spec spec = u16();
        spec.magic = 20240522;  // llm.c's eval-file magic
        write_shard(d / "bad.bin", ramp(50, 0, 1, 100), spec);
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "magic 20240522"));
        CHECK(contains(e, "expected 20240520"));
        CHECK(contains(e, "20240801"));
    }
    SUBCASE("wrong version for uint16") {
        shard_spec spec = u16();
        spec.version = 2;
        write_shard(d / "bad.bin", ramp(50, 0, 1, 100), spec);
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "version 2"));
        CHECK(contains(e, "expected 1"));
    }
    SUBCASE("wrong version for uint32") {
        shard_spec spec = u32();
        spec.version = 1;
        write_shard(d / "bad.bin", ramp(50, 0, 1, 100), spec);
        const std::string e = open(d / "bad.bin");
        CHECK(contains(e, "version 1"));
        CHECK(contains(e, "expected 7"));
    }
    SUBCASE("a count of zero") {
        write_shard(d / "bad.bin", {}, u16());
        CHECK(contains(open(d / "bad.bin"), "token count 0"));
    }
    SUBCASE("glob matching nothing, missing file, missing directory") {
        CHECK(contains(open(d / "nothing_*.bin"), "no file matches '" + (d / "nothing_*.bin") + "'"));
        CHECK(contains(open(d / "missing.bin"), "no file matches '" + (d / "missing.bin") + "'"));
        CHECK(contains(open(d / "nodir/x_*.bin"), "does not exist"));
        CHECK(contains(open(d / "*/x_*.bin"), "wildcard in its directory"));
        CHECK(contains(open(""), "empty"));
    }
    SUBCASE("vocab must be positive") {
        CHECK(contains(error_of([&] { sgt::shard_dataset(val, val, 0); }), "vocab 0"));
    }
}

TEST_CASE("a token at or above vocab: named with shard, index, value and vocab, wherever it is read") {
    temp_dir d;
    auto good = ramp(40, 0, 1, 100);
    auto bad = ramp(40, 0, 1, 100);
    bad[33] = 100;
    write_shard(d / "w_train_0.bin", good);
    write_shard(d / "w_train_1.bin", bad);
    write_shard(d / "w_val_0.bin", bad);
    sgt::shard_dataset ds(d / "w_train_*.bin", d / "w_val_*.bin", 100);  // headers are fine: opens

    const std::string all = error_of([&] { ds.check_tokens(); });
    CHECK(contains(all, "w_train_1.bin"));
    CHECK(contains(all, "token 33 is 100"));
    CHECK(contains(all, "vocabulary size 100"));

    sgt::rng r(0);
    ds.train_batch(r, 1, 30);  // shard 0 is fine
    const sgt::shard_position before = ds.position();
    const std::string e = error_of([&] { ds.train_batch(r, 1, 30); });  // loads shard 1
    CHECK(contains(e, "w_train_1.bin"));
    CHECK(contains(e, "token 33 is 100"));
    CHECK(ds.position() == before);
    CHECK(batch_is(ds.train_batch(r, 1, 5), good, 30));  // still serving shard 0 where it was

    CHECK(ds.val_batches(1, 10, 3).size() == 3);  // reads tokens [0, 31): the bad one is not among them
    const std::string ev = error_of([&] { ds.val_batches(1, 12, 3); });  // reads [0, 37)
    CHECK(contains(ev, "w_val_0.bin"));
    CHECK(contains(ev, "token 33 is 100"));

    write_shard(d / "w_train_1.bin", good);
    write_shard(d / "w_val_0.bin", good);
    sgt::shard_dataset fixed(d / "w_train_*.bin", d / "w_val_*.bin", 100);
    CHECK(error_of([&] { fixed.check_tokens(); }).empty());
}
