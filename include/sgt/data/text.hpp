// sgt/data/text.hpp: byte-level text from any file or string (V = 256: a token is a byte value).
//
// The corpus is split contiguously, as nanoGPT's shakespeare_char does: train = the first floor(n * f) bytes
// (f = 0.9 by default), val = the rest. On tinyshakespeare.txt (1,115,394 bytes) that gives train 1,003,854 and
// val 111,540, the published counts. Training batches are windows of T + 1 bytes at uniform random offsets in
// the train part (inputs = window[0, T), targets = window[1, T]). Validation batches walk the val part from its
// start with stride T, as llm.c's loader does: the input windows do not overlap, and every val byte after the
// first is a target exactly once, so a full pass scores the whole split. Models sgt::dataset.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/data/dataset.hpp"

namespace sgt {

namespace detail {

// 1115394 -> "1,115,394", for log lines.
inline std::string group_thousands(std::uint64_t n) {
    std::string digits = std::to_string(n);
    std::string out;
    const std::size_t len = digits.size();
    for (std::size_t i = 0; i < len; ++i) {
        if (i > 0 && (len - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

}  // namespace detail

// The whole file as bytes. Throws sgt::error when the path does not exist, is not a regular file, cannot be
// opened, or cannot be read to the end. An empty file gives an empty vector.
inline std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    require(std::filesystem::exists(status), "cannot read '{}': no such file, expected a readable file",
            path.string());
    require(!std::filesystem::is_directory(status), "cannot read '{}': it is a directory, expected a file",
            path.string());
    std::ifstream in(path, std::ios::binary);
    require(in.is_open(), "cannot read '{}': the file exists but could not be opened (permissions?)",
            path.string());
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    require(size >= 0, "cannot read '{}': its size could not be determined, expected a regular file",
            path.string());
    in.seekg(0, std::ios::beg);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    if (size > 0) in.read(reinterpret_cast<char*>(bytes.data()), size);
    const std::streamoff got = size > 0 ? in.gcount() : 0;
    require(got == size, "cannot read '{}': read {} of {} bytes", path.string(), got, size);
    return bytes;
}

class text_dataset {
public:
    static constexpr double default_train_fraction = 0.9;

    // The bytes of a file; name() is the path. train_fraction in (0, 1).
    explicit text_dataset(const std::filesystem::path& path, double train_fraction = default_train_fraction)
        : text_dataset(path.string(), read_bytes(path), train_fraction, "the file") {}

    // In-memory bytes (an embedded corpus); `name` stands for the path in descriptions and errors.
    text_dataset(std::string name, std::vector<std::uint8_t> bytes, double train_fraction = default_train_fraction)
        : text_dataset(std::move(name), std::move(bytes), train_fraction, "the text") {}

    static text_dataset from_string(std::string name, std::string_view text,
                                    double train_fraction = default_train_fraction) {
        return text_dataset(std::move(name), std::vector<std::uint8_t>(text.begin(), text.end()), train_fraction);
    }

    int vocab() const { return 256; }
    const std::string& name() const { return name_; }
    double train_fraction() const { return train_fraction_; }
    std::size_t size() const { return bytes_.size(); }
    std::size_t train_size() const { return train_size_; }
    std::size_t val_size() const { return bytes_.size() - train_size_; }
    std::span<const std::uint8_t> bytes() const { return bytes_; }
    std::span<const std::uint8_t> train_bytes() const { return std::span(bytes_).first(train_size_); }
    std::span<const std::uint8_t> val_bytes() const { return std::span(bytes_).subspan(train_size_); }

    // "text 'x.txt': 1,115,394 bytes, train 1,003,854 / val 111,540"
    std::string describe() const {
        return fmt::format("text '{}': {} bytes, train {} / val {}", name_, detail::group_thousands(size()),
                           detail::group_thousands(train_size()), detail::group_thousands(val_size()));
    }

    // Throws sgt::error unless T > 0 and both splits hold at least one sequence (T + 1 bytes).
    void check(int T) const {
        require(T > 0, "text '{}': T = {}, expected a positive sequence length", name_, T);
        const std::size_t need = static_cast<std::size_t>(T) + 1;
        require(train_size() >= need,
                "text '{}': the train split has {} bytes, expected at least T+1 = {} for one sequence", name_,
                train_size(), need);
        require(val_size() >= need,
                "text '{}': the val split has {} bytes, expected at least T+1 = {} for one sequence", name_,
                val_size(), need);
    }

    // B windows of T + 1 bytes at uniform random offsets in the train split. Const: the state is in `r`.
    batch train_batch(rng& r, int B, int T) const {
        require(B > 0, "text '{}': B = {}, expected a positive batch size", name_, B);
        check(T);
        batch out = make_batch(B, T);
        const std::uint64_t starts = train_size() - static_cast<std::size_t>(T);  // offsets 0 .. train - T - 1
        for (int b = 0; b < B; ++b) fill_row(out, b, static_cast<std::size_t>(r.below(starts)));
        return out;
    }

    // Consecutive windows from the start of the val split, stride T (window w covers val bytes [wT, wT + T]):
    // at most max_batches batches of B windows; a last partial batch is dropped. When not even B windows fit,
    // one batch holds all the windows that fit (its B is smaller). Deterministic.
    std::vector<batch> val_batches(int B, int T, int max_batches) const {
        require(B > 0, "text '{}': B = {}, expected a positive batch size", name_, B);
        require(max_batches > 0, "text '{}': max_batches = {}, expected a positive count", name_, max_batches);
        check(T);
        const std::size_t windows = (val_size() - 1) / static_cast<std::size_t>(T);
        const std::size_t full = windows / static_cast<std::size_t>(B);
        const int rows = full > 0 ? B : static_cast<int>(windows);
        const std::size_t count = full > 0 ? std::min<std::size_t>(full, static_cast<std::size_t>(max_batches)) : 1;
        std::vector<batch> out;
        out.reserve(count);
        std::size_t start = train_size_;
        for (std::size_t i = 0; i < count; ++i) {
            batch bt = make_batch(rows, T);
            for (int b = 0; b < rows; ++b, start += static_cast<std::size_t>(T)) fill_row(bt, b, start);
            out.push_back(std::move(bt));
        }
        return out;
    }

private:
    text_dataset(std::string name, std::vector<std::uint8_t> bytes, double train_fraction, const char* what)
        : name_(std::move(name)), bytes_(std::move(bytes)), train_fraction_(train_fraction) {
        require(train_fraction > 0.0 && train_fraction < 1.0,
                "text '{}': train fraction {}, expected a value in (0, 1)", name_, train_fraction);
        require(!bytes_.empty(), "text '{}': {} is empty (0 bytes), expected at least one sequence of text",
                name_, what);
        // floor(n * f) as Python's int(n * 0.9): 1,115,394 -> 1,003,854.
        train_size_ = static_cast<std::size_t>(static_cast<double>(bytes_.size()) * train_fraction);
    }

    static batch make_batch(int B, int T) {
        const std::size_t n = static_cast<std::size_t>(B) * static_cast<std::size_t>(T);
        return batch{B, T, std::vector<std::int32_t>(n), std::vector<std::int32_t>(n)};
    }

    // Row b of `out` from the T + 1 bytes at `offset` of the whole corpus.
    void fill_row(batch& out, int b, std::size_t offset) const {
        const std::size_t T = static_cast<std::size_t>(out.T);
        const std::uint8_t* src = bytes_.data() + offset;
        std::int32_t* in = out.inputs.data() + static_cast<std::size_t>(b) * T;
        std::int32_t* tg = out.targets.data() + static_cast<std::size_t>(b) * T;
        for (std::size_t t = 0; t < T; ++t) {
            in[t] = src[t];
            tg[t] = src[t + 1];
        }
    }

    std::string name_;                 // the path, or the name of an in-memory corpus
    std::vector<std::uint8_t> bytes_;  // (n) the whole corpus
    double train_fraction_ = default_train_fraction;
    std::size_t train_size_ = 0;  // floor(n * train_fraction)
};

static_assert(dataset<text_dataset>);

}  // namespace sgt
