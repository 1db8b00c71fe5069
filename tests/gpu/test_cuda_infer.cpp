// Cached inference on the GPU against the CPU in double (infer/engine.hpp, backend/cuda/decode.cuh): the decode
// leaf ops at lengths that cross the key chunks of the split; prefill + decode logits at every position for
// every loop structure (fp32 ≤ 1e-5, bf16 ≤ 2e-2, relative); the decode step recorded as a CUDA graph gives the
// same bits as the eager step; greedy generation on the GPU in fp32 emits the CPU's tokens.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>

#include "support.hpp"

using namespace sgt;
using test::bf16;

namespace {

// Small, but with a context long enough for several chunks of decode attention's split (256 keys each).
constexpr model_config long_cfg{
    .shape = {.layers = 4, .heads = 4, .head_dim = 32, .d_ff = 96, .vocab = 64, .max_seq = 640},
    .loops = {.h = 2, .L = 3, .k_max = 3}};
constexpr int NL = 4, NH = 4, V = 64;
// The same with heads of 64, which decode attention compiles for (and, in bf16 in blocks of 128 keys, runs on the
// tensor cores).
constexpr model_config wide_cfg{
    .shape = {.layers = NL, .heads = NH, .head_dim = 64, .d_ff = 96, .vocab = V, .max_seq = 640},
    .loops = {.h = 2, .L = 3, .k_max = 3}};

template <model_config Cfg = long_cfg>
std::vector<double> strong_weights(std::uint64_t seed) {
    rng r(seed);
    std::vector<double> w(std::size_t(Cfg.shape.total_params()));
    for (const auto& e : parameter_table::llama(Cfg.shape)) {
        const double sd = 1.0 / std::sqrt(double(e.shape.back()));
        for (std::int64_t i = 0; i < e.numel(); ++i)
            w[std::size_t(e.offset + i)] = e.decay ? sd * r.normal() : 1.0 + 0.2 * r.normal();
    }
    return w;
}

std::vector<std::int32_t> random_tokens(rng& r, int n) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(n));
    for (auto& x : t) x = std::int32_t(r.below(V));
    return t;
}

// `steps` decode steps of `width` random tokens each (a token a sequence).
std::vector<std::vector<std::int32_t>> random_steps(rng& r, int steps, int width) {
    std::vector<std::vector<std::int32_t>> s;
    for (int i = 0; i < steps; ++i) s.push_back(random_tokens(r, width));
    return s;
}

std::map<std::string, loop_plan> plans() {
    std::map<std::string, loop_plan> p;
    p["vanilla"] = loop_plan::vanilla(NL);
    for (int k = 1; k <= 3; ++k)
        for (double fade : {0.0, 0.4}) {
            loop_plan s = loop_plan::vanilla(NL);
            for (int l = 1; l < NL; ++l) s.layers[l] = {.k = std::min(k, l), .heads = {l % 2, 2 + l % 2}, .fade = l == 3 ? fade : 0.0};
            p["sgt K=" + std::to_string(k) + (fade > 0 ? " fade" : "")] = s;
        }
    loop_plan a = loop_plan::vanilla(NL);
    a.layers[3] = {.k = 2, .heads = {0, 1, 2, 3}};
    p["attention loop"] = a;
    loop_plan bl = loop_plan::vanilla(NL);
    bl.layers[1].block_repeat = 2;
    bl.layers[2].block_repeat = 2;
    p["block loop"] = bl;
    return p;
}

// RoPE tables for ctx positions (rope_tables in fp32, as the GPU ops take them, and the same values in double for
// the CPU reference) and the positions, on the host and the device.
struct rope_at {
    std::vector<double> cos, sin;
    device_buffer<float> d_cos, d_sin;
    device_buffer<std::int32_t> d_pos;
    rope_at(int ctx, int HD, const std::vector<std::int32_t>& pos)
        : d_cos(std::size_t(ctx) * HD / 2), d_sin(d_cos.size()), d_pos(pos.size()) {
        std::vector<float> c(d_cos.size()), s(c.size());
        rope_tables(cpu{}, c.data(), s.data(), ctx, HD, 10000.0);
        cos.assign(c.begin(), c.end());
        sin.assign(s.begin(), s.end());
        copy_from_host(cuda{}, d_cos.data(), c.data(), std::int64_t(c.size()));
        copy_from_host(cuda{}, d_sin.data(), s.data(), std::int64_t(s.size()));
        copy_from_host(cuda{}, d_pos.data(), pos.data(), std::int64_t(pos.size()));
    }
};

// Prefill logits at every position, then `steps` decode steps' logits, per sequence: (Σ positions, V).
template <class Inference>
std::vector<double> run(Inference& inf, const std::vector<std::vector<std::int32_t>>& prompts,
                        const std::vector<std::vector<std::int32_t>>& next) {
    using T = typename Inference::value_type;
    auto as_d = [](const T& x) { return double(static_cast<float>(x)); };
    const int B = int(prompts.size());
    std::vector<std::vector<double>> per(static_cast<std::size_t>(B));
    inf.prefill(prompts, true);
    const auto& all = inf.all_prefill_logits();
    std::size_t row = 0;
    for (int b = 0; b < B; ++b)
        for (std::size_t i = 0; i < prompts[b].size() * V; ++i) per[b].push_back(as_d(all[row++]));
    for (const auto& tokens : next) {
        const auto l = inf.decode(tokens);
        for (int b = 0; b < B; ++b)
            for (int i = 0; i < V; ++i) per[b].push_back(as_d(l[std::size_t(b) * V + i]));
    }
    std::vector<double> out;
    for (const auto& p : per) out.insert(out.end(), p.begin(), p.end());
    return out;
}

}  // namespace

