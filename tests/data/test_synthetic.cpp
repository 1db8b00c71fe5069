// Tests of sgt/data/synthetic.hpp: the k-hop pointer-chasing task. Every answer is checked against the
// mapping parsed here, independently, from the rendered text of the sequence.
#include <doctest/doctest.h>

#include "../support.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "sgt/data/dataset.hpp"
#include "sgt/data/synthetic.hpp"

namespace {

using sgt::test::contains;
using sgt::test::error_of;

struct query {
    char x = 0;
    int k = 0;
    char z = 0;
    std::size_t answer_pos = 0;  // index of z in the text
};

struct parsed {
    std::map<char, char> f;
    std::string keys_in_order;
    std::size_t pad = 0;
    std::vector<query> queries;
};

// Reads "x>y;" pairs, then '.' padding, then "?xk=z;" queries (the last without its ';', which is a target).
parsed parse(const std::string& text) {
    parsed p;
    std::size_t i = 0;
    while (i + 3 < text.size() && text[i + 1] == '>' && text[i + 3] == ';') {
        CHECK(p.f.count(text[i]) == 0);  // each symbol mapped once
        p.f[text[i]] = text[i + 2];
        p.keys_in_order += text[i];
        i += 4;
    }
    while (i < text.size() && text[i] == '.') {
        ++p.pad;
        ++i;
    }
    while (i < text.size()) {
        REQUIRE(i + 4 < text.size());
        REQUIRE(text[i] == '?');
        REQUIRE(text[i + 3] == '=');
        query q;
        q.x = text[i + 1];
        q.k = text[i + 2] - '0';
        q.z = text[i + 4];
        q.answer_pos = i + 4;
        if (i + 5 < text.size()) REQUIRE(text[i + 5] == ';');
        p.queries.push_back(q);
        i += 6;
    }
    return p;
}

char follow(const std::map<char, char>& f, char x, int k) {
    for (int h = 0; h < k; ++h) {
        const auto it = f.find(x);
        REQUIRE(it != f.end());
        x = it->second;
    }
    return x;
}

// Predictions equal to the targets on answers, 0 elsewhere.
std::vector<std::int32_t> perfect_predictions(const sgt::batch& b) {
    std::vector<std::int32_t> p(b.targets.size(), 0);
    for (std::size_t i = 0; i < p.size(); ++i)
        if (b.inputs[i] == '=') p[i] = b.targets[i];
    return p;
}

const std::string letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

}  // namespace

TEST_CASE("k_hop_dataset models sgt::dataset with vocab 256") {
    static_assert(sgt::dataset<sgt::k_hop_dataset>);
    const sgt::k_hop_dataset d;
    CHECK(d.vocab() == 256);
    CHECK(d.min_seq_len() == 69);
    CHECK(d.describe() == "k-hop pointer chasing: 16 symbols, 2-3 hops, permutation, loss on answers only "
                          "(synthetic, bytes)");
    const sgt::k_hop_dataset e({.symbols = 5, .min_hops = 4, .max_hops = 4, .permutation = false,
                                .supervise_all = true});
    CHECK(e.describe() == "k-hop pointer chasing: 5 symbols, 4 hops, random function, loss on every token "
                          "(synthetic, bytes)");
}

TEST_CASE("the example in the header is what sgt::rng(5) draws") {
    const sgt::k_hop_dataset d({.symbols = 4, .min_hops = 2, .max_hops = 3});
    sgt::rng r(5);
    CHECK(d.sample(r, 35) == "a>d;c>a;d>b;b>c;..?d2=c;?b2=a;?d3=a;");
    sgt::rng r2(5);
    const sgt::batch b = d.train_batch(r2, 1, 35);
    CHECK(sgt::k_hop_dataset::render(b, 0) == "a>d;c>a;d>b;b>c;..?d2=c;?b2=a;?d3=a");
}

