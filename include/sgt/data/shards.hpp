// sgt/data/shards.hpp: pre-tokenized token shards in llm.c's .bin format, as a resumable sgt::dataset.
//
// A shard is a header of 256 little-endian int32 followed by the tokens, little-endian, as llm.c's
// dev/data/data_common.py (write_datafile) writes them:
//   header[0] magic    20240520: uint16 tokens (the "gpt-2" layout, version 1)
//                      20240801: uint32 tokens (the "llama-3" layout, version 7)
//   header[1] version  1 for 20240520, 7 for 20240801 (the only pairs llm.c writes; others are refused)
//   header[2] count    number of tokens after the 1024-byte header (positive)
//   header[3..255]     unused (zero)
// The file size must be exactly 1024 + count * token_size bytes, as llm.c's loader checks.
//
// shard_dataset opens the shards matched by a train and a val glob pattern (sorted by name, as glob(3)) and
// checks every header and file size at once. Tokens are checked against the model's vocabulary as they are read
// (a train shard as a whole when it is loaded; the val prefix a val_batches call reads); check_tokens() checks
// every token of every shard up front. One train shard is resident at a time.
//
// Training batches follow llm.c's DataLoader without shuffling: a batch is the B*T + 1 consecutive tokens at the
// stream position (inputs = tokens[0, BT), targets = tokens[1, BT]), row b holds tokens [bT, bT + T]; the
// position then advances by B*T. A batch never spans two shards: when the rest of a shard holds fewer than
// B*T + 1 tokens, the stream moves to the start of the next shard, and after the last one back to the first.
// The position (shard, offset) is the whole state: position() / seek() save and restore it in a checkpoint.
// Models sgt::dataset.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/data/dataset.hpp"
#include "sgt/data/text.hpp"

