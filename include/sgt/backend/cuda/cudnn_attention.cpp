// sgt/backend/cuda/cudnn_attention.cpp: cudnn_attention.hpp over the cudnn-frontend graph API. A plain C++
// translation unit (the frontend is host code), part of sgt::cuda_kernels in a build with SGT_CUDNN.
#include "sgt/backend/cuda/cudnn_attention.hpp"

#include <cudnn_frontend.h>

#include <cmath>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "sgt/backend/cuda/runtime.hpp"

namespace sgt::detail::cudnn {
namespace {

namespace fe = cudnn_frontend;

void check(cudnnStatus_t status, const char* call) {
    if (status != CUDNN_STATUS_SUCCESS) fail("cuDNN: {} failed with {} ({})", call, int(status), cudnnGetErrorString(status));
}
void check(fe::error_t e, const char* what, int B, int T_, int n, int HD) {
    if (e.is_bad())
        fail("cuDNN attention: {} failed at B {} T {} heads {} head size {} (cuDNN {}): {}", what, B, T_, n, HD,
             cudnnGetVersion(), e.get_message());
}

// Tensor ids of the graphs' inputs and outputs.
enum : std::int64_t { q_id = 1, k_id, v_id, o_id, lse_id, do_id, dq_id, dk_id, dv_id };

struct shape {
    int B, T, n, HD;
    bool backward, deterministic;
    auto operator<=>(const shape&) const = default;
};

// Per thread, as cuda_context: the handle and the graphs built so far.
struct state {
    cudnnHandle_t handle = nullptr;
    std::map<shape, std::unique_ptr<fe::graph::Graph>> graphs;
    state() { check(cudnnCreate(&handle), "cudnnCreate"); }
    ~state() {
        graphs.clear();
        if (handle) cudnnDestroy(handle);
    }
    state(const state&) = delete;
    state& operator=(const state&) = delete;
};
state& local() {
    thread_local state s;
    return s;
}

// The graph of one shape: q, k, v (and o, dO) as (B, n, T, HD) views of the backend's row-major layouts.
const fe::graph::Graph& graph_for(const shape& s) {
    auto& st = local();
    if (auto it = st.graphs.find(s); it != st.graphs.end()) return *it->second;
    const std::int64_t B = s.B, T = s.T, n = s.n, HD = s.HD;
    const std::vector<std::int64_t> dims{B, n, T, HD}, qkv_strides{T * 3 * n * HD, HD, 3 * n * HD, 1},
        out_strides{T * n * HD, HD, n * HD, 1};
    auto g = std::make_unique<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto tensor = [&](const char* name, std::int64_t id, const std::vector<std::int64_t>& strides) {
        return g->tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(id).set_dim(dims).set_stride(strides));
    };
    auto q = tensor("q", q_id, qkv_strides), k = tensor("k", k_id, qkv_strides), v = tensor("v", v_id, qkv_strides);
    const float scale = float(1.0 / std::sqrt(double(HD)));
    const std::vector<std::int64_t> lse_dims{B, n, T, 1}, lse_strides{n * T, T, 1, 1};
    if (!s.backward) {
        auto [o, lse] = g->sdpa(q, k, v,
                                fe::graph::SDPA_attributes().set_name("attention").set_generate_stats(true)
                                    .set_causal_mask(true).set_attn_scale(scale));
        o->set_output(true).set_uid(o_id).set_dim(dims).set_stride(out_strides);
        lse->set_output(true).set_uid(lse_id).set_dim(lse_dims).set_stride(lse_strides)
            .set_data_type(fe::DataType_t::FLOAT);
    } else {
        auto o = tensor("o", o_id, out_strides), dO = tensor("dO", do_id, out_strides);
        auto lse = g->tensor(fe::graph::Tensor_attributes().set_name("lse").set_uid(lse_id).set_dim(lse_dims)
                                 .set_stride(lse_strides).set_data_type(fe::DataType_t::FLOAT));
        auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, dO, lse,
                                             fe::graph::SDPA_backward_attributes().set_name("attention_backward")
                                                 .set_causal_mask(true).set_attn_scale(scale)
                                                 .set_deterministic_algorithm(s.deterministic));
        dq->set_output(true).set_uid(dq_id).set_dim(dims).set_stride(qkv_strides);
        dk->set_output(true).set_uid(dk_id).set_dim(dims).set_stride(qkv_strides);
        dv->set_output(true).set_uid(dv_id).set_dim(dims).set_stride(qkv_strides);
    }
    check(g->validate(), "validate", s.B, s.T, s.n, s.HD);
    check(g->build_operation_graph(st.handle), "build_operation_graph", s.B, s.T, s.n, s.HD);
    check(g->create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans", s.B, s.T, s.n, s.HD);
    check(g->check_support(st.handle), "check_support", s.B, s.T, s.n, s.HD);
    check(g->build_plans(st.handle), "build_plans", s.B, s.T, s.n, s.HD);
    return *st.graphs.emplace(s, std::move(g)).first->second;
}

void run(const shape& s, std::unordered_map<std::int64_t, void*>& pointers) {
    auto& st = local();
    const auto& g = graph_for(s);
    std::int64_t bytes = 0;
    check(g.get_workspace_size(bytes), "get_workspace_size", s.B, s.T, s.n, s.HD);
    void* workspace = bytes > 0 ? context().scratch<std::byte>(slot_cudnn, bytes) : nullptr;
    check(cudnnSetStream(st.handle, stream()), "cudnnSetStream");
    check(g.execute(st.handle, pointers, workspace), "execute", s.B, s.T, s.n, s.HD);
}

// Element offsets of k and v in a qkv row (bf16 elements).
void* at(const void* p, std::int64_t elements) {
    return const_cast<std::byte*>(static_cast<const std::byte*>(p) + elements * 2);
}

}  // namespace

void attention_forward(void* out, float* lse, const void* qkv, int B, int T_, int n, int HD) {
    const std::int64_t nh = std::int64_t(n) * HD;
    std::unordered_map<std::int64_t, void*> pointers{
        {q_id, at(qkv, 0)}, {k_id, at(qkv, nh)}, {v_id, at(qkv, 2 * nh)}, {o_id, out}, {lse_id, lse}};
    run({B, T_, n, HD, false, false}, pointers);
}

void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out, const float* lse, int B,
                        int T_, int n, int HD, bool deterministic) {
    const std::int64_t nh = std::int64_t(n) * HD;
    std::unordered_map<std::int64_t, void*> pointers{
        {q_id, at(qkv, 0)},       {k_id, at(qkv, nh)},          {v_id, at(qkv, 2 * nh)},
        {o_id, at(out, 0)},       {do_id, at(dout, 0)},         {lse_id, const_cast<float*>(lse)},
        {dq_id, at(dqkv, 0)},     {dk_id, at(dqkv, nh)},        {dv_id, at(dqkv, 2 * nh)}};
    run({B, T_, n, HD, true, deterministic}, pointers);
}

long version() { return long(cudnnGetVersion()); }

}  // namespace sgt::detail::cudnn