TEST_CASE("every answer is the mapping, parsed from the text, followed k times; other targets are ignored") {
    const std::vector<sgt::k_hop_options> configs = {
        {},
        {.symbols = 2, .min_hops = 1, .max_hops = 1},
        {.symbols = 52, .min_hops = 1, .max_hops = 9},
        {.symbols = 10, .min_hops = 4, .max_hops = 4, .permutation = false},
        {.symbols = 7, .min_hops = 3, .max_hops = 5, .permutation = false},
    };
    for (const sgt::k_hop_options& o : configs) {
        const sgt::k_hop_dataset d(o);
        const int n = o.symbols;
        std::set<int> hops_seen;
        std::set<char> answers_seen;
        for (const int T : {d.min_seq_len(), d.min_seq_len() + 1, d.min_seq_len() + 3, d.min_seq_len() + 5,
                             d.min_seq_len() + 6, 256}) {
            sgt::rng r(static_cast<std::uint64_t>(T) * 1000 + static_cast<std::uint64_t>(n));
            for (int draw = 0; draw < 6; ++draw) {
                const sgt::batch b = d.train_batch(r, 4, T);
                REQUIRE(b.B == 4);
                REQUIRE(b.T == T);
                REQUIRE(b.inputs.size() == 4u * static_cast<std::size_t>(T));
                REQUIRE(b.targets.size() == b.inputs.size());
                for (int row = 0; row < b.B; ++row) {
                    const std::string text = sgt::k_hop_dataset::render(b, row);
                    REQUIRE(text.size() == static_cast<std::size_t>(T));
                    const parsed p = parse(text);

                    // The mapping covers exactly the first n letters; a permutation hits each once.
                    CHECK(p.f.size() == static_cast<std::size_t>(n));
                    CHECK(std::set<char>(p.keys_in_order.begin(), p.keys_in_order.end()) ==
                          std::set<char>(letters.begin(), letters.begin() + n));
                    std::set<char> images;
                    for (const auto& [x, y] : p.f) {
                        CHECK(letters.find(y) < static_cast<std::size_t>(n));
                        images.insert(y);
                    }
                    if (o.permutation) CHECK(images.size() == static_cast<std::size_t>(n));

                    // Layout: padding then whole queries fill the T + 1 stream exactly.
                    CHECK(p.pad == static_cast<std::size_t>((T + 1 - 4 * n) % 6));
                    CHECK(p.queries.size() == static_cast<std::size_t>(d.queries(T)));
                    CHECK(4 * n + p.pad + 6 * p.queries.size() == static_cast<std::size_t>(T) + 1);

                    for (const query& q : p.queries) {
                        CHECK(q.k >= o.min_hops);
                        CHECK(q.k <= o.max_hops);
                        CHECK(p.f.count(q.x) == 1);
                        CHECK(q.z == follow(p.f, q.x, q.k));
                        hops_seen.insert(q.k);
                        answers_seen.insert(q.z);
                    }

                    // Targets: the answer at each '=' (the position before the answer), ignored elsewhere.
                    std::set<std::size_t> answer_targets;
                    for (const query& q : p.queries) answer_targets.insert(q.answer_pos - 1);
                    for (int t = 0; t < T; ++t) {
                        const auto i = static_cast<std::size_t>(row * T + t);
                        CHECK(b.inputs[i] == static_cast<unsigned char>(text[static_cast<std::size_t>(t)]));
                        if (answer_targets.count(static_cast<std::size_t>(t))) {
                            CHECK(b.targets[i] == static_cast<unsigned char>(text[static_cast<std::size_t>(t) + 1]));
                        } else {
                            CHECK(b.targets[i] == sgt::ignore_target);
                        }
                    }
                }
            }
        }
        // Every hop count in range is drawn, and answers are not one constant.
        CHECK(hops_seen.size() == static_cast<std::size_t>(o.max_hops - o.min_hops + 1));
        CHECK(answers_seen.size() >= 2);
    }
}

TEST_CASE("supervise_all: every next byte is a target") {
    const sgt::k_hop_dataset d({.symbols = 8, .supervise_all = true});
    sgt::rng r(3);
    const int T = 100;
    const sgt::batch b = d.train_batch(r, 3, T);
    for (int row = 0; row < b.B; ++row) {
        for (int t = 0; t + 1 < T; ++t) {
            const auto i = static_cast<std::size_t>(row * T + t);
            CHECK(b.targets[i] == b.inputs[i + 1]);
        }
        CHECK(b.targets[static_cast<std::size_t>(row * T + T - 1)] == ';');
        const parsed p = parse(sgt::k_hop_dataset::render(b, row));
        for (const query& q : p.queries) CHECK(q.z == follow(p.f, q.x, q.k));
    }
    // Accuracy still counts the answers only.
    std::vector<std::int32_t> pred = perfect_predictions(b);
    const sgt::answer_score s = sgt::k_hop_score(b, pred);
    CHECK(s.total == 3 * d.queries(T));
    CHECK(s.correct == s.total);
}

