// Tests of the allocation operator policies (allocation.hpp, Eq. 7) on hand-made entropies.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include "sgt/allocation.hpp"

namespace {
using v = std::vector<int>;
const std::vector<double> five{0.2, 0.9, 0.5, 0.9, 0.1};  // heads 1 and 3 tie at the top, 4 is lowest
}  // namespace

static_assert(sgt::allocation_policy<sgt::top_h>);
static_assert(!sgt::allocation_policy<int>);
static_assert(!sgt::stateful_allocation_policy<sgt::top_h>);

TEST_CASE("top_h picks the highest-entropy heads, ascending, ties to the lower index") {
    sgt::top_h p;
    CHECK(p.name() == "top_h");
    CHECK(p.select(five, 2) == v{1, 3});
    CHECK(p.select(five, 3) == v{1, 2, 3});  // 0.9, 0.9, 0.5
    CHECK(p.select(five, 1) == v{1});        // 1 and 3 tie at 0.9: the lower index wins
    const std::vector<double> flat{0.5, 0.5, 0.5, 0.5};
    CHECK(p.select(flat, 2) == v{0, 1});
    const std::vector<double> tail_tie{0.3, 0.7, 0.7, 0.7};
    CHECK(p.select(tail_tie, 2) == v{1, 2});
    CHECK(p.select(five, 5) == v{0, 1, 2, 3, 4});
}

TEST_CASE("bottom_h picks the lowest-entropy heads, ties to the lower index") {
    sgt::bottom_h p;
    CHECK(p.name() == "bottom_h");
    CHECK(p.select(five, 2) == v{0, 4});     // 0.1 (head 4), 0.2 (head 0)
    CHECK(p.select(five, 3) == v{0, 2, 4});  // then 0.5 (head 2)
    const std::vector<double> tie{0.4, 0.1, 0.1, 0.1};
    CHECK(p.select(tie, 2) == v{1, 2});
}

TEST_CASE("all_heads ignores h") {
    sgt::all_heads p;
    CHECK(p.name() == "all_heads");
    CHECK(p.select(five, 2) == v{0, 1, 2, 3, 4});
    CHECK(p.select(five, 99) == v{0, 1, 2, 3, 4});
}

TEST_CASE("random_h is a reproducible uniform h-subset and its state round-trips") {
    const std::vector<double> e(8, 0.5);
    sgt::random_h a(42), b(42), c(7);
    CHECK(a.name() == "random_h");
    std::vector<v> da, dc;
    std::set<int> seen;
    for (int i = 0; i < 50; ++i) {
        const auto s = a.select(e, 3);
        CHECK(s == b.select(e, 3));  // same seed, same draws
        REQUIRE(s.size() == 3);
        CHECK(s[0] < s[1]);  // ascending and distinct
        CHECK(s[1] < s[2]);
        CHECK(s[0] >= 0);
        CHECK(s[2] < 8);
        seen.insert(s.begin(), s.end());
        da.push_back(s);
        dc.push_back(c.select(e, 3));
    }
    CHECK(da != dc);            // another seed, other draws
    CHECK(seen.size() == 8u);   // 150 draws reach every one of 8 heads

    const auto saved = a.to_json();
    const auto next = a.select(e, 3);
    sgt::random_h restored(0);
    restored.load_json(saved);
    CHECK(restored.seed() == 42u);
    CHECK(restored.select(e, 3) == next);
    CHECK_THROWS_WITH_AS(restored.load_json(nlohmann::json{{"name", "top_h"}}),
                         doctest::Contains("expected state of random_h"), sgt::error);
}

TEST_CASE("explicit_heads returns its list, validated") {
    sgt::explicit_heads p({3, 1});
    CHECK(p.name() == "explicit_heads");
    CHECK(p.select(five, 2) == v{1, 3});
    CHECK(p.select(five, 1) == v{1, 3});  // h is ignored
    const std::vector<double> three{0.1, 0.2, 0.3};
    CHECK_THROWS_WITH_AS(p.select(three, 2), "allocation explicit_heads: head index 3 is out of range [0, 3)",
                         sgt::error);
    CHECK_THROWS_WITH_AS(sgt::explicit_heads({2, 0, 2}), "allocation explicit_heads: head 2 is listed twice",
                         sgt::error);
    CHECK_THROWS_WITH_AS(sgt::explicit_heads({-1}), "allocation explicit_heads: head index -1 is negative", sgt::error);
    CHECK_THROWS_WITH_AS(sgt::explicit_heads(std::vector<int>{}), doctest::Contains("empty list"), sgt::error);
}

TEST_CASE("bad h and bad entropies are errors") {
    sgt::top_h top;
    sgt::bottom_h bottom;
    sgt::random_h rnd(1);
    CHECK_THROWS_WITH_AS(top.select(five, 6), "allocation top_h: h must be in [1, 5] (the layer's head count), found 6",
                         sgt::error);
    CHECK_THROWS_WITH_AS(top.select(five, 0), "allocation top_h: h must be in [1, 5] (the layer's head count), found 0",
                         sgt::error);
    CHECK_THROWS_WITH_AS(bottom.select(five, -1), doctest::Contains("allocation bottom_h: h must be in [1, 5]"),
                         sgt::error);
    CHECK_THROWS_WITH_AS(rnd.select(five, 9), doctest::Contains("allocation random_h: h must be in [1, 5]"),
                         sgt::error);
    const std::vector<double> with_nan{0.1, std::numeric_limits<double>::quiet_NaN(), 0.3};
    CHECK_THROWS_WITH_AS(top.select(with_nan, 1), "allocation top_h: the entropy of head 1 is NaN", sgt::error);
    CHECK_THROWS_WITH_AS(top.select(std::vector<double>{}, 1), doctest::Contains("found none"), sgt::error);
}
