// sgt/gates.hpp: learned head gates, the adaptive sparse attention block (GATES.md Sec. 1-2, 3.1, 6), as a model
// variant built on the pass hook (variant.hpp); the arithmetic is the backend's leaf ops (gate_forward /
// gate_backward of backend/*/gates, head_gain_forward / head_gain_backward per position), so it runs on every
// backend.
//
// On the first attention pass (step 0, every block application) of each gated layer l, head i ≥ n_dense and
// position t:
//
//     k̄_t = prefix mean of the keys,  s_t = σ(w_i · [q_t ; k̄_t] + c_i),  o_t ← s_t · o_t   before W_O
//
// with W_g = `model.layers.l.self_attn.gate.weight` (NH, 2·HD), init 0, and c = `.gate.bias` (NH), init +2 (every
// head starts open, s ≈ 0.88), neither decayed. Straight-through (the default): the forward applies s·[s ≥ θ]
// (a head below θ contributes nothing at that position) and the backward is the soft one's (as if o ← s·o), so
// closed heads can reopen; soft-only applies s in both. The loss gains λ · mean_{b,t,i} s per gated pass, and
// the reported sparsity is the fraction of (position, gated head) pairs with s < θ. The first n_dense heads of a
// layer carry no gate (Sec. 2, hybrid dense heads).
//
// Self-distillation (GATES.md Sec. 4, set_distilling): the pass stays dense (o is not gated) and the gates learn
// the dense model's own head importance τ_{t,i} = ‖W_O^(i) o_{t,i}‖₂ / max_j ‖W_O^(j) o_{t,j}‖₂ (j over every head
// of the pass, dense ones included) by the loss BCE(s, τ), averaged over positions and gated heads, each gated pass
// adding its own (as the λ term, which it replaces). τ is a target (no gradient flows into it); the gates' gradient
// is ∂BCE/∂z = (s − τ) / count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/ranges.h>

#include "sgt/allocation.hpp"
#include "sgt/config.hpp"
#include "sgt/core/buffers.hpp"
#include "sgt/core/json.hpp"
#include "sgt/core/error.hpp"
#include "sgt/params.hpp"
#include "sgt/variant.hpp"

namespace sgt {

struct gate_options {
    double threshold = 0.3;        // θ in (0, 1)
    bool straight_through = true;  // hard forward, soft backward; false: soft-only (θ is then reported only)
    int n_dense = 0;               // ungated heads per layer: the first n_dense by index, in [0, NH]
    double lambda = 0.0;           // λ ≥ 0: the sparsity term λ · mean s of each gated pass
    std::vector<int> layers;       // the gated layers, ascending; empty = all layers
};

// What the gates did in the last forward: per gated layer (all block applications together) and overall.
struct gate_report {
    std::vector<int> layers;             // the gated layers
    std::vector<double> closed;          // (layers) fraction of (position, gated head) pairs with s < θ
    std::vector<double> mean_score;      // (layers) mean s over positions and gated heads
    std::vector<double> head_score;      // (layers, NH) mean s per head over the batch's positions (1 for dense)
    double sparsity = 0.0;               // the closed fraction over every gated pass
    int NH = 0;

    // Mean score of head i of layer l, or -1 when l is not gated (or has not run).
    double score(int l, int i) const {
        const auto it = std::find(layers.begin(), layers.end(), l);
        if (it == layers.end() || head_score.empty()) return -1.0;
        return head_score[std::size_t(it - layers.begin()) * NH + i];
    }
};

class gated_variant : public paper_variant {
public:
    explicit gated_variant(gate_options o = {}) : o_(std::move(o)) { validate(o_); }

    // Refuses options out of range, saying which and what was found.
    static void validate(const gate_options& o) {
        require(o.threshold > 0.0 && o.threshold < 1.0, "gates: expected a threshold θ in (0, 1), found {}",
                o.threshold);
        require(o.lambda >= 0.0, "gates: expected a sparsity weight λ ≥ 0, found {}", o.lambda);
        require(o.n_dense >= 0, "gates: expected n_dense ≥ 0 dense heads, found {}", o.n_dense);
        for (std::size_t i = 0; i < o.layers.size(); ++i) {
            require(o.layers[i] >= 0, "gates: expected gated layers ≥ 0, found {}", o.layers[i]);
            require(i == 0 || o.layers[i] > o.layers[i - 1],
                    "gates: expected the gated layers ascending and distinct, found {} after {}", o.layers[i],
                    o.layers[i - 1]);
        }
    }

