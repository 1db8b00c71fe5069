// sgt/growth.hpp: the growth operator 𝒪 and its state Θ_t (spec Sec. 4; the paper's Eq. 8-11, Algorithm 1).
//
// Θ_t = { 𝓛 (active looping layers), l* (growing layer), K_l, S_l, phase } decides which layers loop, over which
// heads and how deep. The trainer asks plan() for the structure of the next step and, after each step t
// (counting from 1), hands the step's attention entropies to end_step(t, e), which applies Algorithm 1 on the
// decision steps t_start, t_start + Δt, ... and returns what changed as events. The new structure applies from
// step t + 1. Algorithm 1 itself is growth_operator::apply_algorithm_1, the one place it is written.
//
// Deviations from the paper, as the spec states them: line 20 tests |𝓛| < L (the paper's |C| < L is a typo);
// excluded layers (default: the first) never enter the candidate pool C; a newly activated layer runs its
// first loop over all heads for one window with a decaying gain on the non-selected heads (fade, as the
// authors released it; `hard` switches that off); `release_rules` turns on the release's differences (a), (b),
// (d) of spec Sec. 4, and (e) is the fade_shape option. (c), "a window follows every change", needs no code
// here: every decision either changes the structure, so the next decision is Δt later, or (with (b)) fixes it,
// so the release's decision steps are the paper's t_start + nΔt.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sgt/allocation.hpp"
#include "sgt/config.hpp"
#include "sgt/core/enum_names.hpp"
#include "sgt/core/error.hpp"
#include "sgt/entropy.hpp"
#include "sgt/loop_plan.hpp"
#include "sgt/schedule_contract.hpp"

