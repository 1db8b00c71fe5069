// sgt/schedule.hpp: loop schedules, the one interface through which a training loop runs every method of
// spec Sec. 5 (the paper's Tables 1-4, 9): Vanilla, a static plan, Block Loop, Attention Loop, the high-/low-
// entropy head loop on one layer, and SGT itself (growth.hpp).
//
// A schedule gives the loop_plan of the next step and, after step t (counting from 1), takes that step's
// entropies and returns what changed:
//
//     for (int t = 1; t <= steps; ++t) {
//         run_step(schedule.plan());                      // the model executes the plan
//         for (auto& ev : schedule.end_step(t, entropy))  // the new plan applies from t + 1
//             log(ev);
//     }
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <concepts>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sgt/allocation.hpp"
#include "sgt/core/error.hpp"
#include "sgt/entropy.hpp"
#include "sgt/growth.hpp"
#include "sgt/loop_plan.hpp"
#include "sgt/schedule_contract.hpp"

namespace sgt {


namespace detail {

inline nlohmann::json plan_to_json(const loop_plan& p) {
    auto j = nlohmann::json::array();
    for (const auto& x : p.layers)
        j.push_back({{"k", x.k}, {"heads", x.heads}, {"fade", x.fade}, {"block_repeat", x.block_repeat}});
    return j;
}
inline loop_plan plan_from_json(const nlohmann::json& j) {
    loop_plan p;
    for (const auto& x : j)
        p.layers.push_back(layer_loop{.k = x.at("k").get<int>(), .heads = x.at("heads").get<std::vector<int>>(),
                                      .fade = x.at("fade").get<double>(),
                                      .block_repeat = x.at("block_repeat").get<int>()});
    return p;
}
inline void check_next_step(std::string_view who, int last_step, int t) {
    require(t == last_step + 1, "{}: expected step {} (steps count from 1, one at a time), found {}", who,
            last_step + 1, t);
}
inline void check_schedule_json(const nlohmann::json& j, std::string_view expected) {
    const auto found = j.value("schedule", std::string("none"));
    require(found == expected, "schedule: expected saved state of \"{}\", found \"{}\"", expected, found);
}
inline void check_layer(std::string_view who, int layer, int n_layers) {
    require(layer >= 0 && layer < n_layers, "{}: layer {} is out of range [0, {})", who, layer, n_layers);
}

}  // namespace detail

// Vanilla: no loops, ever.
class vanilla_schedule {
public:
    explicit vanilla_schedule(int n_layers) : plan_(loop_plan::vanilla(n_layers)) {
        require(n_layers >= 1, "vanilla schedule: expected at least one layer, found {}", n_layers);
    }
    const loop_plan& plan() const { return plan_; }
    std::vector<growth_event> end_step(int t, const entropy_report&) {
        detail::check_next_step(name(), last_step_, t);
        last_step_ = t;
        return {};
    }
    std::string name() const { return "vanilla"; }
    nlohmann::json to_json() const {
        return {{"schedule", name()}, {"layers", plan_.layers.size()}, {"last_step", last_step_}};
    }
    void load_json(const nlohmann::json& j) {
        detail::check_schedule_json(j, name());
        require(j.at("layers").get<std::size_t>() == plan_.layers.size(),
                "vanilla schedule: expected {} layers, found {}", plan_.layers.size(), j.at("layers").get<int>());
        last_step_ = j.at("last_step").get<int>();
    }

private:
    loop_plan plan_;
    int last_step_ = 0;
};

// One explicit plan for every step (validated against the model's head count).
class static_schedule {
public:
    static_schedule(loop_plan plan, int n_heads, std::string name = "static")
        : plan_(std::move(plan)), heads_(n_heads), name_(std::move(name)) {
        validate_plan(plan_, static_cast<int>(plan_.layers.size()), heads_);
    }
    const loop_plan& plan() const { return plan_; }
    std::vector<growth_event> end_step(int t, const entropy_report&) {
        detail::check_next_step(name_, last_step_, t);
        last_step_ = t;
        return {};
    }
    std::string name() const { return name_; }
    nlohmann::json to_json() const {
        return {{"schedule", "static"}, {"name", name_}, {"heads", heads_}, {"plan", detail::plan_to_json(plan_)},
                {"last_step", last_step_}};
    }
    void load_json(const nlohmann::json& j) {
        detail::check_schedule_json(j, "static");
        auto plan = detail::plan_from_json(j.at("plan"));
        validate_plan(plan, static_cast<int>(plan_.layers.size()), heads_);
        plan_ = std::move(plan);
        name_ = j.at("name").get<std::string>();
        last_step_ = j.at("last_step").get<int>();
    }

private:
    loop_plan plan_;
    int heads_;
    std::string name_;
    int last_step_ = 0;
};

// Attention Loop (Table 2): one layer, K loop steps over all heads (Eq. 6 with S = all heads), from step 1.
inline static_schedule attention_loop(int n_layers, int n_heads, int layer, int k = 1) {
    detail::check_layer("attention loop", layer, n_layers);
    require(k >= 1, "attention loop: expected K ≥ 1, found {}", k);
    loop_plan p = loop_plan::vanilla(n_layers);
    p.layers[layer].k = k;
    p.layers[layer].heads = all_heads{}.select(std::vector<double>(std::size_t(n_heads), 0.0), n_heads);
    return static_schedule(std::move(p), n_heads, "attention_loop");
}

// Block Loop (spec Sec. 5): L layers, each applied `repeat` times as a whole block (attention + FFN).
// given(): the layers are known (the paper picks them on a separate vanilla run of t_start steps) and loop from
// step 1. by_entropy(): this run picks the top-L Ē layers, not excluded, at the end of step t_start and loops
// them from step t_start + 1.
class block_loop_schedule {
public:
    static block_loop_schedule given(int n_layers, std::vector<int> layers, int repeat = 2) {
        block_loop_schedule s(n_layers, static_cast<int>(layers.size()), 0, {}, repeat);
        require(!layers.empty(), "block loop: expected at least one layer, found none");
        std::sort(layers.begin(), layers.end());
        for (int l : layers) detail::check_layer("block loop", l, n_layers);
        const auto dup = std::adjacent_find(layers.begin(), layers.end());
        require(dup == layers.end(), "block loop: layer {} is listed twice", dup == layers.end() ? 0 : *dup);
        s.looped_ = std::move(layers);
        s.rebuild_plan();
        return s;
    }
    static block_loop_schedule by_entropy(int n_layers, int L, int t_start, std::vector<int> excluded = {0},
                                          int repeat = 2) {
        require(t_start >= 1, "block loop: t_start must be at least 1, found {}", t_start);
        auto ex = excluded;
        std::sort(ex.begin(), ex.end());
        for (int l : ex) detail::check_layer("block loop (excluded)", l, n_layers);
        const auto dup = std::adjacent_find(ex.begin(), ex.end());
        require(dup == ex.end(), "block loop: excluded layer {} is listed twice", dup == ex.end() ? 0 : *dup);
        const int eligible = n_layers - static_cast<int>(ex.size());
        require(L >= 1 && L <= eligible, "block loop: L must be in [1, {}] (the layers not excluded), found {}",
                eligible, L);
        return block_loop_schedule(n_layers, L, t_start, std::move(excluded), repeat);
    }