    const gate_options& options() const { return o_; }
    // Soft-only training thresholds at inference only (GATES.md Sec. 2): with this on, the forward applies
    // s·[s ≥ θ] whatever the mode (evaluation and decoding of a soft-trained model). Straight-through always does.
    void set_thresholding(bool on) { thresholding_ = on; }
    // Self-distillation (the header's last paragraph): on, the gated passes stay dense and the variant's loss term is
    // BCE(s, τ). The trainer is then to update the gate tensors only (adamw::set_trainable; train --distill-gates).
    void set_distilling(bool on) { distilling_ = on; }
    bool distilling() const { return distilling_; }
    static bool is_gate_parameter(const param_entry& e) {
        return e.name.ends_with(".self_attn.gate.weight") || e.name.ends_with(".self_attn.gate.bias");
    }
    bool thresholding() const { return o_.straight_through || thresholding_; }
    static std::string weight_name(int l) { return layer_param_name(l, "self_attn.gate.weight"); }
    static std::string bias_name(int l) { return layer_param_name(l, "self_attn.gate.bias"); }

    // The options, as a checkpoint's "variant" metadata keeps them (so that decoding runs the same gates), and back.
    nlohmann::json to_json() const {
        return {{"kind", "gates"},         {"threshold", o_.threshold}, {"straight_through", o_.straight_through},
                {"n_dense", o_.n_dense},   {"lambda", o_.lambda},       {"layers", o_.layers}};
    }
    static gate_options options_from_json(const nlohmann::json& j, std::string_view where) {
        require(json_get<std::string>(j, "kind", where) == "gates",
                "{}: expected a variant of kind \"gates\", found {}", where, detail::describe(j["kind"]));
        gate_options o;
        o.threshold = json_get<double>(j, "threshold", where);
        o.straight_through = json_get<bool>(j, "straight_through", where);
        o.n_dense = json_get<int>(j, "n_dense", where);
        o.lambda = json_get<double>(j, "lambda", where);
        o.layers = json_get<std::vector<int>>(j, "layers", where);
        validate(o);
        return o;
    }

    bool gated(int l) const {
        return o_.layers.empty() || std::binary_search(o_.layers.begin(), o_.layers.end(), l);
    }

    // W_g (NH, 2·HD) = 0 and c (NH) = +2 for each gated layer; not decayed. Checks the options against the shape.
    void add_parameters(const model_config& c, parameter_table& t) const {
        const int NL = c.shape.layers, NH = c.shape.heads, HD = c.shape.head_dim;
        require(o_.n_dense <= NH, "gates: expected n_dense ≤ {} (the head count), found {}", NH, o_.n_dense);
        for (int l : o_.layers)
            require(l < NL, "gates: gated layer {} does not exist, expected layers in [0, {})", l, NL);
        for (int l = 0; l < NL; ++l)
            if (gated(l)) {
                t.add(weight_name(l), {NH, 2 * HD}, false, param_init::constant(0.0));
                t.add(bias_name(l), {NH}, false, param_init::constant(2.0));
            }
    }

    // The first pass of each block application of a gated layer, when it has a gated head.
    bool transforms(const pass_site& site, const layer_loop&) const { return gates_pass(site); }

