// sgt/analysis.hpp: what the paper's analysis reads out of a trained model (spec Sec. 8, Fig. 6).
//
// The weighted attention contribution of the last token (the paper's Fig. 6 and 11), per layer, loop step and
// head: for the last query position N of a sequence,
//     C_j = A_{N,j} · ‖V_j‖₂,   j = 0..N,
// where A_{N,j} is the attention weight from the last token to position j and V_j the head's value vector of
// token j (a W_V^(i), before W_O and the fade gain). It is computed from what the last forward() saved, the
// RoPE'd queries, keys and values of every pass (model::attention_passes()), so it works on any backend, with
// or without the attention matrices saved: the last row is recomputed in double, A_{N,j} =
// softmax_j(q_N · k_j / √HD).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "sgt/core/error.hpp"

namespace sgt {

// The last token's attention row in one pass of one head of one sequence.
struct contribution_row {
    int layer = 0;   // 0-based
    int repeat = 0;  // Block Loop repetition of the layer (0 unless the block loops)
    int pass = 0;    // 0: the layer's first attention pass; k: loop step k (Eq. 6)
    int head = 0;    // 0-based head index
    double gain = 1.0;                // the head's gain in this pass (fade transition), 1 otherwise
    std::vector<double> attention;    // (T) A_{N,j}
    std::vector<double> value_norm;   // (T) ‖V_j‖₂
    std::vector<double> contribution; // (T) C_j = A_{N,j} · ‖V_j‖₂
};

// The contribution rows of sequence `b` of the last forward() of model `m`, for every attention pass in
// execution order and every head the pass computed; `keep(layer, pass, head)` selects which (all by default).
template <class Model, class Keep>
std::vector<contribution_row> last_token_contributions(const Model& m, int b, Keep keep) {
    const auto& d = m.dims();
    require(d.B > 0 && d.T > 0, "analysis: the model has not run a forward() yet");
    require(b >= 0 && b < d.B, "analysis: sequence {} requested, expected 0 <= b < B = {}", b, d.B);
    using T = typename Model::value_type;
    const int HD = d.HD, T_ = d.T;
    std::vector<contribution_row> out;
    std::vector<T> host;
    for (const auto& p : m.attention_passes()) {
        const auto& r = *p.record;
        const int n = r.n();
        const std::int64_t row = 3 * std::int64_t(n) * HD;  // one token's q, k, v of the pass's n heads
        host.resize(std::size_t(T_ * row));
        copy_to_host(typename Model::backend_type{}, host.data(), r.qkv.data() + std::int64_t(b) * T_ * row,
                     T_ * row);
        for (int i = 0; i < n; ++i) {
            if (!keep(p.site.layer, p.site.step, r.heads[i])) continue;
            contribution_row c{p.site.layer, p.site.repeat, p.site.step, r.heads[i], r.gains.empty() ? 1.0 : r.gains[std::size_t(i)], {}, {}, {}};
            const auto at = [&](int t, int part, int e) {  // part 0: q, 1: k, 2: v
                return double(host[std::size_t(t * row + (std::int64_t(part) * n + i) * HD + e)]);
            };
            c.attention.resize(T_);
            double mx = -INFINITY;
            for (int j = 0; j < T_; ++j) {
                double dot = 0.0;
                for (int e = 0; e < HD; ++e) dot += at(T_ - 1, 0, e) * at(j, 1, e);
                c.attention[j] = dot / std::sqrt(double(HD));
                mx = std::max(mx, c.attention[j]);
            }
            double z = 0.0;
            for (double& a : c.attention) z += (a = std::exp(a - mx));
            for (double& a : c.attention) a /= z;
            c.value_norm.resize(T_);
            c.contribution.resize(T_);
            for (int j = 0; j < T_; ++j) {
                double s = 0.0;
                for (int e = 0; e < HD; ++e) s += at(j, 2, e) * at(j, 2, e);
                c.value_norm[j] = std::sqrt(s);
                c.contribution[j] = c.attention[j] * c.value_norm[j];
            }
            out.push_back(std::move(c));
        }
    }
    return out;
}

template <class Model>
std::vector<contribution_row> last_token_contributions(const Model& m, int b = 0) {
    return last_token_contributions(m, b, [](int, int, int) { return true; });
}

}  // namespace sgt