TEST_CASE_TEMPLATE("decode leaf ops on the GPU match the CPU across the key chunks", T, float, bf16) {
    const int B = 4, n = 3, HD = 32, ctx = 600;
    const std::vector<std::int32_t> pos{0, 255, 256, 599};  // one key, one chunk exactly, one past, the last
    rng r(2);
    const auto k = test::rounded<T>(test::random_vector(r, std::size_t(B) * n * ctx * HD));
    const auto v = test::rounded<T>(test::random_vector(r, k.size()));
    auto qkv = test::rounded<T>(test::random_vector(r, std::size_t(B) * 3 * n * HD));
    rope_at rope(ctx, HD, pos);

    // RoPE at the positions, then the key and value written into the cache, then attention over 0..pos[b].
    std::vector<double> qkv_ref = qkv, k_ref = k, v_ref = v, out_ref(std::size_t(B) * n * HD);
    rope_forward_at(cpu{}, qkv_ref.data(), rope.cos.data(), rope.sin.data(), pos.data(), B, 1, 2 * n, HD, 3 * n * HD);
    kv_cache_write(cpu{}, k_ref.data(), v_ref.data(), qkv_ref.data(), pos.data(), B, 1, n, HD, ctx);
    decode_attention(cpu{}, out_ref.data(), qkv_ref.data(), k_ref.data(), v_ref.data(), pos.data(), B, n, HD, ctx,
                     static_cast<double*>(nullptr));

    auto d_qkv = test::to_device<T>(qkv), d_k = test::to_device<T>(k), d_v = test::to_device<T>(v);
    device_buffer<accum_t<T>> ws(std::size_t(decode_attention_workspace<T>(cuda{}, B, n, HD, ctx)));
    rope_kv_write_at(cuda{}, d_qkv.data(), d_k.data(), d_v.data(), rope.d_cos.data(), rope.d_sin.data(),
                     rope.d_pos.data(), B, 1, n,
                     HD, ctx);
    test::check_error<T>("rope at positions", test::rel_error(test::to_host(d_qkv), qkv_ref));
    test::check_error<T>("cache write (keys)", test::rel_error(test::to_host(d_k), k_ref));
    test::check_error<T>("cache write (values)", test::rel_error(test::to_host(d_v), v_ref));
    for (const int keys : {64, 128, 256, 0}) {  // blocks of each size (3 to 10 chunks), then the shape's choice
        CAPTURE(keys);
        set_decode_block_keys(cuda{}, keys);
        auto d_out = test::poisoned<T>(out_ref.size());
        decode_attention(cuda{}, d_out.data(), d_qkv.data(), d_k.data(), d_v.data(), rope.d_pos.data(), B, n, HD, ctx,
                         ws.data());
        test::check_error<T>("decode attention (4 lengths)", test::rel_error(test::to_host(d_out), out_ref));
    }
    CHECK_THROWS_WITH_AS(set_decode_block_keys(cuda{}, 100),
                         "set_decode_block_keys: expected 0 (chosen by the shape), 64, 128 or 256 keys, found 100",
                         sgt::error);
    // Buffers aligned only to an element give packs of one: a head of 256 would need more threads than a block.
    T* const unaligned = reinterpret_cast<T*>(std::uintptr_t(sizeof(T)));
    CHECK_THROWS_WITH_AS(decode_attention(cuda{}, unaligned, unaligned, unaligned, unaligned, rope.d_pos.data(), 1, 1,
                                          256,
                                          64, ws.data()),
                         "cuda decode_attention: a head of 256 elements in packs of 1 (as the buffers are aligned) "
                         "needs 256 threads, more than a block's 128: align q, k and v to 16 bytes",
                         sgt::error);

    // The CPU's fused form is its two ops in a row; a prefill's cache write (kv_cache_write) on the GPU writes
    // the slot as the fused kernel did, bit for bit.
    std::vector<double> qkv_f = qkv, k_f = k, v_f = v;
    rope_kv_write_at(cpu{}, qkv_f.data(), k_f.data(), v_f.data(), rope.cos.data(), rope.sin.data(), pos.data(), B, 1,
                     n, HD,
                     ctx);
    CHECK(qkv_f == qkv_ref);
    CHECK(k_f == k_ref);
    CHECK(v_f == v_ref);
    auto w_k = test::to_device<T>(k), w_v = test::to_device<T>(v);
    kv_cache_write(cuda{}, w_k.data(), w_v.data(), d_qkv.data(), rope.d_pos.data(), B, 1, n, HD, ctx);
    const auto same = [](const auto& a, const auto& b) {
        const auto x = test::to_host(a), y = test::to_host(b);
        return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0;
    };
    CHECK(same(w_k, d_k));
    CHECK(same(w_v, d_v));
}