    // saved: o before the gate (N, n, HD), s and g (N, n), packed w (ng, 2·HD) and c (ng), and for the
    // backward ds (N, n), dw (ng, 2·HD), dc (ng).
    template <class T, class Backend>
    double transform_forward(Backend be, pass_context<T, Backend>& c, T* o) {
        const int n = c.n(), HD = c.d.HD, i0 = dense_in(c.heads), ng = n - i0;
        if (ng == 0) return 0.0;  // every head of the pass is dense
        const std::int64_t N = c.d.tokens();
        const layout lay(N, n, HD, ng);
        detail::grow(*c.saved, lay.total);
        T* base = c.saved->data();
        const auto gated_heads = c.heads.subspan(std::size_t(i0));
        gather_head_rows(be, base + lay.w, c.weight(weight_name(c.site.layer)), gated_heads, 1, 2 * HD);
        gather_head_rows(be, base + lay.c, c.weight(bias_name(c.site.layer)), gated_heads, 1, 1);
        copy(be, base + lay.o, o, N * n * HD);
        gate_forward(be, base + lay.s, base + lay.g, c.qkv, base + lay.w, base + lay.c, c.d.B, c.d.T, n, HD, i0,
                     o_.threshold, o_.straight_through || thresholding_);
        if (!distilling_) head_gain_forward(be, o, base + lay.g, N, n, HD, true);

        // The statistics, on the host: sum of s and closed pairs, per head.
        static thread_local std::vector<T> host;
        host.resize(std::size_t(N * n));
        copy_to_host(be, host.data(), base + lay.s, N * n);
        double term = 0.0;
        if (distilling_) term = distill_forward(be, c, o, base + lay.ds, host, i0);
        std::vector<double> head_sum(std::size_t(c.d.NH), 0.0);
        double sum = 0.0, closed = 0.0;
        for (std::int64_t r = 0; r < N; ++r)
            for (int i = i0; i < n; ++i) {
                const double v = to_double(host[std::size_t(r * n + i)]);
                head_sum[std::size_t(c.heads[std::size_t(i)])] += v;
                sum += v;
                closed += v < o_.threshold ? 1.0 : 0.0;
            }
        record(c.site, c.heads, i0, c.d.NH, N, head_sum, sum, closed);
        if (distilling_) return term;
        return ng > 0 ? o_.lambda * sum / double(N * ng) : 0.0;
    }

    template <class T, class Backend>
    bool transform_backward(Backend be, pass_context<T, Backend>& c, T* d_o, T* dqkv) {
        const int n = c.n(), HD = c.d.HD, i0 = dense_in(c.heads), ng = n - i0;
        if (ng == 0) return false;
        const std::int64_t N = c.d.tokens();
        const layout lay(N, n, HD, ng);
        T* base = c.saved->data();
        fill_zero(be, base + lay.dw, std::int64_t(ng) * 2 * HD + ng);  // dw, then dc
        double ds_add = 0.0;
        if (!distilling_) {  // distilling, the forward left ∂BCE/∂s in ds and the pass was not gated
            fill_zero(be, base + lay.ds, N * n);
            // Soft backward in both modes: ∂L/∂s = Σ o·∂L/∂o', ∂L/∂o = s·∂L/∂o'.
            head_gain_backward(be, base + lay.ds, d_o, base + lay.o, base + lay.s, N, n, HD, true);
            ds_add = ng > 0 ? o_.lambda / double(N * ng) : 0.0;
        }
        gate_backward(be, dqkv, base + lay.dw, base + lay.dc, base + lay.ds, base + lay.s, c.qkv, base + lay.w,
                      c.d.B, c.d.T, n, HD, i0, ds_add);
        const auto gated_heads = c.heads.subspan(std::size_t(i0));
        scatter_add_head_rows(be, c.grad(weight_name(c.site.layer)), base + lay.dw, gated_heads, 1, 2 * HD);
        scatter_add_head_rows(be, c.grad(bias_name(c.site.layer)), base + lay.dc, gated_heads, 1, 1);
        return !distilling_;  // distilling, q and k are frozen (and τ a target): their gate gradient is dropped
    }

    // GATES.md Sec. 6: 2·2·HD per gated head and position in the forward (the two dot products), 3× for forward
    // and backward.
    double extra_flops(const model_shape& s, const pass_site& site, const pass_spec& p, int) const {
        if (!gates_pass(site)) return 0.0;
        const auto gated_heads = std::count_if(p.heads.begin(), p.heads.end(), [&](int h) { return h >= o_.n_dense; });
        return 3.0 * 2.0 * 2.0 * s.head_dim * double(gated_heads);
    }