namespace sgt {

inline constexpr std::int32_t shard_magic_uint16 = 20240520;    // llm.c "gpt-2": uint16 tokens
inline constexpr std::int32_t shard_version_uint16 = 1;
inline constexpr std::int32_t shard_magic_uint32 = 20240801;    // llm.c "llama-3": uint32 tokens
inline constexpr std::int32_t shard_version_uint32 = 7;
inline constexpr std::size_t shard_header_ints = 256;
inline constexpr std::size_t shard_header_bytes = shard_header_ints * 4;  // 1024

enum class token_dtype { uint16, uint32 };

inline std::size_t token_size(token_dtype d) { return d == token_dtype::uint16 ? 2 : 4; }
inline const char* to_string(token_dtype d) { return d == token_dtype::uint16 ? "uint16" : "uint32"; }

// One shard as its header describes it (checked against the file size).
struct shard_info {
    std::filesystem::path path;
    token_dtype dtype = token_dtype::uint16;
    std::uint64_t tokens = 0;  // header[2]
};

// Where the training stream is: the next batch starts at token `offset` of train shard `shard` (or, when fewer
// than B*T + 1 tokens are left there, at the start of the next shard). Two integers for a checkpoint.
struct shard_position {
    std::uint64_t shard = 0;
    std::uint64_t offset = 0;
    friend bool operator==(const shard_position&, const shard_position&) = default;
};

namespace detail {

// fnmatch-style match of a file name against a pattern with '*' (any run, possibly empty) and '?' (one char).
inline bool wildcard_match(std::string_view pattern, std::string_view name) {
    std::size_t p = 0, n = 0;
    std::size_t star = std::string_view::npos, star_n = 0;
    while (n < name.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
            ++p;
            ++n;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            star_n = n;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            n = ++star_n;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}

inline bool has_wildcard(std::string_view s) { return s.find_first_of("*?") != std::string_view::npos; }

// The regular files matched by `pattern`, sorted by name. Wildcards ('*', '?') are allowed in the file-name part
// only; as in a shell, a wildcard does not match a leading '.'. Throws sgt::error when nothing matches.
inline std::vector<std::filesystem::path> glob_files(const std::string& pattern, std::string_view what) {
    require(!pattern.empty(), "shards ({}): the file pattern is empty, expected e.g. 'data/x_{}_*.bin'", what,
            what);
    const std::filesystem::path p(pattern);
    const std::filesystem::path dir = p.parent_path();
    const std::string name = p.filename().string();
    require(!has_wildcard(dir.string()),
            "shards ({}): pattern '{}' has a wildcard in its directory '{}', expected wildcards in the file name "
            "only",
            what, pattern, dir.string());
    require(!name.empty(), "shards ({}): pattern '{}' names a directory, expected a file name pattern", what,
            pattern);
    const std::filesystem::path list_dir = dir.empty() ? std::filesystem::path(".") : dir;
    std::error_code ec;
    require(std::filesystem::is_directory(list_dir, ec),
            "shards ({}): no file matches '{}': the directory '{}' does not exist", what, pattern,
            list_dir.string());
    std::vector<std::filesystem::path> out;
    for (std::filesystem::directory_iterator it(list_dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string file = it->path().filename().string();
        if (file.starts_with('.') && !name.starts_with('.')) continue;
        if (!wildcard_match(name, file)) continue;
        std::error_code fec;
        if (!it->is_regular_file(fec)) continue;
        out.push_back(dir / file);
    }
    require(!ec, "shards ({}): cannot list the directory '{}' for pattern '{}': {}", what, list_dir.string(),
            pattern, ec.message());
    require(!out.empty(), "shards ({}): no file matches '{}', expected at least one shard", what, pattern);
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.filename() < b.filename(); });
    return out;
}

inline std::uint32_t load_le32(const std::uint8_t* b) {
    return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
           static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}

inline std::uint32_t load_token(const std::uint8_t* base, std::size_t i, token_dtype d) {
    if (d == token_dtype::uint16) {
        const std::uint8_t* b = base + 2 * i;
        return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8;
    }
    return load_le32(base + 4 * i);
}

inline std::ifstream open_shard(const std::filesystem::path& path) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    require(std::filesystem::exists(status), "shard '{}': no such file, expected a token shard", path.string());
    require(std::filesystem::is_regular_file(status), "shard '{}': not a regular file, expected a token shard",
            path.string());
    std::ifstream in(path, std::ios::binary);
    require(in.is_open(), "shard '{}': the file exists but could not be opened (permissions?)", path.string());
    return in;
}

// The raw bytes of tokens [first, first + count) of a shard, every token checked to be below `vocab`.
inline std::vector<std::uint8_t> read_tokens(const shard_info& s, std::uint64_t first, std::uint64_t count,
                                             int vocab) {
    require(first + count <= s.tokens, "shard '{}': asked for tokens [{}, {}), expected at most {} tokens",
            s.path.string(), first, first + count, s.tokens);
    const std::size_t size = token_size(s.dtype);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(count) * size);
    std::ifstream in = open_shard(s.path);
    in.seekg(static_cast<std::streamoff>(shard_header_bytes + first * size), std::ios::beg);
    if (!bytes.empty()) in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    const std::streamsize got = bytes.empty() ? 0 : in.gcount();
    require(static_cast<std::size_t>(got) == bytes.size(),
            "shard '{}': read {} of {} bytes at token {} (did the file change since it was opened?)",
            s.path.string(), got, bytes.size(), first);
    for (std::size_t i = 0; i < count; ++i) {
        const std::uint32_t t = load_token(bytes.data(), i, s.dtype);
        require(t < static_cast<std::uint32_t>(vocab),
                "shard '{}': token {} is {}, expected a token id below the vocabulary size {}", s.path.string(),
                first + i, t, vocab);
    }
    return bytes;
}

}  // namespace detail