    const loop_plan& plan() const { return plan_; }
    std::vector<growth_event> end_step(int t, const entropy_report& e) {
        detail::check_next_step(name(), last_step_, t);
        std::vector<growth_event> events;
        if (t == t_start_) {
            require(e.layers == n_layers_, "block loop: step {} chooses the layers but the entropy report has {} layers, expected {}",
                    t, e.layers, n_layers_);
            const auto means = e.layer_means();
            const auto C = candidate_layers(means, L_, excluded_);
            looped_ = C;
            std::sort(looped_.begin(), looped_.end());
            for (int l : looped_) {
                growth_event ev;
                ev.step = t;
                ev.kind = growth_event_kind::activate_block;
                ev.layer = l;
                ev.block_repeat = repeat_;
                ev.candidates = C;
                for (int c : C) ev.candidate_entropy.push_back(means[c]);
                const auto he = e.layer_heads(l);
                ev.head_entropy.assign(he.begin(), he.end());
                events.push_back(std::move(ev));
            }
            rebuild_plan();
        }
        last_step_ = t;
        return events;
    }
    std::string name() const { return "block_loop"; }
    const std::vector<int>& looped_layers() const { return looped_; }

    nlohmann::json to_json() const {
        return {{"schedule", name()}, {"layers", n_layers_}, {"L", L_},           {"t_start", t_start_},
                {"excluded", excluded_}, {"repeat", repeat_}, {"looped", looped_}, {"last_step", last_step_}};
    }
    void load_json(const nlohmann::json& j) {
        detail::check_schedule_json(j, name());
        require(j.at("layers").get<int>() == n_layers_, "block loop: expected {} layers, found {}", n_layers_,
                j.at("layers").get<int>());
        auto looped = j.at("looped").get<std::vector<int>>();
        for (int l : looped) detail::check_layer("block loop", l, n_layers_);
        L_ = j.at("L").get<int>();
        t_start_ = j.at("t_start").get<int>();
        excluded_ = j.at("excluded").get<std::vector<int>>();
        repeat_ = j.at("repeat").get<int>();
        looped_ = std::move(looped);
        last_step_ = j.at("last_step").get<int>();
        rebuild_plan();
    }

private:
    block_loop_schedule(int n_layers, int L, int t_start, std::vector<int> excluded, int repeat)
        : n_layers_(n_layers), L_(L), t_start_(t_start), excluded_(std::move(excluded)), repeat_(repeat),
          plan_(loop_plan::vanilla(n_layers)) {
        require(n_layers >= 1, "block loop: expected at least one layer, found {}", n_layers);
        require(repeat >= 2, "block loop: repeat must be at least 2 (1 is no loop), found {}", repeat);
    }
    void rebuild_plan() {
        plan_ = loop_plan::vanilla(n_layers_);
        for (int l : looped_) plan_.layers[l].block_repeat = repeat_;
    }