namespace sgt {

enum class growth_direction { deep_to_shallow, shallow_to_deep };  // D2S (Eq. 11, the default) or S2D (Table 3)
enum class growth_transition { fade, hard };  // how a newly activated layer's first loop starts
enum class fade_shape { linear, cosine, exponential };
enum class growth_phase { warm_up, growing, fixed };

namespace detail {

template <>
struct enum_names<growth_direction> {
    static constexpr std::string_view what = "growth direction";
    static constexpr std::string_view names[] = {"d2s", "s2d"};
};
template <>
struct enum_names<growth_transition> {
    static constexpr std::string_view what = "growth transition";
    static constexpr std::string_view names[] = {"fade", "hard"};
};
template <>
struct enum_names<fade_shape> {
    static constexpr std::string_view what = "fade shape";
    static constexpr std::string_view names[] = {"linear", "cosine", "exponential"};
};
template <>
struct enum_names<growth_phase> {
    static constexpr std::string_view what = "growth phase";
    static constexpr std::string_view names[] = {"warm_up", "growing", "fixed"};
};

inline bool contains(const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace detail

// Hyper-parameters of 𝒪 (spec Sec. 4). Layers and heads are 0-based.
struct growth_options {
    int t_start = 250;  // the first decision is taken at the end of step t_start
    int dt = 250;       // Δt: decisions every Δt steps after that; also the length of a fade window
    int L = presets::paper_loops.L;          // target number of looping layers
    int k_max = presets::paper_loops.k_max;  // K_max, the loop depth bound
    int h = presets::paper_loops.h;          // heads per looping layer, passed to the allocation policy
    std::vector<int> excluded{0};            // layers never in the candidate pool (the paper: the first)
    growth_direction direction = growth_direction::deep_to_shallow;
    growth_transition transition = growth_transition::fade;
    fade_shape shape = fade_shape::linear;
    // Ê_t = α Ê_{t-1} + (1-α) E_t over every reported step; both the layer ranking (C) and the head choice
    // (S_l) use Ê. 0 = the paper's instantaneous value; the release uses 0.5.
    double ema_alpha = 0.0;
    bool release_rules = false;  // the authors'-release differences (a), (b), (d) of spec Sec. 4

    // The loop budget's h, L and K_max, the paper's schedule (t_start = Δt = 250) otherwise.
    static growth_options from_budget(const loop_budget& b) {
        growth_options o;
        o.h = b.h;
        o.L = b.L;
        o.k_max = b.k_max;
        return o;
    }

    // The authors' release: its rules (a), (b), (d) and the EMA of their code, α = 0.5.
    static growth_options authors_release(const loop_budget& b) {
        growth_options o = from_budget(b);
        o.release_rules = true;
        o.ema_alpha = 0.5;
        return o;
    }

    // Throws sgt::error naming the first bad value, for a model of n_layers layers and n_heads heads.
    void validate(int n_layers, int n_heads) const {
        require(n_layers >= 1 && n_heads >= 1, "growth options: expected a model with layers and heads, found {} x {}",
                n_layers, n_heads);
        require(t_start >= 1, "growth options: t_start must be at least 1 (steps count from 1), found {}", t_start);
        require(dt >= 1, "growth options: dt (the window Δt) must be at least 1, found {}", dt);
        require(k_max >= 1, "growth options: k_max must be at least 1, found {}", k_max);
        require(h >= 1 && h <= n_heads, "growth options: h must be in [1, {}] (the head count), found {}", n_heads, h);
        std::vector<int> ex = excluded;
        std::sort(ex.begin(), ex.end());
        for (int l : ex)
            require(l >= 0 && l < n_layers, "growth options: excluded layer {} is out of range [0, {})", l, n_layers);
        const auto dup = std::adjacent_find(ex.begin(), ex.end());
        require(dup == ex.end(), "growth options: excluded layer {} is listed twice", dup == ex.end() ? 0 : *dup);
        const int eligible = n_layers - static_cast<int>(ex.size());
        require(L >= 1 && L <= eligible,
                "growth options: L must be in [1, {}] (the {} layers minus {} excluded), found {}", eligible, n_layers,
                ex.size(), L);
        require(ema_alpha >= 0.0 && ema_alpha < 1.0, "growth options: ema_alpha must be in [0, 1), found {}",
                ema_alpha);
    }

    bool operator==(const growth_options&) const = default;
};

inline void to_json(nlohmann::json& j, const growth_options& o) {
    j = {{"t_start", o.t_start},
         {"dt", o.dt},
         {"L", o.L},
         {"k_max", o.k_max},
         {"h", o.h},
         {"excluded", o.excluded},
         {"direction", to_string(o.direction)},
         {"transition", to_string(o.transition)},
         {"fade_shape", to_string(o.shape)},
         {"ema_alpha", o.ema_alpha},
         {"release_rules", o.release_rules}};
}
inline void from_json(const nlohmann::json& j, growth_options& o) {
    o.t_start = j.at("t_start").get<int>();
    o.dt = j.at("dt").get<int>();
    o.L = j.at("L").get<int>();
    o.k_max = j.at("k_max").get<int>();
    o.h = j.at("h").get<int>();
    o.excluded = j.at("excluded").get<std::vector<int>>();
    o.direction = detail::parse_enum<growth_direction>(j.at("direction").get<std::string>());
    o.transition = detail::parse_enum<growth_transition>(j.at("transition").get<std::string>());
    o.shape = detail::parse_enum<fade_shape>(j.at("fade_shape").get<std::string>());
    o.ema_alpha = j.at("ema_alpha").get<double>();
    o.release_rules = j.at("release_rules").get<bool>();
}

// The gain of the non-selected heads in loop step 1 at step t, for a layer activated at the end of step t_a.
// With j = t - t_a and u = (j - 1) / Δt, the window is j = 1..Δt (u in [0, 1)):
//     linear       f = 1 - u                   (1, 1 - 1/Δt, ..., 1/Δt)
//     cosine       f = (1 + cos(π u)) / 2
//     exponential  f = 0.01^u                  (falls to 1% at the window's end)
// Every f in the window is in (0, 1], so loop step 1 runs all heads for exactly Δt steps; outside the window
// (j < 1 or j > Δt) f = 0 and only S_l runs.
inline double fade_gain(fade_shape shape, int dt, int t, int t_a) {
    const int j = t - t_a;
    if (j < 1 || j > dt) return 0.0;
    const double u = double(j - 1) / dt;
    switch (shape) {
        case fade_shape::linear: return 1.0 - u;
        case fade_shape::cosine: return 0.5 * (1.0 + std::cos(std::numbers::pi * u));
        case fade_shape::exponential: return std::pow(0.01, u);
    }
    return 0.0;
}

// C of Eq. 10: the L layers of highest entropy among those not excluded, highest first; among equal entropies
// the lower layer index ranks first.
inline std::vector<int> candidate_layers(std::span<const double> layer_entropy, int L,
                                         const std::vector<int>& excluded) {
    std::vector<int> order;
    for (int l = 0; l < static_cast<int>(layer_entropy.size()); ++l)
        if (!detail::contains(excluded, l)) order.push_back(l);
    require(L >= 0 && L <= static_cast<int>(order.size()),
            "candidate layers: L must be in [0, {}] (the layers not excluded), found {}", order.size(), L);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return layer_entropy[a] > layer_entropy[b]; });
    order.resize(static_cast<std::size_t>(L));
    return order;
}


// Θ_t (Eq. 8), with what the fade transition and a resumed run need.
struct growth_state {
    growth_phase phase = growth_phase::warm_up;
    std::vector<int> active;              // 𝓛, in activation order
    int growing = -1;                     // l*, -1 = none
    std::vector<int> k;                   // (NL) K_l, 0 where the layer does not loop
    std::vector<std::vector<int>> heads;  // (NL) S_l, ascending; empty where the layer does not loop
    std::vector<int> activated_at;        // (NL) the step at whose end l was activated; 0 = never
    int last_step = 0;                    // the last t given to end_step