// Reads and checks a shard's header against its file size. Throws sgt::error when the file is missing, shorter
// than the header, has an unknown magic or version, a non-positive count, or a size that disagrees with the count.
inline shard_info read_shard_info(const std::filesystem::path& path) {
    std::ifstream in = detail::open_shard(path);
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    require(size >= 0, "shard '{}': its size could not be determined, expected a regular file", path.string());
    require(static_cast<std::uint64_t>(size) >= shard_header_bytes,
            "shard '{}': {} bytes, shorter than the {}-byte header (256 int32), expected a token shard",
            path.string(), size, shard_header_bytes);
    in.seekg(0, std::ios::beg);
    std::uint8_t header[shard_header_bytes];
    in.read(reinterpret_cast<char*>(header), static_cast<std::streamsize>(shard_header_bytes));
    require(static_cast<std::size_t>(in.gcount()) == shard_header_bytes, "shard '{}': could not read its header",
            path.string());
    const auto magic = static_cast<std::int32_t>(detail::load_le32(header));
    const auto version = static_cast<std::int32_t>(detail::load_le32(header + 4));
    const auto count = static_cast<std::int32_t>(detail::load_le32(header + 8));
    shard_info info{path, token_dtype::uint16, 0};
    if (magic == shard_magic_uint16) {
        info.dtype = token_dtype::uint16;
        require(version == shard_version_uint16,
                "shard '{}': version {}, expected {} for magic {} (uint16 tokens)", path.string(), version,
                shard_version_uint16, magic);
    } else if (magic == shard_magic_uint32) {
        info.dtype = token_dtype::uint32;
        require(version == shard_version_uint32,
                "shard '{}': version {}, expected {} for magic {} (uint32 tokens)", path.string(), version,
                shard_version_uint32, magic);
    } else {
        fail("shard '{}': magic {}, expected {} (uint16 tokens) or {} (uint32 tokens): not an llm.c token shard",
             path.string(), magic, shard_magic_uint16, shard_magic_uint32);
    }
    require(count > 0, "shard '{}': header token count {}, expected a positive count", path.string(), count);
    info.tokens = static_cast<std::uint64_t>(count);
    const std::uint64_t expected = shard_header_bytes + info.tokens * token_size(info.dtype);
    const auto found = static_cast<std::uint64_t>(size);
    require(found == expected, "shard '{}': expected {} bytes (1024 + {} {} tokens), found {}: {}", path.string(),
            expected, info.tokens, to_string(info.dtype), found,
            found < expected ? "truncated" : "trailing bytes after the tokens");
    return info;
}

class shard_dataset {
public:
    // The shards matched by each pattern ('*' and '?' in the file-name part, e.g. "data/fineweb_train_*.bin"),
    // for a model with `vocab` tokens. Every header and file size is checked here.
    shard_dataset(std::string train_pattern, std::string val_pattern, int vocab)
        : train_pattern_(std::move(train_pattern)), val_pattern_(std::move(val_pattern)), vocab_(vocab) {
        require(vocab > 0, "shards: vocab {}, expected a positive vocabulary size", vocab);
        train_ = open_all(train_pattern_, "train");
        val_ = open_all(val_pattern_, "val");
        for (const auto& s : train_) max_train_tokens_ = std::max(max_train_tokens_, s.tokens);
    }

    int vocab() const { return vocab_; }
    const std::string& train_pattern() const { return train_pattern_; }
    const std::string& val_pattern() const { return val_pattern_; }
    const std::vector<shard_info>& train_shards() const { return train_; }
    const std::vector<shard_info>& val_shards() const { return val_; }
    std::uint64_t train_tokens() const { return total(train_); }
    std::uint64_t val_tokens() const { return total(val_); }

    // "shards train 'd/x_train_*.bin': 2 shards, 1,003,854 tokens (uint16); val 'd/x_val_*.bin': 1 shard,
    //  111,540 tokens (uint16); vocab 256"
    std::string describe() const {
        return fmt::format("shards train '{}': {}; val '{}': {}; vocab {}", train_pattern_, summary(train_),
                           val_pattern_, summary(val_), vocab_);
    }