TEST_CASE_TEMPLATE("decode attention on the GPU matches the CPU at head sizes 64 to 256 and over many chunks", T, float,
                   bf16) {
    // Head sizes whose rows take more packs than a thread's first loads (128, 256: the loops past them), the merge
    // with more groups than one and with one (64, 256), and more chunks than the merge has threads (9,000 keys of
    // 64 are 141 chunks).
    struct shape {
        int B, n, HD, ctx;
        std::vector<std::int32_t> pos;
    };
    for (const shape& sh : {shape{2, 2, 64, 9000, {8999, 4000}}, shape{1, 3, 128, 700, {699}},
                            shape{2, 1, 256, 300, {0, 299}}}) {
        const int B = sh.B, n = sh.n, HD = sh.HD, ctx = sh.ctx;
        CAPTURE(HD);
        rng r(7);
        const auto k = test::rounded<T>(test::random_vector(r, std::size_t(B) * n * ctx * HD));
        const auto v = test::rounded<T>(test::random_vector(r, k.size()));
        const auto qkv = test::rounded<T>(test::random_vector(r, std::size_t(B) * 3 * n * HD));
        std::vector<double> out_ref(std::size_t(B) * n * HD);
        decode_attention(cpu{}, out_ref.data(), qkv.data(), k.data(), v.data(), sh.pos.data(), B, n, HD, ctx,
                         static_cast<double*>(nullptr));
        auto d_qkv = test::to_device<T>(qkv), d_k = test::to_device<T>(k), d_v = test::to_device<T>(v);
        device_buffer<std::int32_t> d_pos(sh.pos.size());
        copy_from_host(cuda{}, d_pos.data(), sh.pos.data(), std::int64_t(sh.pos.size()));
        device_buffer<accum_t<T>> ws(std::size_t(decode_attention_workspace<T>(cuda{}, B, n, HD, ctx)));
        for (const int keys : {64, 128, 256, 0}) {
            CAPTURE(keys);
            set_decode_block_keys(cuda{}, keys);
            std::vector<double> got[2];
            for (const bool tc : {true, false}) {  // bf16 at 64 and 128 wide in blocks of 64 or 128 keys: two forms
                CAPTURE(tc);
                set_decode_tensor_cores(cuda{}, tc);
                auto d_out = test::poisoned<T>(out_ref.size());
                decode_attention(cuda{}, d_out.data(), d_qkv.data(), d_k.data(), d_v.data(), d_pos.data(), B, n, HD,
                                 ctx, ws.data());
                got[tc] = test::to_host(d_out);
                test::check_error<T>(tc ? "decode attention" : "decode attention (multiply-adds)",
                                     test::rel_error(got[tc], out_ref));
            }
            test::check_error<T>("tensor cores against multiply-adds", test::rel_error(got[1], got[0]));
        }
        set_decode_tensor_cores(cuda{}, true);
    }
}