    int n_layers_;
    int L_;
    int t_start_;  // 0: layers given, looping from step 1
    std::vector<int> excluded_;
    int repeat_;
    std::vector<int> looped_;  // ascending
    int last_step_ = 0;
    loop_plan plan_;
};

// What the head loop runs before its heads are chosen: nothing (a plain transformer), or the loop over all
// heads (the authors' release computes every head until the selection; this is what Table 2's FLOPs count).
enum class before_selection { vanilla, all_heads };

struct head_loop_options {
    int layer = 0;    // the looping layer, 0-based (Table 2 uses 1, 7, 15)
    int h = 2;        // heads to loop
    int k = 1;        // loop steps
    int t_start = 250;  // the heads are chosen at the end of this step and loop from the next
    sgt::before_selection before = sgt::before_selection::vanilla;
};

// The entropy head loop on one fixed layer (Table 2's High-/Low-Entropy Loop with top_h / bottom_h, or any
// allocation policy): h heads chosen by the policy from the layer's head entropies at the end of t_start.
template <allocation_policy Policy = top_h>
class head_loop_schedule {
public:
    head_loop_schedule(int n_layers, int n_heads, head_loop_options options, Policy policy = Policy())
        : n_layers_(n_layers), n_heads_(n_heads), options_(options), policy_(std::move(policy)) {
        detail::check_layer("head loop", options_.layer, n_layers);
        require(options_.h >= 1 && options_.h <= n_heads, "head loop: h must be in [1, {}] (the head count), found {}",
                n_heads, options_.h);
        require(options_.k >= 1, "head loop: K must be at least 1, found {}", options_.k);
        require(options_.t_start >= 1, "head loop: t_start must be at least 1, found {}", options_.t_start);
        rebuild_plan();
    }