    // Reads every token of every shard and checks it is below vocab(), in chunks (memory stays small). Throws
    // sgt::error naming the shard, the token index, its value and the vocabulary size.
    void check_tokens() const {
        constexpr std::uint64_t chunk = std::uint64_t{1} << 22;
        for (const auto* list : {&train_, &val_})
            for (const auto& s : *list)
                for (std::uint64_t first = 0; first < s.tokens; first += chunk)
                    detail::read_tokens(s, first, std::min(chunk, s.tokens - first), vocab_);
    }

    // The next training batch: the B*T + 1 tokens at position(), then position() advances by B*T (see the top of
    // this file). The stream is sequential and deterministic: `r` is not used (it is here for sgt::dataset), and
    // the position alone says what comes next. Throws sgt::error unless B, T > 0 and some train shard holds
    // B*T + 1 tokens, or when a token of the shard being loaded is not below vocab() (the position is unchanged).
    batch train_batch(rng&, int B, int T) {
        check_dims(B, T);
        const std::uint64_t step = static_cast<std::uint64_t>(B) * static_cast<std::uint64_t>(T);
        require(step + 1 <= max_train_tokens_,
                "shards train '{}': B*T+1 = {} tokens per batch, expected at most {} (the largest train shard)",
                train_pattern_, step + 1, max_train_tokens_);
        shard_position at = pos_;
        while (at.offset + step + 1 > train_[at.shard].tokens) at = {(at.shard + 1) % train_.size(), 0};
        load(at.shard);
        batch out = make_batch(B, T);
        fill_rows(out, resident_bytes_.data(), train_[at.shard].dtype, at.offset);
        pos_ = {at.shard, at.offset + step};
        return out;
    }

    // Where the next training batch starts (see shard_position). Save it with a checkpoint.
    shard_position position() const { return pos_; }

    // Restores a saved position. Throws sgt::error, leaving the dataset unchanged, unless p.shard names a train
    // shard and p.offset is at most its token count. The position means the same data only over the same shard
    // files (the same pattern matching the same files), as with llm.c's resume.
    void seek(shard_position p) {
        require(p.shard < train_.size(), "shards train '{}': seek to shard {}, expected a shard index below {}",
                train_pattern_, p.shard, train_.size());
        require(p.offset <= train_[p.shard].tokens,
                "shards train '{}': seek to offset {} of shard {} ('{}'), expected at most its {} tokens",
                train_pattern_, p.offset, p.shard, train_[p.shard].path.string(), train_[p.shard].tokens);
        pos_ = p;
    }

    // At most max_batches batches from the start of the val shards, as llm.c's val loader reads them: in each
    // shard, batches of B*T + 1 tokens at offsets 0, BT, 2BT, ... (the tail that does not fill a batch is
    // skipped), then the next shard; so window w of a shard covers tokens [wT, wT + T]. When no val shard holds
    // one full batch, one batch holds all the windows of T + 1 tokens that fit in the first val shard that has
    // any (its B is smaller). Deterministic; reads only the tokens it uses.
    std::vector<batch> val_batches(int B, int T, int max_batches) const {
        check_dims(B, T);
        require(max_batches > 0, "shards val '{}': max_batches = {}, expected a positive count", val_pattern_,
                max_batches);
        const std::uint64_t step = static_cast<std::uint64_t>(B) * static_cast<std::uint64_t>(T);
        std::vector<batch> out;
        for (const auto& s : val_) {
            const std::uint64_t fit = (s.tokens - 1) / step;
            const std::uint64_t take = std::min<std::uint64_t>(fit, static_cast<std::uint64_t>(max_batches) -
                                                                        out.size());
            if (take == 0) continue;
            const auto bytes = detail::read_tokens(s, 0, take * step + 1, vocab_);
            for (std::uint64_t k = 0; k < take; ++k) {
                batch bt = make_batch(B, T);
                fill_rows(bt, bytes.data(), s.dtype, k * step);
                out.push_back(std::move(bt));
            }
            if (out.size() == static_cast<std::size_t>(max_batches)) break;
        }
        if (!out.empty()) return out;
        const std::uint64_t t = static_cast<std::uint64_t>(T);
        for (const auto& s : val_) {
            const std::uint64_t rows = (s.tokens - 1) / t;
            if (rows == 0) continue;
            const auto bytes = detail::read_tokens(s, 0, rows * t + 1, vocab_);
            batch bt = make_batch(static_cast<int>(rows), T);
            fill_rows(bt, bytes.data(), s.dtype, 0);
            out.push_back(std::move(bt));
            return out;
        }
        fail("shards val '{}': no val shard holds T+1 = {} tokens for one sequence, expected at least one",
             val_pattern_, t + 1);
    }

private:
    static std::vector<shard_info> open_all(const std::string& pattern, std::string_view what) {
        std::vector<shard_info> out;
        for (const auto& path : detail::glob_files(pattern, what)) out.push_back(read_shard_info(path));
        return out;
    }