// A decode step's normed products of N rows (a plain product, one added to a residual, SwiGLU, q/k/v with RoPE
// and the cache write) on the GPU under each of `modes` (a name and the setting it makes) against the CPU in
// double, and the modes against the first: they differ only in the order of each dot product's sum.
template <class T>
void check_few_row_products(int N, int I, int O, int F, int n, int HD,
                            const std::vector<std::pair<std::string, std::function<void()>>>& modes) {
    CAPTURE(I);
    CAPTURE(N);
    const int ctx = 50;
    rng r(std::uint64_t(10 * N + I));
    const auto x = test::rounded<T>(test::random_vector(r, std::size_t(N) * I));
    auto norm = test::random_vector(r, std::size_t(I));
    for (double& g : norm) g = 1.0 + 0.2 * g;
    norm = test::rounded<T>(norm);
    const auto w = test::rounded<T>(test::random_vector(r, std::size_t(O) * I));
    const auto w3 = test::rounded<T>(test::random_vector(r, std::size_t(F) * I));
    const auto w1 = test::rounded<T>(test::random_vector(r, std::size_t(F) * I));
    const auto wqkv = test::rounded<T>(test::random_vector(r, std::size_t(3) * n * HD * I));
    const auto res = test::rounded<T>(test::random_vector(r, std::size_t(N) * O));
    const auto kc = test::rounded<T>(test::random_vector(r, std::size_t(N) * n * ctx * HD));
    const auto vc = test::rounded<T>(test::random_vector(r, kc.size()));
    std::vector<std::int32_t> pos;
    for (int b = 0; b < N; ++b) pos.push_back(std::int32_t((7 * b + 3) % ctx));
    rope_at rope(ctx, HD, pos);

    // The CPU in double: the compositions (backend/cpu/decode.hpp).
    std::vector<double> a(std::size_t(N) * I), rstd(static_cast<std::size_t>(N));
    std::vector<double> gate(std::size_t(N) * F), up(gate.size());
    std::vector<double> lin_ref(std::size_t(N) * O), acc_ref = res, act_ref(gate.size());
    std::vector<double> qkv_ref(std::size_t(N) * 3 * n * HD), k_ref = kc, v_ref = vc;
    normed_matmul_forward(cpu{}, lin_ref.data(), a.data(), rstd.data(), x.data(), norm.data(), w.data(), N, I, O,
                          1e-5, false);
    normed_matmul_forward(cpu{}, acc_ref.data(), a.data(), rstd.data(), x.data(), static_cast<const double*>(nullptr),
                          w.data(), N, I, O, 0.0, true);
    normed_swiglu_forward(cpu{}, act_ref.data(), a.data(), rstd.data(), gate.data(), up.data(), x.data(), norm.data(),
                          w1.data(), w3.data(), N, I, F, 1e-5);
    normed_qkv_write_at(cpu{}, qkv_ref.data(), k_ref.data(), v_ref.data(), a.data(), rstd.data(), x.data(),
                        norm.data(), wqkv.data(), rope.cos.data(), rope.sin.data(), pos.data(), N, I, n, HD, ctx, 1e-5);

    const auto d_x = test::to_device<T>(x), d_norm = test::to_device<T>(norm), d_w = test::to_device<T>(w);
    const auto d_w1 = test::to_device<T>(w1), d_w3 = test::to_device<T>(w3), d_wqkv = test::to_device<T>(wqkv);
    auto d_a = test::poisoned<T>(a.size()), d_rstd = test::poisoned<T>(rstd.size());
    auto d_gate = test::poisoned<T>(gate.size()), d_up = test::poisoned<T>(up.size());
    std::vector<std::vector<double>> outs;  // one per mode
    for (const auto& [name, set] : modes) {
        set();
        auto lin = test::poisoned<T>(lin_ref.size()), act = test::poisoned<T>(act_ref.size());
        auto qkv = test::poisoned<T>(qkv_ref.size());
        auto acc = test::to_device<T>(res), k = test::to_device<T>(kc), v = test::to_device<T>(vc);
        normed_matmul_forward(cuda{}, lin.data(), d_a.data(), d_rstd.data(), d_x.data(), d_norm.data(), d_w.data(), N,
                              I, O, 1e-5, false);
        normed_matmul_forward(cuda{}, acc.data(), d_a.data(), d_rstd.data(), d_x.data(),
                              static_cast<const T*>(nullptr), d_w.data(), N, I, O, 0.0, true);
        normed_swiglu_forward(cuda{}, act.data(), d_a.data(), d_rstd.data(), d_gate.data(), d_up.data(), d_x.data(),
                              d_norm.data(), d_w1.data(), d_w3.data(), N, I, F, 1e-5);
        normed_qkv_write_at(cuda{}, qkv.data(), k.data(), v.data(), d_a.data(), d_rstd.data(), d_x.data(),
                            d_norm.data(), d_wqkv.data(), rope.d_cos.data(), rope.d_sin.data(), rope.d_pos.data(), N, I,
                            n, HD, ctx, 1e-5);
        const std::string how = " (" + name + ")";
        test::check_error<T>("normed product" + how, test::rel_error(test::to_host(lin), lin_ref));
        test::check_error<T>("product added to a residual" + how, test::rel_error(test::to_host(acc), acc_ref));
        test::check_error<T>("normed SwiGLU" + how, test::rel_error(test::to_host(act), act_ref));
        test::check_error<T>("normed q, k, v with RoPE" + how, test::rel_error(test::to_host(qkv), qkv_ref));
        test::check_error<T>("keys written to the slot" + how, test::rel_error(test::to_host(k), k_ref));
        test::check_error<T>("values written to the slot" + how, test::rel_error(test::to_host(v), v_ref));
        std::vector<double> all;
        for (const auto* b : {&lin, &acc, &act, &qkv, &k, &v}) {
            const auto h = test::to_host(*b);
            all.insert(all.end(), h.begin(), h.end());
        }
        outs.push_back(all);
    }
    for (std::size_t m = 1; m < modes.size(); ++m)
        test::check_error<T>(modes[0].first + " against " + modes[m].first, test::rel_error(outs[0], outs[m]));
}

TEST_CASE_TEMPLATE("a decode step's normed products of a few rows on the GPU match the CPU, fused or composed", T,
                   float, bf16) {
    // 1 to 4 rows take the fused kernel (decode_products.cuh, few_rows_max; an instance for 1 row and one for up to
    // 4); 5 rows, and rows of 36 bf16 (not whole 16-byte packs), the composition (no tensor-core kernel here).
    const std::int64_t tc_default = detail::context().few_rows_tc_weights;
    set_few_rows_tensor_cores(cuda{}, 0);
    for (const int I : {40, 36})
        for (const int N : {1, 2, 3, 4, 5})
            check_few_row_products<T>(N, I, 37, 53, 3, 16,
                                      {{"fused where it fits", [] { set_fuse_few_rows(cuda{}, true); }},
                                       {"composed", [] { set_fuse_few_rows(cuda{}, false); }}});
    set_fuse_few_rows(cuda{}, true);
    set_few_rows_tensor_cores(cuda{}, tc_default);
}

TEST_CASE("a decode step's thin products of 5 to 32 rows on the GPU's tensor cores match the CPU and the composition") {
    // bf16, whole tiles of 16 outputs (48 outputs, 32 of SwiGLU, heads of 32: one tile a half-head) and 16 inputs:
    // 5 to 16 rows take one 16-row tile, 17 to 32 two; 48 inputs give 3 of the block's 8 warps a step each, 784
    // inputs 49 steps (every warp 6 or 7), 2048 inputs rows wider than a block of both 16-row tiles could hold in
    // Hopper's 227 KB (about 300 KB; a block takes one tile, 213 KB). 33 rows, a product of more weights than the
    // limit and a product without a norm (added to a residual, as W_O's: one cuBLASLt call either way) take the
    // composition.
    const int O = 48, F = 32, n = 2, HD = 32;
    const std::int64_t tc_default = detail::context().few_rows_tc_weights;
    for (const int I : {48, 784, 2048})
        for (const int N : {5, 13, 16, 17, 32, 33}) {
            const std::int64_t weights = 3 * std::int64_t(n) * HD * I;  // the largest of the products: q/k/v's
            set_few_rows_tensor_cores(cuda{}, weights);
            CHECK(few_rows_on_tensor_cores<bf16>(cuda{}, N, I, weights) == (N <= 32));
            check_few_row_products<bf16>(N, I, O, F, n, HD,
                                         {{"tensor cores", [&] { set_few_rows_tensor_cores(cuda{}, weights); }},
                                          {"composed", [] { set_few_rows_tensor_cores(cuda{}, 0); }}});
            set_few_rows_tensor_cores(cuda{}, weights - 1);
            CHECK_FALSE(few_rows_on_tensor_cores<bf16>(cuda{}, N, I, weights));
        }
    set_few_rows_tensor_cores(cuda{}, tc_default);
    CHECK_THROWS_WITH(set_few_rows_tensor_cores(cuda{}, -1),
                      doctest::Contains("expected a weight count of at least 0, found -1"));
}

