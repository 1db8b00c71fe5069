// sgt/allocation.hpp: the allocation operator 𝒜 (spec Sec. 3, Eq. 7).
//
// 𝒜 maps the head entropies E^(l,·) of one layer to the set S_l of heads that loop:
//     S = 𝒜({E^(i)}) = argtop_h(E^(i))            (Eq. 7; ties go to the lower head index)
// It is a policy, named by the concept sgt::allocation_policy, so that the growth operator (growth.hpp) and the
// baselines (schedule.hpp) take any of them: top_h (the paper's), bottom_h (low-entropy loop of Table 2),
// all_heads (Attention Loop), random_h (seeded) and explicit_heads (a given list). A later variant (a learned
// gate) plugs in by satisfying the same concept. Every policy returns head indices, 0-based and ascending.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sgt/core/error.hpp"
#include "sgt/core/rng.hpp"

namespace sgt {

// An allocation policy: `select(head_entropy, h)` returns the heads to loop, ascending; `name()` names it in
// logs and JSON. select may change the policy's state (random_h draws), hence the non-const receiver.
template <class P>
concept allocation_policy =
    std::copy_constructible<P> && requires(P& p, const P& cp, std::span<const double> e, int h) {
        { p.select(e, h) } -> std::same_as<std::vector<int>>;
        { cp.name() } -> std::convertible_to<std::string_view>;
    };

// A policy with state that a checkpoint must keep (random_h): to_json() saves it, load_json() restores it.
template <class P>
concept stateful_allocation_policy =
    allocation_policy<P> && requires(P& p, const P& cp, const nlohmann::json& j) {
        { cp.to_json() } -> std::same_as<nlohmann::json>;
        p.load_json(j);
    };

// A policy that also needs to know the layer it chooses for (the learned gate's allocation, gates.hpp):
// select_layer(l, head_entropy, h); the growth operator calls it in place of select.
template <class P>
concept layer_allocation_policy =
    allocation_policy<P> && requires(P& p, int l, std::span<const double> e, int h) {
        { p.select_layer(l, e, h) } -> std::same_as<std::vector<int>>;
    };

namespace detail {

// Checks that h heads can be chosen from a layer's `n` heads, and that no entropy is NaN.
inline void check_selection(std::string_view policy, std::span<const double> e, int h) {
    const int n = static_cast<int>(e.size());
    require(n >= 1, "allocation {}: expected the entropies of at least one head, found none", policy);
    require(h >= 1 && h <= n, "allocation {}: h must be in [1, {}] (the layer's head count), found {}", policy, n,
            h);
    for (int i = 0; i < n; ++i)
        require(!std::isnan(e[i]), "allocation {}: the entropy of head {} is NaN", policy, i);
}

// The `count` indices of the largest (descending = true) or smallest values; among equal values the lower
// index wins. Returned ascending.
inline std::vector<int> arg_extreme(std::span<const double> values, int count, bool descending) {
    std::vector<int> order(values.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        return descending ? values[a] > values[b] : values[a] < values[b];
    });
    order.resize(static_cast<std::size_t>(count));
    std::sort(order.begin(), order.end());
    return order;
}

}  // namespace detail

// Eq. 7: the h highest-entropy heads (ties to the lower head index). The paper's policy and the default.
struct top_h {
    std::vector<int> select(std::span<const double> head_entropy, int h) const {
        detail::check_selection(name(), head_entropy, h);
        return detail::arg_extreme(head_entropy, h, true);
    }
    std::string_view name() const { return "top_h"; }
};

// The h lowest-entropy heads (ties to the lower head index): Table 2's Low-Entropy Loop.
struct bottom_h {
    std::vector<int> select(std::span<const double> head_entropy, int h) const {
        detail::check_selection(name(), head_entropy, h);
        return detail::arg_extreme(head_entropy, h, false);
    }
    std::string_view name() const { return "bottom_h"; }
};

// Every head, whatever h is: the Attention Loop.
struct all_heads {
    std::vector<int> select(std::span<const double> head_entropy, int /*h*/) const {
        require(!head_entropy.empty(), "allocation all_heads: expected the entropies of at least one head, found none");
        std::vector<int> out(head_entropy.size());
        std::iota(out.begin(), out.end(), 0);
        return out;
    }
    std::string_view name() const { return "all_heads"; }
};

// h heads drawn uniformly without replacement from a seeded sgt::rng (the entropies are ignored). The same
// seed gives the same draws on any machine; the generator's state goes into checkpoints (to_json/load_json).
class random_h {
public:
    explicit random_h(std::uint64_t seed = 0) : seed_(seed), rng_(seed) {}

    std::vector<int> select(std::span<const double> head_entropy, int h) {
        detail::check_selection(name(), head_entropy, h);
        std::vector<int> pool(head_entropy.size());
        std::iota(pool.begin(), pool.end(), 0);
        for (int i = 0; i < h; ++i) {  // partial Fisher-Yates: pool[0..h) becomes a uniform h-subset
            const auto j = i + static_cast<int>(rng_.below(pool.size() - static_cast<std::size_t>(i)));
            std::swap(pool[i], pool[j]);
        }
        pool.resize(static_cast<std::size_t>(h));
        std::sort(pool.begin(), pool.end());
        return pool;
    }
    std::string_view name() const { return "random_h"; }
    std::uint64_t seed() const { return seed_; }

    nlohmann::json to_json() const {
        const auto& s = rng_.state();
        return {{"name", name()}, {"seed", seed_}, {"state", {s[0], s[1], s[2], s[3]}}};
    }
    void load_json(const nlohmann::json& j) {
        require(j.value("name", std::string()) == name(), "allocation random_h: expected state of random_h, found {}",
                j.dump());
        const auto s = j.at("state").get<std::vector<std::uint64_t>>();
        require(s.size() == 4, "allocation random_h: expected 4 state words, found {}", s.size());
        seed_ = j.at("seed").get<std::uint64_t>();
        rng_.set_state({s[0], s[1], s[2], s[3]});
    }

private:
    std::uint64_t seed_;
    rng rng_;
};

// A fixed list of heads, whatever the entropies and h are. Negative indices and duplicates are rejected when
// the list is given; the upper bound is checked against the layer's head count on every select.
class explicit_heads {
public:
    explicit explicit_heads(std::vector<int> heads) : heads_(std::move(heads)) {
        require(!heads_.empty(), "allocation explicit_heads: expected at least one head index, found an empty list");
        std::sort(heads_.begin(), heads_.end());
        require(heads_.front() >= 0, "allocation explicit_heads: head index {} is negative", heads_.front());
        const auto dup = std::adjacent_find(heads_.begin(), heads_.end());
        require(dup == heads_.end(), "allocation explicit_heads: head {} is listed twice", dup == heads_.end() ? 0 : *dup);
    }

    std::vector<int> select(std::span<const double> head_entropy, int /*h*/) const {
        const int n = static_cast<int>(head_entropy.size());
        for (int i : heads_)
            require(i >= 0 && i < n, "allocation explicit_heads: head index {} is out of range [0, {})", i, n);
        return heads_;
    }
    std::string_view name() const { return "explicit_heads"; }
    const std::vector<int>& heads() const { return heads_; }

private:
    std::vector<int> heads_;  // ascending, unique
};

static_assert(allocation_policy<top_h> && allocation_policy<bottom_h> && allocation_policy<all_heads> &&
              allocation_policy<explicit_heads> && stateful_allocation_policy<random_h>);

}  // namespace sgt