TEST_CASE("determinism: same seed, same batch; fixed val batches") {
    const sgt::k_hop_dataset d;
    sgt::rng a(11), b(11), c(12);
    const sgt::batch x = d.train_batch(a, 8, 128);
    const sgt::batch y = d.train_batch(b, 8, 128);
    const sgt::batch z = d.train_batch(c, 8, 128);
    CHECK(x.inputs == y.inputs);
    CHECK(x.targets == y.targets);
    CHECK(x.inputs != z.inputs);
    CHECK(d.train_batch(a, 8, 128).inputs != x.inputs);  // the rng advanced
    CHECK(a.state() != b.state());

    const std::vector<sgt::batch> v1 = d.val_batches(4, 128, 3);
    const std::vector<sgt::batch> v2 = d.val_batches(4, 128, 3);
    const std::vector<sgt::batch> v5 = d.val_batches(4, 128, 5);
    REQUIRE(v1.size() == 3);
    REQUIRE(v5.size() == 5);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(v1[i].inputs == v2[i].inputs);
        CHECK(v1[i].targets == v2[i].targets);
        CHECK(v5[i].inputs == v1[i].inputs);  // the first batches do not depend on max_batches
    }
    CHECK(v1[0].inputs != v1[1].inputs);
    const sgt::k_hop_dataset other({.val_seed = 99});
    CHECK(other.val_batches(4, 128, 1)[0].inputs != v1[0].inputs);
}

TEST_CASE("errors: T too short, bad options, bad B or max_batches") {
    const sgt::k_hop_dataset d;  // 16 symbols: T >= 4*16 + 5 = 69
    sgt::rng r(0);
    const std::string too_short =
        "k-hop task: T = 68 is too short for 16 symbols, expected T >= 4*16+5 = 69 to hold the mapping and one query";
    CHECK(error_of([&] { d.train_batch(r, 1, 68); }) == too_short);
    CHECK(error_of([&] { d.val_batches(1, 68, 1); }) == too_short);
    CHECK(error_of([&] { d.check(68); }) == too_short);
    CHECK(error_of([&] { d.check(69); }).empty());
    CHECK(d.queries(69) == 1);
    const sgt::k_hop_dataset small({.symbols = 3});
    CHECK(contains(error_of([&] { small.sample(r, 16); }), "expected T >= 4*3+5 = 17"));
    CHECK(small.sample(r, 17).size() == 18);

    CHECK(contains(error_of([] { sgt::k_hop_dataset({.symbols = 1}); }), "symbols = 1, expected 2 to 52"));
    CHECK(contains(error_of([] { sgt::k_hop_dataset({.symbols = 53}); }), "symbols = 53, expected 2 to 52"));
    CHECK(contains(error_of([] { sgt::k_hop_dataset({.min_hops = 0, .max_hops = 2}); }),
                   "hops 0 to 2, expected 1 <= min_hops <= max_hops <= 9"));
    CHECK(contains(error_of([] { sgt::k_hop_dataset({.min_hops = 3, .max_hops = 2}); }), "hops 3 to 2"));
    CHECK(contains(error_of([] { sgt::k_hop_dataset({.min_hops = 1, .max_hops = 10}); }), "hops 1 to 10"));
    CHECK(contains(error_of([&] { d.train_batch(r, 0, 128); }), "B = 0, expected a positive batch size"));
    CHECK(contains(error_of([&] { d.val_batches(2, 128, 0); }), "max_batches = 0, expected a positive count"));
}

TEST_CASE("answer accuracy: 1 on perfect predictions, less when one answer is wrong") {
    const sgt::k_hop_dataset d;
    sgt::rng r(5);
    const int T = 128;
    const sgt::batch b = d.train_batch(r, 4, T);
    std::vector<std::int32_t> pred = perfect_predictions(b);
    const sgt::answer_score perfect = sgt::k_hop_score(b, pred);
    CHECK(perfect.total == 4 * d.queries(T));
    CHECK(perfect.correct == perfect.total);
    CHECK(sgt::k_hop_accuracy(b, pred) == 1.0);

    // Predictions at non-answer positions do not count.
    for (std::size_t i = 0; i < pred.size(); ++i)
        if (b.inputs[i] != '=') pred[i] = 'Z';
    CHECK(sgt::k_hop_accuracy(b, pred) == 1.0);

    // One wrong answer.
    std::size_t first_answer = 0;
    while (b.inputs[first_answer] != '=') ++first_answer;
    pred[first_answer] = b.targets[first_answer] == 'a' ? 'b' : 'a';
    const double acc = sgt::k_hop_accuracy(b, pred);
    CHECK(acc < 1.0);
    CHECK(acc == doctest::Approx(static_cast<double>(perfect.total - 1) / static_cast<double>(perfect.total)));

    // All wrong.
    std::vector<std::int32_t> zeros(pred.size(), 0);
    CHECK(sgt::k_hop_accuracy(b, zeros) == 0.0);

    // Scores add up over batches.
    sgt::answer_score sum = sgt::k_hop_score(b, pred);
    sum += sgt::k_hop_score(b, zeros);
    CHECK(sum.total == 2 * perfect.total);
    CHECK(sum.correct == perfect.total - 1);

    // Wrong sizes and batches without answers are errors.
    CHECK(contains(error_of([&] { sgt::k_hop_score(b, std::vector<std::int32_t>(5)); }),
                   "5 predictions, expected B*T = 4*128 = 512"));
    const sgt::batch plain{1, 3, {'a', 'b', 'c'}, {'b', 'c', 'd'}};
    CHECK(contains(error_of([&] { sgt::k_hop_accuracy(plain, std::vector<std::int32_t>(3)); }),
                   "the batch holds no answer"));
}