TEST_CASE_TEMPLATE("a run of decode attention passes on the GPU matches the CPU, as one cluster kernel or composed", T,
                   float, bf16) {
    // (rows, heads, head size, passes, width, first row's position): every head size the cluster kernel has (8 to
    // 128) takes it, at width 96, 128 and gpt2's 768 (several rows of W_O a warp), with the first sequence holding
    // one key, a few a block, or more keys than a warp takes at once; 2 to 8 rows and 5 heads of 64 (wider than its
    // 256) take the composition; 9 passes take two launches.
    struct shape {
        int B, n, HD, passes, C, first;
    };
    for (const shape sh : {shape{1, 2, 64, 3, 96, 77}, shape{2, 4, 32, 3, 96, 30}, shape{1, 1, 128, 2, 96, 0},
                           shape{1, 3, 8, 9, 96, 300}, shape{1, 2, 16, 1, 96, 5}, shape{3, 2, 32, 2, 96, 0},
                           shape{8, 1, 64, 2, 96, 0}, shape{1, 5, 64, 2, 96, 0}, shape{1, 2, 64, 3, 768, 599},
                           shape{2, 2, 64, 2, 768, 0}, shape{2, 2, 32, 2, 128, 70}, shape{1, 4, 32, 1, 128, 41},
                           shape{5, 2, 64, 3, 768, 41}}) {
        const int B = sh.B, n = sh.n, HD = sh.HD, P = sh.passes, C = sh.C, ctx = 600, nhd = n * HD;
        CAPTURE(B);
        CAPTURE(n);
        CAPTURE(HD);
        CAPTURE(C);
        CAPTURE(sh.first);
        const bool one_kernel = decode_passes_one_kernel<T>(cuda{}, B, C, n, HD);
        CHECK(one_kernel == (B == 1 && n * HD <= 256));
        rng r(std::uint64_t(1000 * B + 10 * n + HD));
        const auto x = test::rounded<T>(test::random_vector(r, std::size_t(B) * C));
        auto norm = test::random_vector(r, std::size_t(C));
        for (double& g : norm) g = 1.0 + 0.2 * g;
        norm = test::rounded<T>(norm);
        auto wqkv = test::random_vector(r, std::size_t(3) * nhd * C);
        for (double& v : wqkv) v /= std::sqrt(double(C));  // q and k of unit size: scores of order 1, not of C
        wqkv = test::rounded<T>(wqkv);
        auto wo = test::random_vector(r, std::size_t(C) * nhd);
        for (double& v : wo) v *= 0.3;
        wo = test::rounded<T>(wo);
        std::vector<std::vector<double>> kc, vc, gains;
        for (int p = 0; p < P; ++p) {
            kc.push_back(test::rounded<T>(test::random_vector(r, std::size_t(B) * n * ctx * HD)));
            vc.push_back(test::rounded<T>(test::random_vector(r, kc.back().size())));
            std::vector<double> g;
            if (p % 2 == (sh.first % 2))  // gains on every other pass, one head closed where there are several
                for (int i = 0; i < n; ++i) g.push_back(i == 0 && n > 1 ? 0.0 : test::rounded<T>({0.4 + 0.1 * i})[0]);
            gains.push_back(g);
        }
        std::vector<std::int32_t> pos{sh.first};  // then the last, lengths across the cluster's splits of the keys
        const std::vector<std::int32_t> at{0, 599, 255, 128, 127, 129, 1, 300, 7};
        for (int b = 1; b < B; ++b) pos.push_back(at[std::size_t(b)]);
        rope_at rope(ctx, HD, pos);

        // The CPU in double: the composition (backend/cpu/decode.hpp).
        std::vector<double> x_ref = x, qkv(std::size_t(B) * 3 * nhd), o(std::size_t(B) * nhd), a(std::size_t(B) * C),
                            rstd(static_cast<std::size_t>(B));
        auto k_ref = kc, v_ref = vc;
        std::vector<decode_slot<double>> cpu_slots;
        for (int p = 0; p < P; ++p)
            cpu_slots.push_back({k_ref[std::size_t(p)].data(), v_ref[std::size_t(p)].data(),
                                 gains[std::size_t(p)].empty() ? nullptr : gains[std::size_t(p)].data()});
        decode_passes(cpu{}, x_ref.data(), qkv.data(), o.data(), a.data(), rstd.data(),
                      std::span<const decode_slot<double>>(cpu_slots), norm.data(), wqkv.data(), wo.data(),
                      rope.cos.data(), rope.sin.data(), pos.data(), B, C, n, HD, ctx, 1e-5,
                      static_cast<double*>(nullptr));

        const auto d_norm = test::to_device<T>(norm), d_wqkv = test::to_device<T>(wqkv), d_wo = test::to_device<T>(wo);
        device_buffer<accum_t<T>> ws(std::size_t(decode_attention_workspace<T>(cuda{}, B, n, HD, ctx)));
        std::vector<device_buffer<T>> d_gains;
        for (int p = 0; p < P; ++p) d_gains.push_back(test::to_device<T>(gains[std::size_t(p)]));
        std::vector<std::vector<double>> outs;  // the one kernel where it takes the shape, then composed
        for (const bool fused : {true, false}) {
            if (fused && !one_kernel) continue;  // the composition either way: it runs once
            set_fuse_decode_passes(cuda{}, fused);
            if (!fused) CHECK_FALSE(decode_passes_one_kernel<T>(cuda{}, B, C, n, HD));
            auto d_x = test::to_device<T>(x);
            auto d_qkv = test::poisoned<T>(qkv.size()), d_o = test::poisoned<T>(o.size());
            auto d_a = test::poisoned<T>(a.size()), d_rstd = test::poisoned<T>(rstd.size());
            std::vector<device_buffer<T>> d_k, d_v;
            std::vector<decode_slot<T>> slots;
            for (int p = 0; p < P; ++p) {
                d_k.push_back(test::to_device<T>(kc[std::size_t(p)]));
                d_v.push_back(test::to_device<T>(vc[std::size_t(p)]));
                slots.push_back({d_k.back().data(), d_v.back().data(),
                                 gains[std::size_t(p)].empty() ? nullptr : d_gains[std::size_t(p)].data()});
            }
            decode_passes(cuda{}, d_x.data(), d_qkv.data(), d_o.data(), d_a.data(), d_rstd.data(),
                          std::span<const decode_slot<T>>(slots), d_norm.data(), d_wqkv.data(), d_wo.data(),
                          rope.d_cos.data(), rope.d_sin.data(), rope.d_pos.data(), B, C, n, HD, ctx, 1e-5, ws.data());
            const std::string how = fused ? " (one kernel)" : " (composed)";
            test::check_error<T>("residual after the passes" + how, test::rel_error(test::to_host(d_x), x_ref));
            std::vector<double> all = test::to_host(d_x), keys, values, keys_ref, values_ref;
            for (int p = 0; p < P; ++p) {
                const auto k = test::to_host(d_k[std::size_t(p)]), v = test::to_host(d_v[std::size_t(p)]);
                keys.insert(keys.end(), k.begin(), k.end());
                values.insert(values.end(), v.begin(), v.end());
                keys_ref.insert(keys_ref.end(), k_ref[std::size_t(p)].begin(), k_ref[std::size_t(p)].end());
                values_ref.insert(values_ref.end(), v_ref[std::size_t(p)].begin(), v_ref[std::size_t(p)].end());
            }
            test::check_error<T>("keys appended to every slot" + how, test::rel_error(keys, keys_ref));
            test::check_error<T>("values appended to every slot" + how, test::rel_error(values, values_ref));
            all.insert(all.end(), keys.begin(), keys.end());
            all.insert(all.end(), values.begin(), values.end());
            outs.push_back(all);
        }
        set_fuse_decode_passes(cuda{}, true);
        if (one_kernel) test::check_error<T>("one kernel against composed", test::rel_error(outs[0], outs[1]));
    }
}

