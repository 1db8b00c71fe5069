// fuzz/harness.hpp: what the fuzz targets run on one input, shared with tests/test_fuzz_regressions.cpp.
//
// The readers' contract is that any input either loads or throws sgt::error, and nothing else: no crash, no
// sanitizer report, no other exception type. Each run_* function feeds one input through every public code path
// that consumes it, catches sgt::error only, and checks what the library returned against invariants it
// promises (sizes, offsets, a write/read round trip, determinism). A broken invariant throws
// sgt::fuzz::invariant_violation, which is not an sgt::error, so it escapes like any other bug: libFuzzer reports
// it as a crash (through std::terminate) and the regression test's CHECK_NOTHROW fails.
#pragma once

#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/data/shards.hpp"
#include "sgt/io/safetensors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sgt::fuzz {

// A promise of the library that the input broke: a bug, never a user error.
class invariant_violation : public std::logic_error {
public:
    explicit invariant_violation(const std::string& what) : std::logic_error("fuzz invariant: " + what) {}
};

template <class... Args>
void expect(bool ok, fmt::format_string<Args...> f, Args&&... args) {
    if (!ok) throw invariant_violation(fmt::format(f, std::forward<Args>(args)...));
}

// ---------------------------------------------------------------------------------------------------------
// safetensors

// What run_safetensors got through.
struct safetensors_result {
    bool parsed = false;          // from_bytes accepted the input
    std::size_t tensors = 0;      // tensors in it
    std::size_t reads_ok = 0;     // typed reads that succeeded
    std::size_t reads_failed = 0; // typed reads that threw sgt::error (a value out of range, float to integer)
    bool round_trip = false;      // the writer re-emitted it and the reader read back the same tensors
};

