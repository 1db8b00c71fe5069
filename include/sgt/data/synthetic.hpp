// sgt/data/synthetic.hpp: a built-in synthetic reasoning task, k-hop pointer chasing, that needs no file.
//
// Depth matters here: answering a k-hop query composes k lookups in the context, the kind of iterated
// computation that looping layers (spec Sec. 1) can do and a shallow model cannot, so the default demo
// runs anywhere and shows something. Tokens are printable ASCII bytes (V = 256), so the task plugs into the
// same byte-level models as text.hpp. Models sgt::dataset.
//
// One sequence is a stream of T + 1 bytes (inputs = stream[0, T), targets = stream[1, T]):
//
//     mapping   "x>y;" for each of the n symbols x, in random order: f(x) = y    4n bytes
//     padding   '.' repeated (T + 1 - 4n) mod 6 times                             0..5 bytes
//     queries   "?xk=z;" until the stream is full: z = f(f(...f(x))), k times    6 bytes each
//
// The symbols are the first n letters of a-z A-Z; f is a random permutation (or, as an option, a random
// function); each query draws x uniformly and k uniformly in [min_hops, max_hops] (one digit). With n = 4,
// hops 2..3 and T = 35, the stream drawn by sgt::rng(5) is (the final ';' is the last target, not an input)
//
//     a>d;c>a;d>b;b>c;..?d2=c;?b2=a;?d3=a;
//
// The target at each '=' is the answer; every other target is sgt::ignore_target, so the loss is the answer
// loss (option supervise_all makes every next byte a target). k_hop_score / k_hop_accuracy score argmax
// predictions on the answers only. All draws come from the sgt::rng passed in (bit-reproducible);
// val_batches use a fixed seed of their own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/data/batch.hpp"
#include "sgt/data/dataset.hpp"