// Prefill and 12 decode steps of every plan on the GPU against the CPU in double.
template <class T, model_config Cfg>
void check_prefill_decode() {
    CAPTURE(Cfg.shape.head_dim);
    const auto w = strong_weights<Cfg>(4);
    const std::vector<float> w32(w.begin(), w.end());
    std::vector<T> wt(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) wt[i] = T(w32[i]);
    rng r(6);
    // Prompts of different lengths, one longer than a key chunk; decode steps cross the 256-key boundary.
    const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 250), random_tokens(r, 9), random_tokens(r, 300)};
    const auto next = random_steps(r, 12, 3);
    for (const auto& [name, plan] : plans()) {
        CAPTURE(name);
        inference<double, Cfg> cpu_inf(3, 320, plan);
        cpu_inf.parameters_from_host(w);
        inference<T, Cfg, cuda> gpu_inf(3, 320, plan);
        gpu_inf.parameters_from_host(wt);
        const auto ref = run(cpu_inf, prompts, next);
        const auto got = run(gpu_inf, prompts, next);
        CHECK(gpu_inf.step_graph_captured());
        test::check_error<T>("logits, prefill + 12 decode steps: " + name, test::rel_error(got, ref));
    }
}

TEST_CASE_TEMPLATE("prefill + decode on the GPU match the CPU at every position, for every loop structure", T, float,
                   bf16) {
    check_prefill_decode<T, long_cfg>();
    check_prefill_decode<T, wide_cfg>();
    set_decode_block_keys(cuda{}, 128);  // these shapes take 64 keys a block; 128 runs the tensor-core form in bf16
    check_prefill_decode<T, wide_cfg>();
    set_decode_block_keys(cuda{}, 0);
}

