// sgt/sigma_reparam.hpp: σReparam (GATES.md Sec. 5, the report's Sec. 3.3), an option of every linear layer of
// the model against attention-entropy collapse. Each linear weight W (out, in) is used through
//
//     Ŵ = (γ / σ) · W,        σ = uᵀ W v  (an estimate of the spectral norm of W)
//
// with γ a learned scalar and u (out), v (in) unit vectors refined by power iteration, not trained:
//
//     v ← Wᵀu / ‖Wᵀu‖,   u ← W v / ‖W v‖      one step per training step
//
// The backward treats σ as the function uᵀWv of W, u and v held fixed for the step (∂σ/∂W = u vᵀ). With
// G = ∂L/∂Ŵ:
//
//     ∂L/∂W = (γ/σ) G − (γ ⟨G, W⟩ / σ²) u vᵀ,        ∂L/∂γ = ⟨G, W⟩ / σ
//
// The linear layers are q, k, v, o, gate, up and down of every decoder layer and the LM head (not the embedding,
// not the RMSNorm weights). γ of weight "<name>" is the parameter "<name>.sigma_gamma" (1), not decayed, appended
// to the model's parameter table (so AdamW updates it and checkpoints save it) and initialised to σ(W₀): u, v start
// as normalised N(0, 1) draws (from the model's seed), take `init_iterations` power-iteration steps, then γ = σ,
// so that Ŵ₀ = W₀ exactly. u and v are the state tensors "<name>.sigma_u" and "<name>.sigma_v" (the model's
// state_table()): saved beside the parameters in model.safetensors, so that a resumed run continues bit for bit.
//
// How the model (model.hpp) uses it, when built with sigma_reparam_options{.enabled = true} (otherwise it holds
// no sigma_reparam at all and nothing changes):
//   forward()   first forward(): in training mode, the first forward after zero_grad() (that is, once per
//               training step, gradient-accumulation micro-batches included) takes one power-iteration step;
//               evaluation forwards do not. Then σ and Ŵ of every linear layer, into a buffer of the Ŵ.
//   weights     the passes read the linear weights from that buffer (weight()), and accumulate their weight
//               gradients into a buffer of the G = ∂L/∂Ŵ (grad()). Both keep the table's order, so W_Q, W_K and
//               W_V stay adjacent (the attention pass uses them as one (3C, C) matrix when it runs every head).
//   backward()  last backward(): G is turned into the W and γ gradients by the equations above, with the σ and
//               γ of the forward, and cleared.
// Backend-generic: W v, Wᵀu, the dot products and the outer product u vᵀ are the matmul leaf ops with N = 1.
//
// Why an option of the model's constructor, not a Variant nor a model_config field: it transforms the weights
// before any pass runs and the weight gradients after all of them, which the pass hook (variant.hpp) does not
// reach; as a run-time option it composes with any Variant (the gates included), leaves the model's type (and
// the template instantiations of programs like examples/train) as they are, and costs nothing when off. The table
// depends on it, so make_parameter_table takes it too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sgt/backend/common.hpp"
#include "sgt/config.hpp"
#include "sgt/core/error.hpp"
#include "sgt/core/precision.hpp"
#include "sgt/core/rng.hpp"
#include "sgt/params.hpp"

