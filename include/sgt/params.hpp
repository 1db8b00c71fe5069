// sgt/params.hpp: the table of a model's named parameter tensors (DESIGN.md, "Parameters").
//
// Every trainable tensor lives in ONE contiguous buffer (the optimizer, checkpoints and a future all-reduce
// walk it whole); the table names each tensor's slice, Hugging Face LLaMA style, and says whether AdamW decays
// it and how it is initialised. Code reaches a tensor by its name, never by its position:
//
//     const auto& q = table.at(layer_param_name(3, "self_attn.q_proj.weight"));   // one tensor
//     const layer_params L = table.layer(3);                                    // the nine of a layer, named
//
// The decoder's own tensors come first (llama()); a model variant appends tensors of its own with add()
// (variant.hpp), and the checkpoints and AdamW follow the table, so they are saved, loaded and updated too.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sgt/config.hpp"
#include "sgt/core/error.hpp"

namespace sgt {

// How a tensor starts: N(value, std²) per element when std > 0 (drawn from the model's RNG in table order),
// else every element = value.
struct param_init {
    double std = 0.0;
    double value = 0.0;
    static constexpr param_init normal(double std) { return {std, 0.0}; }
    static constexpr param_init constant(double value) { return {0.0, value}; }
};

// One named parameter tensor inside the model's contiguous buffer.
struct param_entry {
    std::string name;                // Hugging Face-style name
    std::int64_t offset = 0;         // into the model's parameters()
    std::vector<std::int64_t> shape;
    bool decay = true;               // AdamW's weight decay applies (matrices); not to RMSNorm weights
    param_init init = param_init::normal(0.02);
    std::int64_t numel() const {
        std::int64_t n = 1;
        for (auto s : shape) n *= s;
        return n;
    }
};

// "model.layers.<l>.<tensor>", e.g. layer_param_name(3, "self_attn.q_proj.weight").
inline std::string layer_param_name(int layer, std::string_view tensor) {
    return "model.layers." + std::to_string(layer) + "." + std::string(tensor);
}

// The nine tensors of one decoder layer, by role. Pointers into a parameter_table, valid while it is not added to.
struct layer_params {
    const param_entry* attn_norm;  // (C)     input_layernorm: RMSNorm_attn
    const param_entry* q;          // (C, C)  rows = heads × HD
    const param_entry* k;          // (C, C)
    const param_entry* v;          // (C, C)
    const param_entry* o;          // (C, C)  columns = heads × HD
    const param_entry* ffn_norm;   // (C)     post_attention_layernorm: RMSNorm_ffn
    const param_entry* gate;       // (F, C)  W_1
    const param_entry* up;         // (F, C)  W_3
    const param_entry* down;       // (C, F)  W_2
};

class parameter_table {
public:
    parameter_table() = default;

    // The decoder's tensors in buffer order: embedding, per layer (attention norm, q, k, v, o, FFN norm, gate,
    // up, down), final norm, LM head. Matrices N(0, 0.02) and decayed; RMSNorm weights 1 and not decayed.
    static parameter_table llama(const model_shape& s) {
        parameter_table t;
        const std::int64_t C = s.width(), F = s.d_ff, V = s.vocab;
        const auto matrix = param_init::normal(0.02), unit = param_init::constant(1.0);
        t.add("model.embed_tokens.weight", {V, C}, true, matrix);
        for (int l = 0; l < s.layers; ++l) {
            t.add(layer_param_name(l, "input_layernorm.weight"), {C}, false, unit);
            t.add(layer_param_name(l, "self_attn.q_proj.weight"), {C, C}, true, matrix);
            t.add(layer_param_name(l, "self_attn.k_proj.weight"), {C, C}, true, matrix);
            t.add(layer_param_name(l, "self_attn.v_proj.weight"), {C, C}, true, matrix);
            t.add(layer_param_name(l, "self_attn.o_proj.weight"), {C, C}, true, matrix);
            t.add(layer_param_name(l, "post_attention_layernorm.weight"), {C}, false, unit);
            t.add(layer_param_name(l, "mlp.gate_proj.weight"), {F, C}, true, matrix);
            t.add(layer_param_name(l, "mlp.up_proj.weight"), {F, C}, true, matrix);
            t.add(layer_param_name(l, "mlp.down_proj.weight"), {C, F}, true, matrix);
        }
        t.add("model.norm.weight", {C}, false, unit);
        t.add("lm_head.weight", {V, C}, true, matrix);
        return t;
    }

    // Appends a tensor at the end of the buffer. Names are unique and every dimension positive.
    const param_entry& add(std::string name, std::vector<std::int64_t> shape, bool decay, param_init init) {
        require(!name.empty(), "parameter table: expected a tensor name, found an empty one");
        require(find(name) == nullptr, "parameter table: a tensor named '{}' exists already", name);
        require(!shape.empty(), "parameter table: tensor '{}' has no dimensions", name);
        for (auto d : shape) require(d > 0, "parameter table: tensor '{}' has a dimension {}, expected > 0", name, d);
        require(init.std >= 0.0, "parameter table: tensor '{}' has init std {}, expected >= 0", name, init.std);
        param_entry e{std::move(name), numel_, std::move(shape), decay, init};
        numel_ += e.numel();
        entries_.push_back(std::move(e));
        return entries_.back();
    }

    const param_entry* find(std::string_view name) const {
        for (const auto& e : entries_)
            if (e.name == name) return &e;
        return nullptr;
    }
    const param_entry& at(std::string_view name) const {
        const param_entry* e = find(name);
        require(e != nullptr, "parameter table: no tensor named '{}'", name);
        return *e;
    }
    bool contains(std::string_view name) const { return find(name) != nullptr; }

    // Layer l's nine decoder tensors, by name.
    layer_params layer(int l) const {
        const auto get = [&](std::string_view t) { return &at(layer_param_name(l, t)); };
        return {get("input_layernorm.weight"),   get("self_attn.q_proj.weight"),
                get("self_attn.k_proj.weight"),  get("self_attn.v_proj.weight"),
                get("self_attn.o_proj.weight"),  get("post_attention_layernorm.weight"),
                get("mlp.gate_proj.weight"),     get("mlp.up_proj.weight"),
                get("mlp.down_proj.weight")};
    }

    std::int64_t numel() const { return numel_; }  // the length of the parameter buffer
    std::size_t size() const { return entries_.size(); }
    auto begin() const { return entries_.begin(); }
    auto end() const { return entries_.end(); }
    const param_entry& front() const { return entries_.front(); }
    const param_entry& back() const { return entries_.back(); }

private:
    std::vector<param_entry> entries_;
    std::int64_t numel_ = 0;
};

}  // namespace sgt