TEST_CASE("the decode step recorded as a CUDA graph gives the bits of the eager step") {
    const auto w = strong_weights(8);
    const std::vector<float> w32(w.begin(), w.end());
    loop_plan plan = plans()["sgt K=3 fade"];
    rng r(3);
    const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 5), random_tokens(r, 17)};
    const auto next = random_steps(r, 6, 2);
    inference<float, long_cfg, cuda> graphed(2, 64, plan), eager(2, 64, plan);
    graphed.parameters_from_host(w32);
    eager.parameters_from_host(w32);
    eager.use_step_graph(false);
    const auto a = run(graphed, prompts, next), b = run(eager, prompts, next);
    CHECK(graphed.step_graph_captured());
    CHECK_FALSE(eager.step_graph_captured());
    CHECK(a == b);
    // A second generation of another batch size records a new graph and still matches.
    const auto c = run(graphed, {prompts[1]}, {{1}, {2}, {3}}), d = run(eager, {prompts[1]}, {{1}, {2}, {3}});
    CHECK(c == d);
}

// The decode graph records without tuning the products unless asked (use_product_tuning): tuned, it gives the
// untuned one's bits, since tune_products keeps only algorithms that give the first choice's bits.
TEST_CASE("the decode graph tunes its products only when asked, and gives the same bits either way") {
    const auto w = strong_weights(9);
    const std::vector<float> w32(w.begin(), w.end());
    const loop_plan plan = plans()["sgt K=3 fade"];
    rng r(4);
    const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 7), random_tokens(r, 11),
                                                          random_tokens(r, 3)};
    const auto next = random_steps(r, 5, 3);
    inference<float, long_cfg, cuda> plain(3, 48, plan), tuned(3, 48, plan);
    plain.parameters_from_host(w32);
    tuned.parameters_from_host(w32);
    tuned.use_product_tuning(true);
    const std::size_t before = product_tunings(cuda{}).size();
    const auto a = run(plain, prompts, next);
    CHECK(plain.step_graph_captured());
    CHECK(product_tunings(cuda{}).size() == before);  // recorded, nothing tuned
    const auto b = run(tuned, prompts, next);
    CHECK(tuned.step_graph_captured());
    CHECK(product_tunings(cuda{}).size() > before);  // the plans the plain one made, tuned now
    CHECK(a == b);
}

TEST_CASE("greedy generation on the GPU (fp32) emits the CPU's tokens") {
    const auto w = strong_weights(12);
    const std::vector<float> w32(w.begin(), w.end());
    const loop_plan plan = plans()["sgt K=2 fade"];
    rng r(5);
    const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 30), random_tokens(r, 3)};
    inference<double, long_cfg> cpu_inf(2, 128, plan);
    cpu_inf.parameters_from_host(w);
    inference<float, long_cfg, cuda> gpu_inf(2, 128, plan);
    gpu_inf.parameters_from_host(w32);
    const generation_options o{.max_new_tokens = 40, .sampling = {.temperature = 0.0}};
    const auto a = cpu_inf.generate(prompts, o), b = gpu_inf.generate(prompts, o);
    CHECK(a.tokens == b.tokens);
    std::printf("  greedy tokens equal: %s; GPU decode %.0f tokens/s (tiny model, batch 2)\n",
                a.tokens == b.tokens ? "yes" : "no", b.decode_tokens_per_s());
}