    bool operator==(const growth_state&) const = default;
};

inline void to_json(nlohmann::json& j, const growth_state& s) {
    j = {{"phase", to_string(s.phase)}, {"active", s.active},
         {"growing", s.growing},        {"k", s.k},
         {"heads", s.heads},            {"activated_at", s.activated_at},
         {"last_step", s.last_step}};
}
inline void from_json(const nlohmann::json& j, growth_state& s) {
    s.phase = detail::parse_enum<growth_phase>(j.at("phase").get<std::string>());
    s.active = j.at("active").get<std::vector<int>>();
    s.growing = j.at("growing").get<int>();
    s.k = j.at("k").get<std::vector<int>>();
    s.heads = j.at("heads").get<std::vector<std::vector<int>>>();
    s.activated_at = j.at("activated_at").get<std::vector<int>>();
    s.last_step = j.at("last_step").get<int>();
}

// Readable one-line summary: phase, last step, l*, then each active layer (activation order) with K and S.
inline std::string to_string(const growth_state& s) {
    std::string out = fmt::format("{} after step {}, l* = ", to_string(s.phase), s.last_step);
    out += s.growing < 0 ? std::string("none") : fmt::format("{}", s.growing);
    for (int l : s.active) out += fmt::format(" | layer {} K={} S={{{}}}", l, s.k[l], fmt::join(s.heads[l], ","));
    return out;
}


// The growth operator 𝒪. Policy is the allocation operator 𝒜 that picks S_l at activation (Eq. 7).
template <allocation_policy Policy = top_h>
class growth_operator {
public:
    growth_operator(int n_layers, int n_heads, growth_options options = {}, Policy policy = Policy())
        : layers_(n_layers), heads_(n_heads), options_(std::move(options)), policy_(std::move(policy)),
          ema_(0.0) {
        options_.validate(n_layers, n_heads);
        ema_ = entropy_ema(options_.ema_alpha);
        state_.k.assign(n_layers, 0);
        state_.heads.assign(n_layers, {});
        state_.activated_at.assign(n_layers, 0);
        rebuild_plan();
    }
    growth_operator(const model_shape& shape, growth_options options = {}, Policy policy = Policy())
        : growth_operator(shape.layers, shape.heads, std::move(options), std::move(policy)) {}

    // The structure to run at the next step, last_step() + 1 (the fade gains for that step included).
    const loop_plan& plan() const { return plan_; }