namespace detail {

// Runs f; an sgt::error counts as a refusal (false), anything else escapes.
template <class F>
bool accepts(F&& f) {
    try {
        f();
        return true;
    } catch (const sgt::error&) {
        return false;
    }
}

inline bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace detail

// Parses `data` as a safetensors file; when it parses, checks the tensor table, reads every tensor as float and
// double (and as int64 / int32 where the dtype is an integer one), exercises the lookup error path, and writes
// the file back with safetensors_writer and re-reads it.
inline safetensors_result run_safetensors(std::span<const std::byte> data) {
    namespace st = sgt::io;
    safetensors_result r;
    std::optional<st::safetensors> file;
    try {
        file.emplace(st::safetensors::from_bytes(data));
    } catch (const sgt::error&) {
        return r;
    }
    r.parsed = true;
    r.tensors = file->size();

    // The header length field is the first 8 bytes; the tensors tile what follows the header exactly.
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | std::to_integer<std::uint64_t>(data[i]);
    const std::uint64_t buffer_size = data.size() - 8 - header_len;
    expect(file->names().size() == file->size(), "names() has {} entries, size() is {}", file->names().size(),
           file->size());
    std::uint64_t covered = 0;
    for (const st::tensor_view& t : file->tensors()) {
        expect(file->contains(t.name), "contains('{}') is false for a tensor in tensors()", t.name);
        expect(&file->at(t.name) == &t, "at('{}') is not the tensor of that name", t.name);
        const std::uint64_t elem = st::dtype_size(t.type);
        expect(t.numel() >= 0 && static_cast<std::uint64_t>(t.numel()) * elem == t.bytes.size(),
               "tensor '{}': {} elements of {} bytes, but {} bytes", t.name, t.numel(), elem, t.bytes.size());
        covered += t.bytes.size();
    }
    expect(covered == buffer_size, "the tensors cover {} bytes of a {}-byte data buffer", covered, buffer_size);

    for (const st::tensor_view& t : file->tensors()) {
        const bool integral = !st::is_floating(t.type);
        auto count = [&](bool ok) { ++(ok ? r.reads_ok : r.reads_failed); };
        count(detail::accepts([&] {
            const auto v = st::read_as<float>(t);
            expect(v.size() == static_cast<std::size_t>(t.numel()), "read_as<float>('{}') gave {} of {} values",
                   t.name, v.size(), t.numel());
        }));
        count(detail::accepts([&] { (void)file->read_as<double>(t.name, t.shape); }));
        if (integral) {
            count(detail::accepts([&] { (void)file->read_as<std::int64_t>(t.name); }));
            count(detail::accepts([&] {
                std::vector<std::int32_t> out(static_cast<std::size_t>(t.numel()));
                st::read_into(t, std::span<std::int32_t>(out));
            }));
        }
    }
    if (constexpr std::string_view absent = "\x01sgt-fuzz: no such tensor"; !file->contains(absent))
        expect(!detail::accepts([&] { (void)file->at(absent); }), "at() of an absent name did not throw");

    // What the reader accepted, the writer must be able to write, and the reader read back the same.
    std::vector<std::byte> again_bytes;
    try {
        st::safetensors_writer w;
        w.set_checksums(file->metadata().contains(std::string(st::checksum_key)));  // as the input had them
        for (const auto& [key, value] : file->metadata()) w.set_metadata(key, value);
        for (const st::tensor_view& t : file->tensors()) w.add(t.name, t.type, t.shape, t.bytes);
        again_bytes = w.to_bytes();
    } catch (const sgt::error& e) {
        throw invariant_violation(fmt::format("the writer refused what the reader accepted: {}", e.what()));
    }
    std::optional<st::safetensors> again;
    try {
        again.emplace(st::safetensors::from_bytes(std::span<const std::byte>(again_bytes)));
    } catch (const sgt::error& e) {
        throw invariant_violation(fmt::format("the reader refused what the writer wrote: {}", e.what()));
    }
    expect(again->names() == file->names(), "the round trip changed the tensor names or their order");
    expect(again->metadata() == file->metadata(), "the round trip changed the metadata");
    for (const st::tensor_view& t : file->tensors()) {
        const st::tensor_view& u = again->at(t.name);
        expect(u.type == t.type && u.shape == t.shape && detail::same_bytes(u.bytes, t.bytes),
               "the round trip changed tensor '{}'", t.name);
    }
    r.round_trip = true;
    return r;
}

// ---------------------------------------------------------------------------------------------------------
// llm.c token shards

// What run_shards got through.
struct shards_result {
    bool info = false;         // read_shard_info accepted the file
    bool opened = false;       // shard_dataset opened it as its train and val set
    bool tokens_ok = false;    // check_tokens passed
    int train_batches = 0;     // train_batch calls that succeeded
    int train_failed = 0;      // train_batch calls that threw sgt::error
    bool val_ok = false;       // every val_batches call succeeded
    int vocab = 0;             // the vocabulary size used
};

// The (B, T) shapes run_shards tries besides the one the input picks.
inline constexpr std::array<std::pair<int, int>, 2> shard_fixed_dims{{{1, 1}, {2, 4}}};
// The vocabulary sizes an input can pick (header byte 14): tiny, GPT-2's, Llama 3's, one token.
inline constexpr std::array<int, 4> shard_vocabs{512, 50257, 128256, 1};

namespace detail {

inline void check_batch(const sgt::batch& b, int B, int T, int vocab, const char* what) {
    const std::size_t n = static_cast<std::size_t>(B) * static_cast<std::size_t>(T);
    expect(b.B == B && b.T == T, "{}: batch is ({}, {}), asked for ({}, {})", what, b.B, b.T, B, T);
    expect(b.inputs.size() == n && b.targets.size() == n, "{}: {} inputs and {} targets, expected {}", what,
           b.inputs.size(), b.targets.size(), n);
    for (std::size_t i = 0; i < n; ++i) {
        expect(b.inputs[i] >= 0 && b.inputs[i] < vocab && b.targets[i] >= 0 && b.targets[i] < vocab,
               "{}: token {} / target {} at {} is outside the vocabulary of {}", what, b.inputs[i], b.targets[i], i,
               vocab);
        if (i + 1 < n)
            expect(b.targets[i] == b.inputs[i + 1], "{}: target {} is {}, but the next input is {}", what, i,
                   b.targets[i], b.inputs[i + 1]);
    }
}

}  // namespace detail

// Writes `data` as `dir`/train_0.bin (dir is created; it should be private to this process) and runs it through
// read_shard_info, then shard_dataset with it as both the train and the val set: check_tokens, three train
// batches per (B, T) (checking the position/seek round trip) and val_batches. The input picks, through bytes of
// the header llm.c leaves unused (header[3]): byte 12 the batch size B = 1 + b % 4, byte 13 the sequence length
// T = 1 + b % 8, byte 14 the vocabulary (shard_vocabs[b % 4]); zero bytes give (1, 1) and vocab 512. When bit 0
// of byte 15 is set, the file is first made consistent: cut to a whole number of tokens, and the count in
// header[2] set to match, so that mutations which change the length still reach the token and batch code.
inline shards_result run_shards(std::span<const std::byte> data, const std::filesystem::path& dir) {
    shards_result r;
    auto header_byte = [&](std::size_t i) { return i < data.size() ? std::to_integer<int>(data[i]) : 0; };
    std::vector<std::byte> bytes(data.begin(), data.end());
    if (bytes.size() >= shard_header_bytes && (header_byte(15) & 1)) {
        std::uint32_t magic = 0;
        for (int k = 3; k >= 0; --k) magic = magic << 8 | static_cast<std::uint32_t>(header_byte(k));
        const std::size_t size = magic == static_cast<std::uint32_t>(shard_magic_uint32) ? 4 : 2;
        const std::size_t count = std::min<std::size_t>((bytes.size() - shard_header_bytes) / size, 0x7FFFFFFF);
        bytes.resize(shard_header_bytes + count * size);
        for (int i = 0; i < 4; ++i) bytes[8 + i] = static_cast<std::byte>(count >> (8 * i) & 0xFF);
    }
    std::filesystem::create_directories(dir);
    const std::filesystem::path file = dir / "train_0.bin";
    {
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        if (!bytes.empty())
            out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        out.close();
        if (!out) throw std::runtime_error("fuzz harness: cannot write " + file.string());
    }
    const int B = 1 + header_byte(12) % 4, T = 1 + header_byte(13) % 8;
    const int vocab = shard_vocabs[static_cast<std::size_t>(header_byte(14) % 4)];
    r.vocab = vocab;

    shard_info info;
    try {
        info = read_shard_info(file);
    } catch (const sgt::error&) {
        return r;
    }
    r.info = true;
    expect(shard_header_bytes + info.tokens * token_size(info.dtype) == bytes.size(),
           "read_shard_info: {} tokens of {} bytes, but the file has {} bytes", info.tokens, token_size(info.dtype),
           bytes.size());

    const std::string pattern = (dir / "train_*.bin").string();
    std::optional<shard_dataset> ds;
    try {
        ds.emplace(pattern, pattern, vocab);
    } catch (const sgt::error& e) {
        throw invariant_violation(fmt::format("shard_dataset refused a shard read_shard_info accepted: {}", e.what()));
    }
    r.opened = true;
    expect(ds->train_tokens() == info.tokens && ds->val_tokens() == info.tokens,
           "shard_dataset counts {} train / {} val tokens, the header says {}", ds->train_tokens(), ds->val_tokens(),
           info.tokens);
    (void)ds->describe();
    r.tokens_ok = detail::accepts([&] { ds->check_tokens(); });

    std::vector<std::pair<int, int>> dims(shard_fixed_dims.begin(), shard_fixed_dims.end());
    dims.emplace_back(B, T);
    sgt::rng g(0);
    bool val_ok = true;
    for (const auto& [b, t] : dims) {
        ds->seek({});
        for (int k = 0; k < 3; ++k) {
            const shard_position before = ds->position();
            try {
                const sgt::batch first = ds->train_batch(g, b, t);
                detail::check_batch(first, b, t, vocab, "train_batch");
                ds->seek(before);
                const sgt::batch second = ds->train_batch(g, b, t);
                expect(first.inputs == second.inputs && first.targets == second.targets,
                       "train_batch after seek back to ({}, {}) gave a different batch", before.shard, before.offset);
                ++r.train_batches;
            } catch (const sgt::error&) {
                expect(ds->position() == before, "a train_batch that threw moved the position");
                ++r.train_failed;
            }
        }
        try {
            const auto val = ds->val_batches(b, t, 2);
            expect(!val.empty() && val.size() <= 2, "val_batches gave {} batches, asked for at most 2", val.size());
            for (const auto& v : val) {
                expect(v.T == t && v.B >= 1 && v.B <= b, "val_batches gave a ({}, {}) batch for B = {}, T = {}", v.B,
                       v.T, b, t);
                detail::check_batch(v, v.B, t, vocab, "val_batches");
            }
        } catch (const sgt::error&) {
            val_ok = false;
        }
    }
    r.val_ok = val_ok;
    return r;
}

}  // namespace sgt::fuzz