TEST_CASE_TEMPLATE("gated decode ops on the GPU match the CPU: gate scores carried across calls, closed heads skipped",
                   T, float, bf16) {
    // gate_forward_at continues each sequence's running key sum (GATES.md Sec. 1) from where the last call left
    // it; decode_attention with per-head gains writes 0 for a closed head (gain 0) and scales the others.
    const int B = 3, n = 4, HD = 32, i0 = 1, ctx = 300;
    rng r(9);
    // 600 positions: the scan runs over several tiles; the lengths end in the first, the second and the third.
    const std::vector<std::int32_t> start{0, 7, 299}, len{600, 300, 1};
    const int T_ = 600;
    const auto qkv = test::rounded<T>(test::random_vector(r, std::size_t(B) * T_ * 3 * n * HD));
    const auto w = test::rounded<T>(test::random_vector(r, std::size_t(n - i0) * 2 * HD));
    const auto c = test::rounded<T>(test::random_vector(r, std::size_t(n - i0)));
    const auto run0 = test::random_vector(r, std::size_t(B) * n);
    std::vector<double> s_ref(std::size_t(B) * T_ * n), g_ref(s_ref.size()), run_ref = run0;
    gate_forward_at(cpu{}, s_ref.data(), g_ref.data(), run_ref.data(), qkv.data(), w.data(), c.data(), start.data(),
                    len.data(), B, T_, n, HD, i0, 0.5, false);
    auto d_qkv = test::to_device<T>(qkv), d_w = test::to_device<T>(w), d_c = test::to_device<T>(c);
    const std::vector<accum_t<T>> run0_a(run0.begin(), run0.end());
    device_buffer<accum_t<T>> d_run(run0_a.size());
    copy_from_host(cuda{}, d_run.data(), run0_a.data(), std::int64_t(run0_a.size()));
    device_buffer<std::int32_t> d_start(B), d_len(B);
    copy_from_host(cuda{}, d_start.data(), start.data(), B);
    copy_from_host(cuda{}, d_len.data(), len.data(), B);
    auto d_s = test::poisoned<T>(s_ref.size()), d_g = test::poisoned<T>(s_ref.size());
    gate_forward_at(cuda{}, d_s.data(), d_g.data(), d_run.data(), d_qkv.data(), d_w.data(), d_c.data(), d_start.data(),
                    d_len.data(), B, T_, n, HD, i0, 0.5, false);
    test::check_error<T>("gate scores at continued positions", test::rel_error(test::to_host(d_s), s_ref));
    std::vector<accum_t<T>> run_got(run0_a.size());
    copy_to_host(cuda{}, run_got.data(), d_run.data(), std::int64_t(run_got.size()));
    std::vector<double> run_got_d, run_ref_gated, run_got_gated;
    for (std::size_t i = 0; i < run_got.size(); ++i)
        if (int(i % n) >= i0) run_ref_gated.push_back(run_ref[i]), run_got_gated.push_back(double(run_got[i]));
    test::check_error<T>("running key sums after the call (each sequence's own length)",
                         test::rel_error(run_got_gated, run_ref_gated));

    // Decode attention with gains: heads 0 and 5 closed.
    const std::vector<std::int32_t> pos{3, 120, 299};
    const auto k = test::rounded<T>(test::random_vector(r, std::size_t(B) * n * ctx * HD));
    const auto v = test::rounded<T>(test::random_vector(r, k.size()));
    const auto q = test::rounded<T>(test::random_vector(r, std::size_t(B) * 3 * n * HD));
    std::vector<double> gain{0.0, 0.7, 1.0, 0.3, 0.9, 0.0, 0.5, 1.0, 0.45, 0.6, 0.8, 0.35};
    gain = test::rounded<T>(gain);
    std::vector<double> out_ref(std::size_t(B) * n * HD);
    decode_attention(cpu{}, out_ref.data(), q.data(), k.data(), v.data(), pos.data(), B, n, HD, ctx,
                     static_cast<double*>(nullptr), gain.data());
    for (int d = 0; d < HD; ++d) REQUIRE(out_ref[std::size_t(5 * HD + d)] == 0.0);
    auto d_q = test::to_device<T>(q), d_k = test::to_device<T>(k), d_v = test::to_device<T>(v),
         d_gain = test::to_device<T>(gain);
    device_buffer<std::int32_t> d_pos(B);
    copy_from_host(cuda{}, d_pos.data(), pos.data(), B);
    device_buffer<accum_t<T>> ws(std::size_t(decode_attention_workspace<T>(cuda{}, B, n, HD, ctx)));
    for (const int keys : {64, 256}) {
        CAPTURE(keys);
        set_decode_block_keys(cuda{}, keys);
        auto d_out = test::poisoned<T>(out_ref.size());
        decode_attention(cuda{}, d_out.data(), d_q.data(), d_k.data(), d_v.data(), d_pos.data(), B, n, HD, ctx,
                         ws.data(), d_gain.data());
        const auto got = test::to_host(d_out);
        for (int d = 0; d < HD; ++d) CHECK(got[std::size_t(d)] == 0.0);  // closed: exactly 0, no NaN from poison
        test::check_error<T>("decode attention with head gains (2 heads closed)", test::rel_error(got, out_ref));
    }
    set_decode_block_keys(cuda{}, 0);
}

TEST_CASE("decoding with learned head gates on the GPU (fp32) matches the CPU, with the same heads skipped") {
    const gate_options go{.threshold = 0.5, .n_dense = 1};
    const sgt::parameter_table table = [&] {
        auto t = parameter_table::llama(long_cfg.shape);
        gated_variant(go).add_parameters(long_cfg, t);
        return t;
    }();
    std::vector<double> w = strong_weights(14);
    w.resize(std::size_t(table.numel()));
    rng r(15);
    for (const auto& e : table)
        if (e.name.find(".gate.") != std::string::npos)
            for (std::int64_t i = 0; i < e.numel(); ++i)
                w[std::size_t(e.offset + i)] = e.name.ends_with("weight") ? 0.5 * r.normal() : r.normal();
    const std::vector<float> w32(w.begin(), w.end());
    const std::vector<std::vector<std::int32_t>> prompts{random_tokens(r, 70), random_tokens(r, 3)};
    const auto next = random_steps(r, 10, 2);
    for (const char* name : {"vanilla", "sgt K=2 fade", "block loop"}) {
        CAPTURE(name);
        const loop_plan plan = plans()[name];
        inference<double, long_cfg> cpu_inf(2, 96, plan);
        cpu_inf.set_gates(go);
        cpu_inf.parameters_from_host(w);
        inference<float, long_cfg, cuda> gpu_inf(2, 96, plan);
        gpu_inf.set_gates(go);
        gpu_inf.parameters_from_host(w32);
        const auto ref = run(cpu_inf, prompts, next);
        const auto got = run(gpu_inf, prompts, next);
        CHECK(gpu_inf.step_graph_captured());
        test::check_error<float>(std::string("gated logits, prefill + 10 decode steps: ") + name, test::rel_error(got, ref));
        const auto &a = cpu_inf.gate_stats(), &b = gpu_inf.gate_stats();
        CHECK(a.head_reads == b.head_reads);
        CHECK(a.head_reads_skipped == b.head_reads_skipped);
        CHECK(a.kv_vectors_skipped == b.kv_vectors_skipped);
        CHECK(b.head_reads_skipped > 0);
        CHECK(b.head_reads_skipped < b.head_reads);
        std::printf("  %s: %lld of %lld gated head reads skipped on both\n", name, (long long)b.head_reads_skipped,
                    (long long)b.head_reads);
    }
}