    // Ends step t (t = last_step() + 1): smooths the entropies, closes fade windows that end at t, and on a
    // decision step applies Algorithm 1. Returns the events in the order they happened; the new structure is
    // plan(), for step t + 1. An empty report (layers == 0) means "not measured this step": allowed except
    // before a decision that has no earlier measurement to use.
    std::vector<growth_event> end_step(int t, const entropy_report& e) {
        require(t == state_.last_step + 1, "growth operator: expected step {} (steps count from 1, one at a time), found {}",
                state_.last_step + 1, t);
        if (e.layers != 0) observe(e);
        std::vector<growth_event> events;
        if (options_.transition == growth_transition::fade)
            for (int l : state_.active)
                if (state_.activated_at[l] + options_.dt == t)
                    events.push_back(make_event(t, growth_event_kind::fade_end, l, {}));
        const bool decision = state_.phase != growth_phase::fixed && t >= options_.t_start &&
                              (t - options_.t_start) % options_.dt == 0;
        if (decision) {
            require(!ema_.empty(), "growth operator: step {} is a decision step but no entropy has been reported yet", t);
            for (auto& ev : apply_algorithm_1(t)) events.push_back(std::move(ev));
        }
        state_.last_step = t;
        rebuild_plan();
        return events;
    }

    const growth_state& state() const { return state_; }
    const growth_options& options() const { return options_; }
    const Policy& policy() const { return policy_; }
    int layers() const { return layers_; }
    int heads() const { return heads_; }
    int last_step() const { return state_.last_step; }
    // Ê: the smoothed head entropies (NL, NH) the decisions use; empty before the first report.
    const std::vector<double>& smoothed_entropy() const { return ema_.value(); }
    std::string name() const { return fmt::format("sgt({})", policy_.name()); }

    nlohmann::json to_json() const {
        nlohmann::json j = {{"schedule", "sgt"},   {"layers", layers_},    {"heads", heads_},
                            {"options", options_}, {"state", state_},      {"ema", ema_.value()},
                            {"policy", {{"name", policy_.name()}}}};
        if constexpr (stateful_allocation_policy<Policy>) j["policy"] = policy_.to_json();
        return j;
    }
    // Restores options, Θ, the entropy average and the policy's state saved by to_json(). The model shape and
    // the policy kind must match this operator's. Nothing changes when the JSON is rejected.
    void load_json(const nlohmann::json& j) {
        require(j.value("schedule", std::string()) == "sgt", "growth operator: expected an \"sgt\" schedule, found {}",
                j.value("schedule", std::string("none")));
        require(j.at("layers").get<int>() == layers_ && j.at("heads").get<int>() == heads_,
                "growth operator: expected a model of {} layers x {} heads, found {} x {}", layers_, heads_,
                j.at("layers").get<int>(), j.at("heads").get<int>());
        const auto policy_name = j.at("policy").at("name").get<std::string>();
        require(policy_name == policy_.name(), "growth operator: expected allocation policy {}, found {}",
                policy_.name(), policy_name);
        auto options = j.at("options").get<growth_options>();
        options.validate(layers_, heads_);
        auto state = j.at("state").get<growth_state>();
        check_state(state, options);
        const auto ema_value = j.at("ema").get<std::vector<double>>();
        require(ema_value.empty() || ema_value.size() == std::size_t(layers_) * heads_,
                "growth operator: expected {} smoothed entropies, found {}", std::size_t(layers_) * heads_,
                ema_value.size());
        Policy policy = policy_;
        if constexpr (stateful_allocation_policy<Policy>) policy.load_json(j.at("policy"));
        options_ = std::move(options);
        state_ = std::move(state);
        policy_ = std::move(policy);
        ema_ = entropy_ema(options_.ema_alpha);
        if (!ema_value.empty()) ema_.update(ema_value);
        rebuild_plan();
    }
    static growth_operator from_json(const nlohmann::json& j, Policy policy = Policy()) {
        growth_operator op(j.at("layers").get<int>(), j.at("heads").get<int>(), j.at("options").get<growth_options>(),
                           std::move(policy));
        op.load_json(j);
        return op;
    }