    static std::uint64_t total(const std::vector<shard_info>& list) {
        std::uint64_t n = 0;
        for (const auto& s : list) n += s.tokens;
        return n;
    }

    static std::string summary(const std::vector<shard_info>& list) {
        const bool has16 = std::any_of(list.begin(), list.end(), [](const auto& s) {
            return s.dtype == token_dtype::uint16;
        });
        const bool has32 = std::any_of(list.begin(), list.end(), [](const auto& s) {
            return s.dtype == token_dtype::uint32;
        });
        const char* dtypes = has16 && has32 ? "uint16 and uint32" : has16 ? "uint16" : "uint32";
        return fmt::format("{} shard{}, {} tokens ({})", list.size(), list.size() == 1 ? "" : "s",
                           detail::group_thousands(total(list)), dtypes);
    }

    void check_dims(int B, int T) const {
        require(B > 0, "shards: B = {}, expected a positive batch size", B);
        require(T > 0, "shards: T = {}, expected a positive sequence length", T);
    }

    static batch make_batch(int B, int T) {
        const std::size_t n = static_cast<std::size_t>(B) * static_cast<std::size_t>(T);
        return batch{B, T, std::vector<std::int32_t>(n), std::vector<std::int32_t>(n)};
    }

    // inputs[i] = token[first + i], targets[i] = token[first + i + 1] for i in [0, B*T): row b is the window
    // [first + bT, first + bT + T].
    static void fill_rows(batch& out, const std::uint8_t* base, token_dtype d, std::uint64_t first) {
        const std::size_t n = out.inputs.size();
        const auto f = static_cast<std::size_t>(first);
        std::int32_t prev = static_cast<std::int32_t>(detail::load_token(base, f, d));
        for (std::size_t i = 0; i < n; ++i) {
            const auto next = static_cast<std::int32_t>(detail::load_token(base, f + i + 1, d));
            out.inputs[i] = prev;
            out.targets[i] = next;
            prev = next;
        }
    }

    // Makes train shard `index` resident (all of its tokens, checked). The state is unchanged if this throws.
    void load(std::uint64_t index) {
        if (resident_ == index && !resident_bytes_.empty()) return;
        auto bytes = detail::read_tokens(train_[index], 0, train_[index].tokens, vocab_);
        resident_bytes_ = std::move(bytes);
        resident_ = index;
    }

    std::string train_pattern_;
    std::string val_pattern_;
    int vocab_ = 0;
    std::vector<shard_info> train_;
    std::vector<shard_info> val_;
    std::uint64_t max_train_tokens_ = 0;
    shard_position pos_{};
    std::uint64_t resident_ = 0;                // which train shard resident_bytes_ holds
    std::vector<std::uint8_t> resident_bytes_;  // (tokens * token size) that shard's tokens, little-endian
};

static_assert(dataset<shard_dataset>);

}  // namespace sgt