namespace sgt {

namespace detail {

inline constexpr std::string_view k_hop_alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
inline constexpr int k_hop_pair_bytes = 4;   // "x>y;"
inline constexpr int k_hop_query_bytes = 6;  // "?xk=z;"
inline constexpr int k_hop_compact_pair_bytes = 1;   // one byte: 128 + 11 x + y
inline constexpr int k_hop_compact_query_bytes = 3;  // "kxz"
inline constexpr int k_hop_compact_max_symbols = 11;  // 128 + 11*10 + 10 = 248 < 256
inline constexpr int k_hop_compact_pair_base = 128;

// Is `c` a decimal digit / a letter of the alphabet?
inline constexpr bool k_hop_digit(std::int32_t c) { return c >= '0' && c <= '9'; }
inline constexpr bool k_hop_letter(std::int32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace detail

// How a sequence is written (see the header comment): readable text, or one token per mapping entry.
enum class k_hop_format { text, compact };

struct k_hop_options {
    int symbols = 16;             // n, 2..52 (text) or 2..11 (compact): the first n letters of a-z A-Z
    int min_hops = 2;             // k per query, uniform in [min_hops, max_hops], 1..9
    int max_hops = 3;
    bool permutation = true;      // f is a random permutation; false: a random function (f(x) uniform)
    bool supervise_all = false;   // false: only answers are targets; true: every next byte is
    k_hop_format format = k_hop_format::text;
    std::uint64_t val_seed = 0x5347542d6b686f70ull;  // seeds val_batches ("SGT-khop")
};

class k_hop_dataset {
public:
    explicit k_hop_dataset(k_hop_options options = {}) : opt_(options) {
        require(opt_.symbols >= 2 && opt_.symbols <= static_cast<int>(detail::k_hop_alphabet.size()),
                "k-hop task: symbols = {}, expected 2 to {} (the letters a-z, A-Z)", opt_.symbols,
                detail::k_hop_alphabet.size());
        require(opt_.min_hops >= 1 && opt_.min_hops <= opt_.max_hops && opt_.max_hops <= 9,
                "k-hop task: hops {} to {}, expected 1 <= min_hops <= max_hops <= 9 (one digit)", opt_.min_hops,
                opt_.max_hops);
        require(opt_.format == k_hop_format::text || opt_.symbols <= detail::k_hop_compact_max_symbols,
                "k-hop task: symbols = {} in the compact format, expected at most {} (one byte per mapping entry)",
                opt_.symbols, detail::k_hop_compact_max_symbols);
    }

    const k_hop_options& options() const { return opt_; }
    int vocab() const { return 256; }

    // Bytes of one mapping entry and of one query in the stream: 4 and 6 (text), 1 and 3 (compact).
    int pair_bytes() const {
        return opt_.format == k_hop_format::text ? detail::k_hop_pair_bytes : detail::k_hop_compact_pair_bytes;
    }
    int query_bytes() const {
        return opt_.format == k_hop_format::text ? detail::k_hop_query_bytes : detail::k_hop_compact_query_bytes;
    }

    // The shortest T that holds the mapping and one query: pair_bytes * n + query_bytes stream bytes,
    // T = stream - 1.
    int min_seq_len() const { return pair_bytes() * opt_.symbols + query_bytes() - 1; }

    // Throws sgt::error unless T is at least min_seq_len().
    void check(int T) const {
        require(T >= min_seq_len(),
                "k-hop task: T = {} is too short for {} symbols, expected T >= {}*{}+{} = {} to hold the mapping "
                "and one query",
                T, opt_.symbols, pair_bytes(), opt_.symbols, query_bytes() - 1, min_seq_len());
    }

    // Queries in one sequence of length T.
    int queries(int T) const {
        check(T);
        return (T + 1 - pair_bytes() * opt_.symbols) / query_bytes();
    }

    // One stream of T + 1 bytes in the format above, drawn from r.
    std::string sample(rng& r, int T) const {
        check(T);
        const int n = opt_.symbols;
        std::array<int, detail::k_hop_alphabet.size()> f{};
        if (opt_.permutation) {
            std::iota(f.begin(), f.begin() + n, 0);
            shuffle(r, std::span(f).first(static_cast<std::size_t>(n)));
        } else {
            for (int x = 0; x < n; ++x)
                f[static_cast<std::size_t>(x)] = static_cast<int>(r.below(static_cast<std::uint64_t>(n)));
        }
        std::array<int, detail::k_hop_alphabet.size()> order{};
        std::iota(order.begin(), order.begin() + n, 0);
        shuffle(r, std::span(order).first(static_cast<std::size_t>(n)));

        const auto sym = [](int x) { return detail::k_hop_alphabet[static_cast<std::size_t>(x)]; };
        const bool text = opt_.format == k_hop_format::text;
        std::string s;
        s.reserve(static_cast<std::size_t>(T) + 1);
        for (int i = 0; i < n; ++i) {
            const int x = order[static_cast<std::size_t>(i)];
            const int y = f[static_cast<std::size_t>(x)];
            if (text) {
                s += sym(x);
                s += '>';
                s += sym(y);
                s += ';';
            } else {
                s += static_cast<char>(detail::k_hop_compact_pair_base + detail::k_hop_compact_max_symbols * x + y);
            }
        }
        const int rest = T + 1 - pair_bytes() * n;
        s.append(static_cast<std::size_t>(rest % query_bytes()), '.');
        const int span = opt_.max_hops - opt_.min_hops + 1;
        for (int q = 0; q < rest / query_bytes(); ++q) {
            const int x = static_cast<int>(r.below(static_cast<std::uint64_t>(n)));
            const int k = opt_.min_hops + static_cast<int>(r.below(static_cast<std::uint64_t>(span)));
            int z = x;
            for (int h = 0; h < k; ++h) z = f[static_cast<std::size_t>(z)];
            if (text) {
                s += '?';
                s += sym(x);
                s += static_cast<char>('0' + k);
                s += '=';
                s += sym(z);
                s += ';';
            } else {
                s += static_cast<char>('0' + k);
                s += sym(x);
                s += sym(z);
            }
        }
        return s;
    }

    // B fresh sequences drawn from r.
    batch train_batch(rng& r, int B, int T) const {
        require(B > 0, "k-hop task: B = {}, expected a positive batch size", B);
        check(T);
        batch out = make_batch(B, T);
        for (int b = 0; b < B; ++b) fill_row(out, b, sample(r, T));
        return out;
    }

    // max_batches batches of B sequences from options().val_seed: the same on every call, and the first
    // batches do not depend on max_batches.
    std::vector<batch> val_batches(int B, int T, int max_batches) const {
        require(max_batches > 0, "k-hop task: max_batches = {}, expected a positive count", max_batches);
        rng r(opt_.val_seed);
        std::vector<batch> out;
        out.reserve(static_cast<std::size_t>(max_batches));
        for (int i = 0; i < max_batches; ++i) out.push_back(train_batch(r, B, T));
        return out;
    }

    std::string describe() const {
        return fmt::format("k-hop pointer chasing: {} symbols, {} hops, {}{}, loss on {} (synthetic, bytes)",
                           opt_.symbols,
                           opt_.min_hops == opt_.max_hops ? fmt::format("{}", opt_.min_hops)
                                                          : fmt::format("{}-{}", opt_.min_hops, opt_.max_hops),
                           opt_.permutation ? "permutation" : "random function",
                           opt_.format == k_hop_format::compact ? ", compact" : "",
                           opt_.supervise_all ? "every token" : "answers only");
    }

    // Row `row` of a batch's inputs as text; a byte outside printable ASCII shows as \xNN. For a k-hop batch
    // this is the whole sequence but its final ';'.
    static std::string render(const batch& b, int row) {
        require(row >= 0 && row < b.B, "k-hop task: row {}, expected 0 <= row < B = {}", row, b.B);
        require(b.inputs.size() == static_cast<std::size_t>(b.B) * static_cast<std::size_t>(b.T),
                "k-hop task: batch inputs hold {} tokens, expected B*T = {}*{}", b.inputs.size(), b.B, b.T);
        std::string out;
        const std::size_t T = static_cast<std::size_t>(b.T);
        for (std::size_t t = 0; t < T; ++t) {
            const std::int32_t v = b.inputs[static_cast<std::size_t>(row) * T + t];
            if (v >= 0x20 && v < 0x7f) {
                out += static_cast<char>(v);
            } else {
                out += fmt::format("\\x{:02x}", v);
            }
        }
        return out;
    }

private:
    static void shuffle(rng& r, std::span<int> v) {  // Fisher-Yates
        for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[r.below(i)]);
    }

    static batch make_batch(int B, int T) {
        const std::size_t n = static_cast<std::size_t>(B) * static_cast<std::size_t>(T);
        return batch{B, T, std::vector<std::int32_t>(n), std::vector<std::int32_t>(n)};
    }

    // Is the target at stream position t an answer? Text: the input is '='; compact: a letter after a digit.
    static bool is_answer(const std::string& s, std::size_t t) {
        const auto c = [&](std::size_t i) { return static_cast<std::int32_t>(static_cast<unsigned char>(s[i])); };
        return c(t) == '=' || (t > 0 && detail::k_hop_letter(c(t)) && detail::k_hop_digit(c(t - 1)));
    }

    void fill_row(batch& out, int b, const std::string& s) const {
        const std::size_t T = static_cast<std::size_t>(out.T);
        std::int32_t* in = out.inputs.data() + static_cast<std::size_t>(b) * T;
        std::int32_t* tg = out.targets.data() + static_cast<std::size_t>(b) * T;
        for (std::size_t t = 0; t < T; ++t) {
            in[t] = static_cast<unsigned char>(s[t]);
            const bool answer = is_answer(s, t);
            tg[t] = opt_.supervise_all || answer ? static_cast<unsigned char>(s[t + 1]) : ignore_target;
        }
    }

    k_hop_options opt_;
};

static_assert(dataset<k_hop_dataset>);

// Correct answers out of all answers, to add up over batches.
struct answer_score {
    std::int64_t correct = 0;
    std::int64_t total = 0;