    // Readable summary: Θ, plus the fade gain each active layer runs with at the next step.
    std::string to_string() const {
        std::string out = name() + ": " + sgt::to_string(state_);
        for (int l : state_.active)
            if (plan_.layers[l].fade > 0.0) out += fmt::format(" | layer {} fade {:.3f}", l, plan_.layers[l].fade);
        return out;
    }

private:
    // Algorithm 1, lines 16-25 (Eq. 10, 11), at the end of decision step t, on the smoothed entropies Ê.
    std::vector<growth_event> apply_algorithm_1(int t) {
        const auto& o = options_;
        auto& s = state_;
        std::vector<double> layer_entropy(layers_);
        for (int l = 0; l < layers_; ++l) layer_entropy[l] = layer_mean(l);
        const std::vector<int> C = candidate_layers(layer_entropy, o.L, o.excluded);  // line 17, Eq. 10
        const auto in_C = [&](int l) { return detail::contains(C, l); };
        std::vector<growth_event> events;
        if (s.phase == growth_phase::warm_up) s.phase = growth_phase::growing;

        int deepen = -1;  // lines 18-19
        if (o.release_rules) {  // (a): any active layer still in C below K_max, in activation order
            for (int l : s.active)
                if (in_C(l) && s.k[l] < o.k_max) {
                    deepen = l;
                    break;
                }
        } else if (s.growing >= 0 && in_C(s.growing) && s.k[s.growing] < o.k_max) {
            deepen = s.growing;
        }

        if (deepen >= 0) {
            ++s.k[deepen];
            events.push_back(make_event(t, growth_event_kind::deepen, deepen, C));
        } else if (static_cast<int>(s.active.size()) < o.L) {  // line 20, with |𝓛| for the paper's typo |C|
            // Eq. 11: R = {l ∈ C : l ∉ 𝓛, l beyond the active layers in the growth direction}; min/max ∅ = ±∞.
            const bool d2s = o.direction == growth_direction::deep_to_shallow;
            std::vector<int> R;
            for (int l : C) {
                const bool beyond = s.active.empty() ||
                                    (d2s ? l < *std::min_element(s.active.begin(), s.active.end())
                                         : l > *std::max_element(s.active.begin(), s.active.end()));
                if (!detail::contains(s.active, l) && beyond) R.push_back(l);
            }
            if (!R.empty()) {  // lines 21-24
                const int l_new = d2s ? *std::max_element(R.begin(), R.end()) : *std::min_element(R.begin(), R.end());
                s.growing = l_new;
                if constexpr (layer_allocation_policy<Policy>)
                    s.heads[l_new] = policy_.select_layer(l_new, head_entropy(l_new), o.h);
                else
                    s.heads[l_new] = policy_.select(head_entropy(l_new), o.h);
                s.active.push_back(l_new);
                s.k[l_new] = 1;
                s.activated_at[l_new] = t;
                events.push_back(make_event(t, growth_event_kind::activate, l_new, C));
            }
        }

        // Fixed phase: the target structure is reached (no further change is possible); with the release
        // rules also when this decision changed nothing ((b): no eligible new layer fixes the structure).
        const bool all_layers = static_cast<int>(s.active.size()) == o.L;
        const bool at_depth =
            o.release_rules ? std::all_of(s.active.begin(), s.active.end(), [&](int l) { return s.k[l] == o.k_max; })
                            : s.growing >= 0 && s.k[s.growing] == o.k_max;
        if ((all_layers && at_depth) || (o.release_rules && events.empty())) {
            s.phase = growth_phase::fixed;
            events.push_back(make_event(t, growth_event_kind::fix, s.growing, C));
        }
        return events;
    }

    // Smooths one step's entropies into Ê. With the release rules (d), a looping layer's selected heads
    // contribute the entropy of their last loop step (where the report has it), the others the first pass.
    void observe(const entropy_report& e) {
        const std::size_t n = std::size_t(layers_) * heads_;
        require(e.layers == layers_ && e.heads == heads_ && e.first_pass.size() == n,
                "growth operator: expected an entropy report of {} layers x {} heads, found {} x {} ({} values)", layers_,
                heads_, e.layers, e.heads, e.first_pass.size());
        require(e.last_loop.empty() || e.last_loop.size() == n,
                "growth operator: expected {} last-loop entropies or none, found {}", n, e.last_loop.size());
        std::vector<double> x = e.first_pass;
        if (options_.release_rules && !e.last_loop.empty())
            for (int l : state_.active)
                for (int i : state_.heads[l]) {
                    const double v = e.last_loop[std::size_t(l) * heads_ + i];
                    if (!std::isnan(v)) x[std::size_t(l) * heads_ + i] = v;
                }
        for (std::size_t i = 0; i < n; ++i)
            require(std::isfinite(x[i]), "growth operator: entropy of layer {} head {} is not finite ({})",
                    i / heads_, i % heads_, x[i]);
        ema_.update(x);
    }