    // The gates of the last forward.
    gate_report report() const {
        gate_report r;
        r.NH = nh_;
        double closed = 0.0, total = 0.0;
        for (std::size_t j = 0; j < stats_.size(); ++j) {
            const auto& st = stats_[j];
            if (st.total == 0.0) continue;
            r.layers.push_back(int(j));
            r.closed.push_back(st.closed / st.total);
            r.mean_score.push_back(st.sum / st.total);
            for (int i = 0; i < nh_; ++i)
                r.head_score.push_back(st.head_count[std::size_t(i)] > 0.0
                                           ? st.head_sum[std::size_t(i)] / st.head_count[std::size_t(i)]
                                           : 1.0);
            closed += st.closed;
            total += st.total;
        }
        r.sparsity = total > 0.0 ? closed / total : 0.0;
        return r;
    }

private:
    struct layer_stats {
        double sum = 0.0, closed = 0.0, total = 0.0;
        std::vector<double> head_sum, head_count;  // (NH)
    };
    struct layout {
        std::int64_t o, s, g, w, c, ds, dw, dc, total;
        layout(std::int64_t N, int n, int HD, int ng) {
            o = 0;
            s = o + N * n * HD;
            g = s + N * n;
            w = g + N * n;
            c = w + std::int64_t(ng) * 2 * HD;
            ds = c + ng;
            dw = ds + N * n;
            dc = dw + std::int64_t(ng) * 2 * HD;
            total = dc + ng;
        }
    };

    // Self-distillation's forward, on the host (a few HD² per position and head): τ from o (N, n, HD) and W_O,
    // BCE(s, τ) over the gated heads (returned), and ∂BCE/∂s into ds (N, n; 0 on the dense heads) for the
    // backward, as (s − τ) / (s (1 − s) count), which gate_backward multiplies by s (1 − s).
    template <class T, class Backend>
    double distill_forward(Backend be, pass_context<T, Backend>& c, const T* o, T* ds, const std::vector<T>& s,
                           int i0) {
        const int n = c.n(), HD = c.d.HD, NH = c.d.NH, C = NH * HD;
        const std::int64_t N = c.d.tokens();
        std::vector<T> oh(std::size_t(N * n * HD)), wo(std::size_t(C) * C);
        copy_to_host(be, oh.data(), o, N * n * HD);
        copy_to_host(be, wo.data(), c.weight(layer_param_name(c.site.layer, "self_attn.o_proj.weight")),
                     std::int64_t(C) * C);
        // G_i = W_O^(i)ᵀ W_O^(i) (HD, HD), W_O^(i) the columns of head i: ‖W_O^(i) o‖² = oᵀ G_i o.
        std::vector<double> G(std::size_t(n) * HD * HD, 0.0);
        for (int i = 0; i < n; ++i) {
            const int col = c.heads[std::size_t(i)] * HD;
            double* g = G.data() + std::size_t(i) * HD * HD;
            for (int r = 0; r < C; ++r) {
                const T* w = wo.data() + std::size_t(r) * C + col;
                for (int a = 0; a < HD; ++a)
                    for (int b = 0; b < HD; ++b) g[a * HD + b] += to_double(w[a]) * to_double(w[b]);
            }
        }
        const double count = double(N) * double(n - i0);
        std::vector<T> dsh(std::size_t(N * n), T(0));
        std::vector<double> norm(static_cast<std::size_t>(n));
        double bce = 0.0;
        for (std::int64_t r = 0; r < N; ++r) {
            double top = 0.0;
            for (int i = 0; i < n; ++i) {
                const T* v = oh.data() + (r * n + i) * HD;
                const double* g = G.data() + std::size_t(i) * HD * HD;
                double q = 0.0;
                for (int a = 0; a < HD; ++a) {
                    double ga = 0.0;
                    for (int b = 0; b < HD; ++b) ga += g[a * HD + b] * to_double(v[b]);
                    q += to_double(v[a]) * ga;
                }
                norm[std::size_t(i)] = std::sqrt(std::max(q, 0.0));
                top = std::max(top, norm[std::size_t(i)]);
            }
            for (int i = i0; i < n; ++i) {
                const double tau = top > 0.0 ? norm[std::size_t(i)] / top : 0.0;
                const double sv = std::clamp(to_double(s[std::size_t(r * n + i)]), 1e-12, 1.0 - 1e-12);
                bce -= tau * std::log(sv) + (1.0 - tau) * std::log(1.0 - sv);
                dsh[std::size_t(r * n + i)] = T((sv - tau) / (sv * (1.0 - sv) * count));
            }
        }
        copy_from_host(be, ds, dsh.data(), N * n);
        return bce / count;
    }