    double accuracy() const { return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
    answer_score& operator+=(const answer_score& o) {
        correct += o.correct;
        total += o.total;
        return *this;
    }
};

// Scores argmax predictions (B, T) on a k-hop batch's answers: the positions whose input is '=', whose target
// is the answer (in both supervision modes). predicted[p] is the token the model predicts after position p.
inline answer_score k_hop_score(const batch& b, std::span<const std::int32_t> predicted) {
    const std::size_t n = static_cast<std::size_t>(b.B) * static_cast<std::size_t>(b.T);
    require(b.inputs.size() == n && b.targets.size() == n,
            "k-hop score: the batch holds {} inputs and {} targets, expected B*T = {}*{} = {}", b.inputs.size(),
            b.targets.size(), b.B, b.T, n);
    require(predicted.size() == n, "k-hop score: {} predictions, expected B*T = {}*{} = {}", predicted.size(), b.B,
            b.T, n);
    answer_score s;
    const std::size_t T = static_cast<std::size_t>(b.T);
    for (std::size_t p = 0; p < n; ++p) {
        const bool compact_answer =
            p % T > 0 && detail::k_hop_letter(b.inputs[p]) && detail::k_hop_digit(b.inputs[p - 1]);
        if (b.inputs[p] != '=' && !compact_answer) continue;
        require(b.targets[p] != ignore_target,
                "k-hop score: position {} holds a query (input '=', or a letter after a digit) but no target, expected a batch of k_hop_dataset", p);
        ++s.total;
        if (predicted[p] == b.targets[p]) ++s.correct;
    }
    return s;
}

// Fraction of answers predicted right, in [0, 1]. Throws sgt::error when the batch holds no answer.
inline double k_hop_accuracy(const batch& b, std::span<const std::int32_t> predicted) {
    const answer_score s = k_hop_score(b, predicted);
    require(s.total > 0, "k-hop accuracy: the batch holds no answer (no input '='), expected a k_hop_dataset batch");
    return s.accuracy();
}

}  // namespace sgt
