// sgt/schedule_contract.hpp: what a loop schedule is to the trainer, the one contract every method of spec
// Sec. 5 meets (Vanilla, static plans, Block Loop, Attention Loop, head loops, and SGT's growth operator):
//
//     plan()           the loop_plan of the next step
//     end_step(t, e)   ends step t (counting from 1) with that step's entropies; returns what changed, as
//                      growth_events; the new plan applies from step t + 1
//     to_json()        settings and state (a checkpoint's Θ); load_json(j) restores it (resumable schedules)
//     name()           for logs
//
// growth_event, the record of one change of structure, belongs to this contract: every schedule reports its
// changes with it. any_schedule holds any resumable schedule chosen at run time (a program's --variant flag).
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <concepts>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sgt/core/enum_names.hpp"
#include "sgt/entropy.hpp"
#include "sgt/loop_plan.hpp"

namespace sgt {

enum class growth_event_kind { activate, deepen, fade_end, fix, activate_block };

namespace detail {
template <>
struct enum_names<growth_event_kind> {
    static constexpr std::string_view what = "growth event kind";
    static constexpr std::string_view names[] = {"activate", "deepen", "fade_end", "fix", "activate_block"};
};
}  // namespace detail

// One change of structure, logged by the trainer. It happened at the end of `step` and applies from step + 1.
struct growth_event {
    int step = 0;
    growth_event_kind kind = growth_event_kind::activate;
    int layer = -1;
    int k = 0;                              // the layer's K after the event
    std::vector<int> heads;                 // the layer's S
    int block_repeat = 1;                   // the whole-block repeat count (activate_block)
    std::vector<int> candidates;            // C, highest entropy first (empty for fade_end)
    std::vector<double> candidate_entropy;  // Ē of each candidate, same order
    std::vector<double> head_entropy;       // E^(layer, ·): the head entropies the decision saw

    bool operator==(const growth_event&) const = default;
};

inline void to_json(nlohmann::json& j, const growth_event& e) {
    j = {{"step", e.step},
         {"kind", to_string(e.kind)},
         {"layer", e.layer},
         {"k", e.k},
         {"heads", e.heads},
         {"block_repeat", e.block_repeat},
         {"candidates", e.candidates},
         {"candidate_entropy", e.candidate_entropy},
         {"head_entropy", e.head_entropy}};
}
inline void from_json(const nlohmann::json& j, growth_event& e) {
    e.step = j.at("step").get<int>();
    e.kind = detail::parse_enum<growth_event_kind>(j.at("kind").get<std::string>());
    e.layer = j.at("layer").get<int>();
    e.k = j.at("k").get<int>();
    e.heads = j.at("heads").get<std::vector<int>>();
    e.block_repeat = j.at("block_repeat").get<int>();
    e.candidates = j.at("candidates").get<std::vector<int>>();
    e.candidate_entropy = j.at("candidate_entropy").get<std::vector<double>>();
    e.head_entropy = j.at("head_entropy").get<std::vector<double>>();
}

inline std::string to_string(const growth_event& e) {
    std::string out = fmt::format("step {}: {} layer {}", e.step, to_string(e.kind), e.layer);
    if (e.kind == growth_event_kind::activate_block) return out + fmt::format(" x{}", e.block_repeat);
    return out + fmt::format(" K={} S={{{}}}", e.k, fmt::join(e.heads, ","));
}

// plan(): the structure of the next step; end_step(t, e): ends step t, returns the changes; to_json(): the
// schedule's settings and state; name(): for logs.
template <class S>
concept loop_schedule = requires(S& s, const S& cs, int t, const entropy_report& e) {
    { cs.plan() } -> std::same_as<const loop_plan&>;
    { s.end_step(t, e) } -> std::same_as<std::vector<growth_event>>;
    { cs.to_json() } -> std::same_as<nlohmann::json>;
    { cs.name() } -> std::convertible_to<std::string>;
};

// A schedule a checkpoint can restore: load_json(to_json()) resumes it where it was.
template <class S>
concept resumable_schedule = loop_schedule<S> && requires(S& s, const nlohmann::json& j) { s.load_json(j); };

// Any resumable loop schedule, chosen at run time (type erasure: one virtual call per step).
class any_schedule {
public:
    template <resumable_schedule S>
    explicit any_schedule(S s) : p_(std::make_unique<impl<S>>(std::move(s))) {}
    const loop_plan& plan() const { return p_->plan(); }
    std::vector<growth_event> end_step(int t, const entropy_report& e) { return p_->end_step(t, e); }
    nlohmann::json to_json() const { return p_->to_json(); }
    void load_json(const nlohmann::json& j) { p_->load_json(j); }
    std::string name() const { return p_->name(); }

private:
    struct base {
        virtual ~base() = default;
        virtual const loop_plan& plan() const = 0;
        virtual std::vector<growth_event> end_step(int, const entropy_report&) = 0;
        virtual nlohmann::json to_json() const = 0;
        virtual void load_json(const nlohmann::json&) = 0;
        virtual std::string name() const = 0;
    };
    template <class S>
    struct impl final : base {
        explicit impl(S s) : s(std::move(s)) {}
        const loop_plan& plan() const override { return s.plan(); }
        std::vector<growth_event> end_step(int t, const entropy_report& e) override { return s.end_step(t, e); }
        nlohmann::json to_json() const override { return s.to_json(); }
        void load_json(const nlohmann::json& j) override { s.load_json(j); }
        std::string name() const override { return std::string(s.name()); }
        S s;
    };
    std::unique_ptr<base> p_;
};
static_assert(resumable_schedule<any_schedule>);

}  // namespace sgt