    std::span<const double> head_entropy(int l) const {
        return {ema_.value().data() + std::size_t(l) * heads_, std::size_t(heads_)};
    }
    double layer_mean(int l) const {
        double sum = 0.0;
        for (double v : head_entropy(l)) sum += v;
        return sum / heads_;
    }

    growth_event make_event(int t, growth_event_kind kind, int l, const std::vector<int>& C) const {
        growth_event ev;
        ev.step = t;
        ev.kind = kind;
        ev.layer = l;
        ev.k = l >= 0 ? state_.k[l] : 0;
        if (l >= 0) ev.heads = state_.heads[l];
        ev.candidates = C;
        for (int c : C) ev.candidate_entropy.push_back(layer_mean(c));
        if (l >= 0 && !ema_.empty()) {
            const auto he = head_entropy(l);
            ev.head_entropy.assign(he.begin(), he.end());
        }
        return ev;
    }

    void check_state(const growth_state& s, const growth_options& o) const {
        const auto n = std::size_t(layers_);
        require(s.k.size() == n && s.heads.size() == n && s.activated_at.size() == n,
                "growth operator: expected per-layer state for {} layers, found K {}, S {}, activation {}", n,
                s.k.size(), s.heads.size(), s.activated_at.size());
        require(static_cast<int>(s.active.size()) <= o.L, "growth operator: {} active layers exceed L = {}",
                s.active.size(), o.L);
        for (int l : s.active) {
            require(l >= 0 && l < layers_, "growth operator: active layer {} is out of range [0, {})", l, layers_);
            require(s.k[l] >= 1 && s.k[l] <= o.k_max, "growth operator: layer {} has K = {}, expected [1, {}]", l,
                    s.k[l], o.k_max);
            for (int i : s.heads[l])
                require(i >= 0 && i < heads_, "growth operator: layer {} loops head {}, out of range [0, {})", l, i,
                        heads_);
        }
        require(s.growing == -1 || detail::contains(s.active, s.growing),
                "growth operator: growing layer {} is not active", s.growing);
        require(s.last_step >= 0, "growth operator: last step must not be negative, found {}", s.last_step);
    }

    // The plan of step last_step + 1.
    void rebuild_plan() {
        plan_ = loop_plan::vanilla(layers_);
        const int next = state_.last_step + 1;
        for (int l : state_.active) {
            auto& p = plan_.layers[l];
            p.k = state_.k[l];
            p.heads = state_.heads[l];
            p.fade = options_.transition == growth_transition::fade
                         ? fade_gain(options_.shape, options_.dt, next, state_.activated_at[l])
                         : 0.0;
        }
    }

    int layers_;
    int heads_;
    growth_options options_;
    Policy policy_;
    entropy_ema ema_;
    growth_state state_;
    loop_plan plan_;
};

}  // namespace sgt

template <>
struct fmt::formatter<sgt::growth_state> : fmt::formatter<std::string_view> {
    auto format(const sgt::growth_state& s, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(sgt::to_string(s), ctx);
    }
};
template <>
struct fmt::formatter<sgt::growth_event> : fmt::formatter<std::string_view> {
    auto format(const sgt::growth_event& e, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(sgt::to_string(e), ctx);
    }
};
template <class Policy>
struct fmt::formatter<sgt::growth_operator<Policy>> : fmt::formatter<std::string_view> {
    auto format(const sgt::growth_operator<Policy>& g, format_context& ctx) const {
        return fmt::formatter<std::string_view>::format(g.to_string(), ctx);
    }
};