TEST_CASE("render escapes bytes outside printable ASCII and checks the row") {
    const sgt::batch b{2, 3, {'A', '\n', 200, 'x', 'y', 'z'}, {0, 0, 0, 0, 0, 0}};
    CHECK(sgt::k_hop_dataset::render(b, 0) == "A\\x0a\\xc8");
    CHECK(sgt::k_hop_dataset::render(b, 1) == "xyz");
    CHECK(contains(error_of([&] { sgt::k_hop_dataset::render(b, 2); }), "row 2, expected 0 <= row < B = 2"));
}

TEST_CASE("compact format: one byte per mapping entry, queries 'k x z'; every answer is f^k(x) of the decoded mapping") {
    const int n = 6, T = 32;
    const sgt::k_hop_dataset d({.symbols = n, .min_hops = 1, .max_hops = 3, .format = sgt::k_hop_format::compact});
    CHECK(d.min_seq_len() == n + 2);
    CHECK(d.queries(T) == (T + 1 - n) / 3);
    CHECK(d.describe() == "k-hop pointer chasing: 6 symbols, 1-3 hops, permutation, compact, loss on answers only "
                          "(synthetic, bytes)");
    sgt::rng r(9);
    const sgt::batch b = d.train_batch(r, 8, T);
    std::set<int> hops_seen;
    for (int row = 0; row < b.B; ++row) {
        const std::int32_t* in = b.inputs.data() + row * T;
        const std::int32_t* tg = b.targets.data() + row * T;
        // The mapping: n bytes 128 + 11 x + y, each symbol once on the left, a permutation.
        std::map<char, char> f;
        std::set<char> images;
        for (int i = 0; i < n; ++i) {
            REQUIRE(in[i] >= 128);
            const int x = (in[i] - 128) / 11, y = (in[i] - 128) % 11;
            REQUIRE(x < n);
            REQUIRE(y < n);
            CHECK(f.count(letters[x]) == 0);
            f[letters[x]] = letters[y];
            images.insert(letters[y]);
            CHECK(tg[i] == sgt::ignore_target);
        }
        CHECK(f.size() == std::size_t(n));
        CHECK(images.size() == std::size_t(n));
        int p = n;
        const int pad = (T + 1 - n) % 3;
        for (int i = 0; i < pad; ++i, ++p) {
            CHECK(in[p] == '.');
            CHECK(tg[p] == sgt::ignore_target);
        }
        int queries = 0;
        for (; p + 1 < T; p += 3, ++queries) {  // k at p, x at p + 1 (its target is the answer), z at p + 2
            const int k = in[p] - '0';
            REQUIRE(k >= 1);
            REQUIRE(k <= 3);
            hops_seen.insert(k);
            CHECK(tg[p] == sgt::ignore_target);
            const char z = follow(f, char(in[p + 1]), k);
            CHECK(tg[p + 1] == z);
            if (p + 2 < T) {
                CHECK(in[p + 2] == z);
                CHECK(tg[p + 2] == sgt::ignore_target);
            }
        }
        CHECK(queries == d.queries(T));
    }
    CHECK(hops_seen == std::set<int>{1, 2, 3});

    // Scoring finds the answers (a letter after a digit) in both supervision modes.
    std::vector<std::int32_t> pred(b.targets.size(), 0);
    for (std::size_t i = 0; i < pred.size(); ++i)
        if (b.targets[i] != sgt::ignore_target) pred[i] = b.targets[i];
    const sgt::answer_score s = sgt::k_hop_score(b, pred);
    CHECK(s.total == b.B * d.queries(T));
    CHECK(s.correct == s.total);
    const sgt::k_hop_dataset all({.symbols = n, .supervise_all = true, .format = sgt::k_hop_format::compact});
    sgt::rng r2(9);
    const sgt::batch ba = all.train_batch(r2, 2, T);
    CHECK(std::count(ba.targets.begin(), ba.targets.end(), sgt::ignore_target) == 0);
    CHECK(sgt::k_hop_score(ba, ba.targets).total == 2 * all.queries(T));

    CHECK(error_of([&] { d.check(7); }) ==
          "k-hop task: T = 7 is too short for 6 symbols, expected T >= 1*6+2 = 8 to hold the mapping and one query");
    CHECK(error_of([] { sgt::k_hop_dataset({.symbols = 12, .format = sgt::k_hop_format::compact}); }) ==
          "k-hop task: symbols = 12 in the compact format, expected at most 11 (one byte per mapping entry)");
}