    const loop_plan& plan() const { return plan_; }
    std::vector<growth_event> end_step(int t, const entropy_report& e) {
        detail::check_next_step(name(), last_step_, t);
        std::vector<growth_event> events;
        if (t == options_.t_start) {
            require(e.layers == n_layers_ && e.heads == n_heads_,
                    "head loop: step {} chooses the heads but the entropy report is {} x {}, expected {} x {}", t,
                    e.layers, e.heads, n_layers_, n_heads_);
            const int l = options_.layer;
            const auto he = e.layer_heads(l);
            selected_ = policy_.select(he, options_.h);
            growth_event ev;
            ev.step = t;
            ev.kind = growth_event_kind::activate;
            ev.layer = l;
            ev.k = options_.k;
            ev.heads = selected_;
            ev.candidates = {l};
            ev.candidate_entropy = {e.layer_mean(l)};
            ev.head_entropy.assign(he.begin(), he.end());
            events.push_back(std::move(ev));
            rebuild_plan();
        }
        last_step_ = t;
        return events;
    }
    std::string name() const { return fmt::format("head_loop({})", policy_.name()); }
    const std::vector<int>& selected() const { return selected_; }

    nlohmann::json to_json() const {
        nlohmann::json j = {{"schedule", "head_loop"},
                            {"layers", n_layers_},
                            {"heads", n_heads_},
                            {"layer", options_.layer},
                            {"h", options_.h},
                            {"k", options_.k},
                            {"t_start", options_.t_start},
                            {"before", options_.before == before_selection::vanilla ? "vanilla" : "all_heads"},
                            {"selected", selected_},
                            {"last_step", last_step_},
                            {"policy", {{"name", policy_.name()}}}};
        if constexpr (stateful_allocation_policy<Policy>) j["policy"] = policy_.to_json();
        return j;
    }
    void load_json(const nlohmann::json& j) {
        detail::check_schedule_json(j, "head_loop");
        require(j.at("layers").get<int>() == n_layers_ && j.at("heads").get<int>() == n_heads_,
                "head loop: expected a model of {} x {}, found {} x {}", n_layers_, n_heads_, j.at("layers").get<int>(),
                j.at("heads").get<int>());
        const auto policy_name = j.at("policy").at("name").get<std::string>();
        require(policy_name == policy_.name(), "head loop: expected allocation policy {}, found {}", policy_.name(),
                policy_name);
        const auto before = j.at("before").get<std::string>();
        require(before == "vanilla" || before == "all_heads", "head loop: expected before = vanilla or all_heads, found {}",
                before);
        head_loop_schedule restored(n_layers_, n_heads_,
                                    {.layer = j.at("layer").get<int>(), .h = j.at("h").get<int>(),
                                     .k = j.at("k").get<int>(), .t_start = j.at("t_start").get<int>(),
                                     .before = before == "vanilla" ? before_selection::vanilla
                                                                   : before_selection::all_heads},
                                    policy_);
        restored.selected_ = j.at("selected").get<std::vector<int>>();
        for (int i : restored.selected_)
            require(i >= 0 && i < n_heads_, "head loop: selected head {} is out of range [0, {})", i, n_heads_);
        restored.last_step_ = j.at("last_step").get<int>();
        if constexpr (stateful_allocation_policy<Policy>) restored.policy_.load_json(j.at("policy"));
        restored.rebuild_plan();
        *this = std::move(restored);
    }

private:
    void rebuild_plan() {
        plan_ = loop_plan::vanilla(n_layers_);
        auto& p = plan_.layers[options_.layer];
        if (!selected_.empty()) {
            p.k = options_.k;
            p.heads = selected_;
        } else if (options_.before == before_selection::all_heads) {
            p.k = options_.k;
            p.heads = all_heads{}.select(std::vector<double>(std::size_t(n_heads_), 0.0), n_heads_);
        }
    }

    int n_layers_;
    int n_heads_;
    head_loop_options options_;
    Policy policy_;
    std::vector<int> selected_;  // S, empty until chosen
    int last_step_ = 0;
    loop_plan plan_;
};

static_assert(resumable_schedule<growth_operator<top_h>>, "growth_operator must be a loop schedule");
static_assert(resumable_schedule<vanilla_schedule> && resumable_schedule<static_schedule> &&
              resumable_schedule<block_loop_schedule> && resumable_schedule<head_loop_schedule<top_h>>);

}  // namespace sgt