namespace sgt {

struct sigma_reparam_options {
    bool enabled = false;
    int init_iterations = 20;  // power-iteration steps at initialisation, before γ = σ(W₀); at least 1
};

// The weights σReparam applies to: q, k, v, o, gate, up, down of every layer, then the LM head.
inline std::vector<std::string> sigma_reparam_weights(const model_shape& s) {
    std::vector<std::string> out;
    for (int l = 0; l < s.layers; ++l)
        for (const char* t : {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                              "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                              "mlp.down_proj.weight"})
            out.push_back(layer_param_name(l, t));
    out.push_back("lm_head.weight");
    return out;
}
inline std::string sigma_gamma_name(std::string_view weight) { return std::string(weight) + ".sigma_gamma"; }
inline std::string sigma_u_name(std::string_view weight) { return std::string(weight) + ".sigma_u"; }
inline std::string sigma_v_name(std::string_view weight) { return std::string(weight) + ".sigma_v"; }
inline bool is_sigma_gamma(const param_entry& e) { return e.name.ends_with(".sigma_gamma"); }

// Appends γ (1) of every linear layer to a model's table: not decayed; the 1 it starts as is replaced by σ(W₀).
inline void add_sigma_reparam_parameters(const model_shape& s, parameter_table& t) {
    for (const auto& w : sigma_reparam_weights(s)) t.add(sigma_gamma_name(w), {1}, false, param_init::constant(1.0));
}

// The state of σReparam: u (out) and v (in) of every linear layer, in sigma_reparam_weights order.
inline parameter_table sigma_reparam_state_table(const model_shape& s, const parameter_table& params) {
    parameter_table t;
    for (const auto& name : sigma_reparam_weights(s)) {
        const param_entry& w = params.at(name);
        t.add(sigma_u_name(name), {w.shape.at(0)}, false, param_init::normal(1.0));
        t.add(sigma_v_name(name), {w.shape.at(1)}, false, param_init::normal(1.0));
    }
    return t;
}

// The weights a σReparam model runs on in an evaluation forward, laid out by `out` (the model's table without the
// γ: inference, export): every linear weight W becomes Ŵ = (γ / σ) W with σ = uᵀ W v from the model's u and v
// (no power-iteration step, as an evaluation forward), every other tensor is copied. get(name) returns the values
// of a parameter or state tensor by name. In double, on the host.
template <class Get>
std::vector<double> fold_sigma_reparam(const parameter_table& out, const model_shape& s, Get&& get) {
    std::vector<double> w(std::size_t(out.numel()));
    for (const auto& e : out) {
        const std::vector<double> x = get(e.name);
        require(std::int64_t(x.size()) == e.numel(), "sigmaReparam: expected {} values of '{}', found {}", e.numel(),
                e.name, x.size());
        std::copy(x.begin(), x.end(), w.begin() + e.offset);
    }
    for (const auto& name : sigma_reparam_weights(s)) {
        const param_entry& e = out.at(name);
        const std::int64_t rows = e.shape.at(0), cols = e.shape.at(1);
        const std::vector<double> u = get(sigma_u_name(name)), v = get(sigma_v_name(name)),
                                  gamma = get(sigma_gamma_name(name));
        require(std::int64_t(u.size()) == rows && std::int64_t(v.size()) == cols && gamma.size() == 1,
                "sigmaReparam: expected u ({}), v ({}) and γ (1) of '{}', found {}, {} and {} values", rows, cols,
                name, u.size(), v.size(), gamma.size());
        double* W = w.data() + e.offset;
        double sigma = 0.0;
        for (std::int64_t r = 0; r < rows; ++r) {
            double wv = 0.0;
            for (std::int64_t c = 0; c < cols; ++c) wv += W[r * cols + c] * v[std::size_t(c)];
            sigma += u[std::size_t(r)] * wv;
        }
        require(sigma > 0.0 && std::isfinite(sigma),
                "sigmaReparam: σ = uᵀWv of '{}' is {}, expected a positive finite spectral-norm estimate", name, sigma);
        const double f = gamma[0] / sigma;
        for (std::int64_t i = 0; i < e.numel(); ++i) W[i] *= f;
    }
    return w;
}

// The state and arithmetic of σReparam for one model: its u, v, the Ŵ buffer and the G buffer.
template <class T, class Backend>
class sigma_reparam {
public:
    template <class U>
    using buffer = typename Backend::template buffer<U>;

    // `params`: the model's table, with the γ of add_sigma_reparam_parameters. Valid while the table lives unchanged.
    sigma_reparam(const parameter_table& params, const model_shape& s, std::uint64_t seed,
                  const sigma_reparam_options& o)
        : table_(&params), seed_(seed), init_iterations_(o.init_iterations) {
        require(o.init_iterations >= 1, "sigmaReparam: expected at least 1 initial power-iteration step, found {}",
                o.init_iterations);
        slot_.assign(params.size(), -1);
        state_ = sigma_reparam_state_table(s, params);
        std::int64_t at = 0, longest = 0;
        for (const auto& name : sigma_reparam_weights(s)) {
            const param_entry& w = params.at(name);
            require(w.shape.size() == 2 && w.numel() <= std::numeric_limits<int>::max(),
                    "sigmaReparam: expected '{}' to be a matrix of at most {} elements", name,
                    std::numeric_limits<int>::max());
            linear L{&w, &params.at(sigma_gamma_name(name)), int(w.shape[0]), int(w.shape[1]), at};
            L.u = state_.at(sigma_u_name(name)).offset;
            L.v = state_.at(sigma_v_name(name)).offset;
            slot_[std::size_t(&w - &*params.begin())] = int(linears_.size());
            linears_.push_back(L);
            at += w.numel();
            longest = std::max<std::int64_t>(longest, std::max(L.rows, L.cols));
        }
        uv_.resize(std::size_t(state_.numel()));
        what_.resize(std::size_t(at));
        dhat_.resize(std::size_t(at));
        fill_zero(Backend{}, dhat_.data(), at);
        scratch_.resize(std::size_t(longest + 2));
    }

    // u, v drawn afresh, `init_iterations` power-iteration steps, then γ = σ(W) (so Ŵ = W) in `params`.
    void reset(Backend be, T* params) {
        rng r(seed_ ^ 0x5167A5ull);
        std::vector<T> host(uv_.size());
        for (const auto& e : state_) {
            std::vector<double> x(std::size_t(e.numel()));
            double norm2 = 0.0;
            for (auto& xi : x) {
                xi = r.normal();
                norm2 += xi * xi;
            }
            for (std::size_t i = 0; i < x.size(); ++i)
                host[std::size_t(e.offset) + i] = T(accum_t<T>(x[i] / std::sqrt(norm2)));
        }
        copy_from_host(be, uv_.data(), host.data(), std::int64_t(host.size()));
        for (int i = 0; i < init_iterations_; ++i) power_step(be, params);
        for (auto& L : linears_) {
            L.sigma = L.gamma_value = sigma_of(be, params, L);
            const T g = T(accum_t<T>(L.sigma));
            copy_from_host(be, params + L.gamma->offset, &g, 1);
        }
        pending_ = false;
    }

    // A new training step begins (the model's zero_grad): its first training forward takes a power-iteration step.
    void new_step() { pending_ = true; }

    // σ and Ŵ of every linear layer, after one power-iteration step if training and the step has not had it.
    void forward(Backend be, const T* params, bool training) {
        if (training && pending_) {
            power_step(be, params);
            pending_ = false;
        }
        for (auto& L : linears_) {
            L.sigma = sigma_of(be, params, L);
            L.gamma_value = scalar_to_host(be, params + L.gamma->offset);
            const std::int64_t n = L.w->numel();
            copy(be, what_.data() + L.at, params + L.w->offset, n);
            scale(be, what_.data() + L.at, n, L.gamma_value / L.sigma);
        }
    }

    // Where the passes read entry e's weights and accumulate its gradient: Ŵ and G for a linear layer.
    const T* weight(const param_entry& e, const T* params) const {
        const int i = slot(e);
        return i < 0 ? params + e.offset : what_.data() + linears_[std::size_t(i)].at;
    }
    T* grad(const param_entry& e, T* grads) {
        const int i = slot(e);
        return i < 0 ? grads + e.offset : dhat_.data() + linears_[std::size_t(i)].at;
    }

    // G → the gradients of W and γ (the equations of the header), accumulated into `grads`; G is cleared.
    void backward(Backend be, const T* params, T* grads) {
        T* u_scaled = scratch_.data();
        for (const auto& L : linears_) {
            const std::int64_t n = L.w->numel();
            const T* W = params + L.w->offset;
            T* G = dhat_.data() + L.at;
            const double sigma = L.sigma, gamma = L.gamma_value, gw = dot(be, G, W, int(n));  // ⟨G, W⟩
            add_scalar(be, grads + L.gamma->offset, gw / sigma);                                // ∂L/∂γ
            scale(be, G, n, gamma / sigma);                                                     // (γ/σ) G
            accumulate(be, grads + L.w->offset, G, n);
            copy(be, u_scaled, uv_.data() + L.u, L.rows);                                       // − (γ⟨G,W⟩/σ²) u vᵀ
            scale(be, u_scaled, L.rows, -gamma * gw / (sigma * sigma));
            matmul_backward(be, static_cast<T*>(nullptr), grads + L.w->offset, u_scaled, uv_.data() + L.v, W, 1,
                            L.cols, L.rows);
            fill_zero(be, G, n);
        }
    }

    // The products σReparam adds to a training step, in the FLOPs convention of flops.hpp (matrix products,
    // 2 per multiply-add): per linear layer W (rows x cols, n = rows·cols) the power step's Wᵀu and W v (4n),
    // σ = uᵀ(W v) (2n + 2·rows), ⟨G, W⟩ and the rank-1 u vᵀ term of the backward (4n). The model counts it with
    // every micro-batch; the power step runs once per step, so gradient accumulation over m micro-batches
    // overcounts 4n (m − 1) times, a few millionths of a step.
    double step_flops() const {
        double f = 0.0;
        for (const auto& L : linears_) f += 10.0 * double(L.w->numel()) + 2.0 * L.rows;
        return f;
    }

    // u and v of every linear layer ("<weight>.sigma_u" (out), "<weight>.sigma_v" (in)), in one buffer.
    const parameter_table& state_table() const { return state_; }
    std::vector<T> state_to_host() const { return detail::to_host(Backend{}, std::span<const T>(uv_)); }
    void state_from_host(std::span<const T> host) {
        require(host.size() == uv_.size(), "sigmaReparam: expected {} state values (u, v), found {}", uv_.size(),
                host.size());
        copy_from_host(Backend{}, uv_.data(), host.data(), std::int64_t(host.size()));
    }

    // σ = uᵀWv and Ŵ of weight `name` as of the last forward (Ŵ on the host).
    double sigma(std::string_view name) const { return find(name).sigma; }
    std::vector<T> weight_to_host(std::string_view name) const {
        const linear& L = find(name);
        return detail::to_host(Backend{}, std::span<const T>(what_.data() + L.at, std::size_t(L.w->numel())));
    }

private:
    struct linear {
        const param_entry* w;      // W (rows, cols) = (out, in)
        const param_entry* gamma;  // γ (1)
        int rows, cols;
        std::int64_t at;           // Ŵ at what_ + at, G at dhat_ + at
        std::int64_t u = 0, v = 0; // u (rows) at uv_ + u, v (cols) at uv_ + v
        double sigma = 1.0, gamma_value = 1.0;  // of the last forward
    };

    int slot(const param_entry& e) const {
        const auto i = &e - &*table_->begin();
        return i >= 0 && std::size_t(i) < slot_.size() ? slot_[std::size_t(i)] : -1;
    }
    const linear& find(std::string_view name) const {
        const int i = slot(table_->at(name));
        require(i >= 0, "sigmaReparam: '{}' is not one of the linear layers", name);
        return linears_[std::size_t(i)];
    }

    // v ← Wᵀu / ‖Wᵀu‖, then u ← W v / ‖W v‖, for every linear layer.
    void power_step(Backend be, const T* params) {
        for (const auto& L : linears_) {
            const T* W = params + L.w->offset;
            T *u = uv_.data() + L.u, *v = uv_.data() + L.v;
            fill_zero(be, v, L.cols);
            matmul_backward(be, v, static_cast<T*>(nullptr), u, static_cast<const T*>(nullptr), W, 1, L.cols, L.rows);
            normalise(be, v, L.cols, L);
            matmul_forward(be, u, v, W, 1, L.cols, L.rows);
            normalise(be, u, L.rows, L);
        }
    }

    void normalise(Backend be, T* x, int n, const linear& L) {
        const double norm2 = sum_squares(be, x, n);
        require(norm2 > 0.0 && std::isfinite(norm2),
                "sigmaReparam: power iteration on '{}' found a vector of squared norm {} (an all-zero or non-finite "
                "weight); expected a positive finite norm",
                L.w->name, norm2);
        scale(be, x, n, 1.0 / std::sqrt(norm2));
    }

    // σ = uᵀ (W v).
    double sigma_of(Backend be, const T* params, const linear& L) {
        T* wv = scratch_.data();
        matmul_forward(be, wv, uv_.data() + L.v, params + L.w->offset, 1, L.cols, L.rows);
        const double s = dot(be, uv_.data() + L.u, wv, L.rows);
        require(s > 0.0 && std::isfinite(s),
                "sigmaReparam: σ = uᵀWv of '{}' is {}, expected a positive finite spectral-norm estimate (an "
                "all-zero or non-finite weight?)",
                L.w->name, s);
        return s;
    }

    // aᵀb of two n-vectors: a (1, n) · b (1, n)ᵀ, into the last scratch element.
    double dot(Backend be, const T* a, const T* b, int n) {
        T* out = scratch_.data() + scratch_.size() - 1;
        matmul_forward(be, out, a, b, 1, n, 1);
        return scalar_to_host(be, out);
    }
    static double scalar_to_host(Backend be, const T* x) {
        T h;
        copy_to_host(be, &h, x, 1);
        return double(accum_t<T>(h));
    }
    // *x += value, x in the backend's memory.
    void add_scalar(Backend be, T* x, double value) {
        T* tmp = scratch_.data() + scratch_.size() - 2;
        const T h = T(accum_t<T>(value));
        copy_from_host(be, tmp, &h, 1);
        accumulate(be, x, tmp, 1);
    }

    const parameter_table* table_;
    std::uint64_t seed_;
    int init_iterations_;
    std::vector<int> slot_;        // (table size) index into linears_ per parameter entry, -1 if not linear
    std::vector<linear> linears_;
    parameter_table state_;        // u, v of every linear layer
    buffer<T> uv_;                 // (state_.numel()) u and v
    buffer<T> what_, dhat_;        // (Σ numel of the linear weights) Ŵ and G = ∂L/∂Ŵ
    buffer<T> scratch_;            // (max rows, cols + 2) W v or the scaled u; the last two: scalars
    bool pending_ = true;
};

}  // namespace sgt