    bool gates_pass(const pass_site& site) const { return site.step == 0 && gated(site.layer); }
    // How many heads of the pass (ascending) are dense: those below n_dense, a prefix.
    int dense_in(std::span<const int> heads) const {
        return int(std::lower_bound(heads.begin(), heads.end(), o_.n_dense) - heads.begin());
    }
    template <class U>
    static double to_double(U v) {
        if constexpr (std::is_arithmetic_v<U>)
            return double(v);
        else
            return double(float(v));
    }
    void record(const pass_site& site, std::span<const int> heads, int i0, int NH, std::int64_t N,
                const std::vector<double>& head_sum, double sum, double closed) {
        nh_ = NH;
        if (stats_.size() <= std::size_t(site.layer)) stats_.resize(std::size_t(site.layer) + 1);
        auto& st = stats_[std::size_t(site.layer)];
        if (site.repeat == 0) st = layer_stats{0.0, 0.0, 0.0, std::vector<double>(std::size_t(NH), 0.0),
                                               std::vector<double>(std::size_t(NH), 0.0)};
        st.sum += sum;
        st.closed += closed;
        st.total += double(N) * double(heads.size() - std::size_t(i0));
        for (std::size_t i = std::size_t(i0); i < heads.size(); ++i) {
            st.head_sum[std::size_t(heads[i])] += head_sum[std::size_t(heads[i])];
            st.head_count[std::size_t(heads[i])] += double(N);
        }
    }

    gate_options o_;
    bool thresholding_ = false;
    bool distilling_ = false;
    std::vector<layer_stats> stats_;  // (NL) the last forward's, by layer (total 0: not gated)
    int nh_ = 0;
};

// GATES.md Sec. 3.2, the learned allocation operator: S_l = the h heads of layer l with the highest mean gate
// score over the batch of the last forward (the step at which Algorithm 1 activates l), ties to the lower index.
// A dense head (no gate, always on) scores 1. It reads the scores of the model's variant, which must outlive it;
// a layer without gates is an error. Plug in as growth_operator<gate_allocation>.
class gate_allocation {
public:
    // Where the scores come from: a slot that can be filled after the policy is made (a schedule is often built
    // before its model; the program then points the slot at model.variant()).
    using source = std::shared_ptr<const gated_variant*>;
    explicit gate_allocation(const gated_variant* gates = nullptr)
        : gates_(std::make_shared<const gated_variant*>(gates)) {}
    explicit gate_allocation(source gates) : gates_(std::move(gates)) {}

    std::vector<int> select_layer(int l, std::span<const double> head_entropy, int h) {
        detail::check_selection(name(), head_entropy, h);
        require(gates_ && *gates_ != nullptr, "allocation gate: expected the gated model's variant, found none");
        const gate_report r = (*gates_)->report();
        require(std::find(r.layers.begin(), r.layers.end(), l) != r.layers.end(),
                "allocation gate: layer {} has no gate scores (gated layers of the last forward: {})", l,
                fmt::join(r.layers, ", "));
        require(r.NH == int(head_entropy.size()), "allocation gate: expected {} heads, found {}", r.NH,
                head_entropy.size());
        std::vector<double> score(head_entropy.size());
        for (std::size_t i = 0; i < score.size(); ++i) score[i] = r.score(l, int(i));
        return detail::arg_extreme(score, h, true);
    }
    std::vector<int> select(std::span<const double>, int) {
        throw error("allocation gate: needs the layer (growth_operator calls select_layer)");
    }
    std::string_view name() const { return "gate"; }

private:
    source gates_;
};

}  // namespace sgt
