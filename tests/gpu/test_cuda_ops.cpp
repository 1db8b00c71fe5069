// Every leaf op of the CUDA backend, forward and backward, against the CPU backend in double on the same
// (rounded) random inputs, at several odd sizes. Bounds: fp32 relative error ≤ 1e-5, bf16 ≤ 2e-2. Outputs
// are poisoned with NaN before each run, and NaN never passes (test::rel_error).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <span>
#include <tuple>

#include "support.hpp"

using namespace sgt;
using test::bf16;

namespace {
const cpu host{};
const cuda dev{};

template <class T>
void check_matmul(int N, int I, int O, sgt::rng& r) {
    const auto x = test::rounded<T>(test::random_vector(r, std::size_t(N) * I));
    const auto w = test::rounded<T>(test::random_vector(r, std::size_t(O) * I, 0.2));
    const auto y0 = test::rounded<T>(test::random_vector(r, std::size_t(N) * O));
    const auto dy = test::rounded<T>(test::random_vector(r, std::size_t(N) * O));
    const auto dx0 = test::rounded<T>(test::random_vector(r, std::size_t(N) * I));
    const auto dw0 = test::rounded<T>(test::random_vector(r, std::size_t(O) * I));
    auto dx_ = test::to_device<T>(x), dw_ = test::to_device<T>(w);

    std::vector<double> ref(std::size_t(N) * O);
    matmul_forward(host, ref.data(), x.data(), w.data(), N, I, O);
    auto y = test::poisoned<T>(ref.size());
    matmul_forward(dev, y.data(), dx_.data(), dw_.data(), N, I, O);
    const std::string size = fmt::format(" {}x{}x{}", N, I, O);
    test::check_error<T>("matmul_forward" + size, test::rel_error(test::to_host(y), ref));

    std::vector<double> ref_acc = y0;
    matmul_forward(host, ref_acc.data(), x.data(), w.data(), N, I, O, true);
    auto ya = test::to_device<T>(y0);
    matmul_forward(dev, ya.data(), dx_.data(), dw_.data(), N, I, O, true);
    test::check_error<T>("matmul_forward accumulate" + size, test::rel_error(test::to_host(ya), ref_acc));

    std::vector<double> rdx = dx0, rdw = dw0;
    matmul_backward(host, rdx.data(), rdw.data(), dy.data(), x.data(), w.data(), N, I, O);
    auto gdx = test::to_device<T>(dx0), gdw = test::to_device<T>(dw0), gdy = test::to_device<T>(dy);
    matmul_backward(dev, gdx.data(), gdw.data(), gdy.data(), dx_.data(), dw_.data(), N, I, O);
    test::check_error<T>("matmul_backward din" + size, test::rel_error(test::to_host(gdx), rdx));
    test::check_error<T>("matmul_backward dw" + size, test::rel_error(test::to_host(gdw), rdw));

    // A residual added in the product's epilogue (out = y0 + x wᵀ), into a NaN-poisoned output.
    auto yr = test::poisoned<T>(ref.size());
    auto gy0 = test::to_device<T>(y0);
    matmul_forward(dev, yr.data(), dx_.data(), dw_.data(), N, I, O, false, gy0.data());
    test::check_error<T>("matmul_forward + residual" + size, test::rel_error(test::to_host(yr), ref_acc));

    // overwrite: NaN-poisoned gradient outputs are written, as the CPU's zeroed ones are accumulated into.
    std::vector<double> zdx(dx0.size(), 0.0), zdw(dw0.size(), 0.0);
    matmul_backward(host, zdx.data(), zdw.data(), dy.data(), x.data(), w.data(), N, I, O);
    auto odx = test::poisoned<T>(dx0.size()), odw = test::poisoned<T>(dw0.size());
    matmul_backward(dev, odx.data(), odw.data(), gdy.data(), dx_.data(), dw_.data(), N, I, O,
                    overwrite{.din = true, .dw = true});
    test::check_error<T>("matmul_backward overwrite din" + size, test::rel_error(test::to_host(odx), zdx));
    test::check_error<T>("matmul_backward overwrite dw" + size, test::rel_error(test::to_host(odw), zdw));
}
}  // namespace

TEST_CASE_TEMPLATE("matmul through cuBLASLt matches the CPU", T, float, bf16, double) {
    sgt::rng r(1);
    check_matmul<T>(37, 53, 29, r);
    check_matmul<T>(1, 7, 3, r);
    check_matmul<T>(130, 96, 250, r);
}

namespace {
template <class T>
std::vector<T> device_bits(const device_buffer<T>& d) {
    std::vector<T> h(d.size());
    copy_to_host(dev, h.data(), d.data(), std::int64_t(h.size()));
    return h;
}
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
}  // namespace

// tune_products keeps only algorithms that give the first choice's bits (on its own random operands), so every
// product of a shape gives the same bits before and after it on other operands: a forward with a residual in its
// epilogue, din, and dw accumulated into, at gpt2's shapes (where an H100 keeps other algorithms for several, and
// offers some with other bits for dw) and odd ones.
TEST_CASE_TEMPLATE("products tuned by timing give the bits of cuBLASLt's first choice", T, float, bf16) {
    sgt::rng r(11);
    using shape_list = std::vector<std::tuple<int, int, int>>;  // N x I x O
    const shape_list shapes = std::is_same_v<T, bf16> ? shape_list{{16384, 2048, 768}, {16384, 768, 4096}, {37, 53, 29}}
                                                      : shape_list{{4096, 1024, 768}, {37, 53, 29}};
    const std::size_t logged = product_tunings(dev).size();
    for (const auto& shape : shapes) {
        const int N = std::get<0>(shape), I = std::get<1>(shape), O = std::get<2>(shape);
        CAPTURE(N);
        CAPTURE(I);
        CAPTURE(O);
        auto x = test::to_device<T>(test::random_vector(r, std::size_t(N) * I));
        auto w = test::to_device<T>(test::random_vector(r, std::size_t(O) * I, 0.2));
        auto y0 = test::to_device<T>(test::random_vector(r, std::size_t(N) * O));
        auto dy = test::to_device<T>(test::random_vector(r, std::size_t(N) * O));
        const auto dw0 = test::random_vector(r, std::size_t(O) * I);
        auto products = [&] {
            auto y = test::poisoned<T>(std::size_t(N) * O);
            auto dx = test::poisoned<T>(std::size_t(N) * I);
            auto dw = test::to_device<T>(dw0);
            matmul_forward(dev, y.data(), x.data(), w.data(), N, I, O, false, y0.data());
            matmul_backward(dev, dx.data(), dw.data(), dy.data(), x.data(), w.data(), N, I, O,
                            overwrite{.din = true});
            return std::tuple{device_bits(y), device_bits(dx), device_bits(dw)};
        };
        const auto [y1, dx1, dw1] = products();
        tune_products(dev);
        const auto [y2, dx2, dw2] = products();
        CHECK(same_bits(y1, y2));
        CHECK(same_bits(dx1, dx2));
        CHECK(same_bits(dw1, dw2));
    }
    // Each shape's three products were looked at (here, or by a call before that met their plans first).
    const auto log = product_tunings(dev);
    CHECK(log.size() > logged);
    for (const auto& shape : shapes) {
        const int N = std::get<0>(shape), I = std::get<1>(shape), O = std::get<2>(shape);
        for (const auto& product : {std::tuple{O, N, I, true, false, true}, std::tuple{I, N, O, false, false, false},
                                    std::tuple{I, O, N, false, true, true}}) {  // out + residual, din, dw added to
            const int m = std::get<0>(product), n = std::get<1>(product), k = std::get<2>(product);
            const bool ta = std::get<3>(product), tb = std::get<4>(product), accumulate = std::get<5>(product);
            CAPTURE(m);
            CAPTURE(n);
            CAPTURE(k);
            const auto t = std::find_if(log.begin(), log.end(), [&](const product_tuning& e) {
                return e.m == m && e.n == n && e.k == k && e.ta == ta && e.tb == tb && e.accumulate == accumulate &&
                       e.element_bytes == int(sizeof(T));
            });
            REQUIRE(t != log.end());
            std::printf("  tuned %5d x %5d x %5d (%s%s%s, %d-byte): %d algorithms, %d with the first's bits, kept "
                        "#%d: %.4f -> %.4f ms%s%s\n",
                        t->m, t->n, t->k, t->ta ? "T" : "N", t->tb ? "T" : "N", t->accumulate ? ", accumulate" : "",
                        t->element_bytes, t->candidates, t->identical, t->chosen, t->first_ms, t->chosen_ms,
                        t->skipped ? ", not timed: " : "", t->skipped ? t->skipped : "");
            CHECK(t->candidates >= 1);
            CHECK(t->identical >= 1);
            CHECK(t->identical <= t->candidates);
            CHECK(t->chosen < t->candidates);
            CHECK(t->chosen_ms <= t->first_ms);
        }
    }
    // Tuned once: a second call looks at nothing new.
    tune_products(dev);
    CHECK(product_tunings(dev).size() == log.size());
}

TEST_CASE_TEMPLATE("rmsnorm forward and backward match the CPU", T, float, bf16) {
    sgt::rng r(2);
    // Rows of up to 1024 take the one-pass backward (1, 2, 3, 4, 6 and 8 packs a lane among these sizes), 2000
    // the two-pass one; 5000 rows put several rows on a warp.
    for (auto [N, C] : {std::pair{41, 67}, std::pair{3, 768}, std::pair{129, 5}, std::pair{1000, 1024},
                         std::pair{333, 264}, std::pair{5000, 768}, std::pair{50, 2000}}) {
        const auto x = test::rounded<T>(test::random_vector(r, std::size_t(N) * C));
        const auto w = test::rounded<T>(test::random_vector(r, std::size_t(C)));
        const auto dy = test::rounded<T>(test::random_vector(r, std::size_t(N) * C));
        const auto dx0 = test::rounded<T>(test::random_vector(r, std::size_t(N) * C));
        const auto dw0 = test::rounded<T>(test::random_vector(r, std::size_t(C)));
        std::vector<double> out(x.size()), rstd(N);
        rmsnorm_forward(host, out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5);
        auto gx = test::to_device<T>(x), gw = test::to_device<T>(w);
        auto gout = test::poisoned<T>(out.size());
        auto grstd = test::poisoned<T>(rstd.size());
        rmsnorm_forward(dev, gout.data(), grstd.data(), gx.data(), gw.data(), N, C, 1e-5);
        const std::string size = fmt::format(" {}x{}", N, C);
        test::check_error<T>("rmsnorm_forward" + size, test::rel_error(test::to_host(gout), out));
        test::check_error<T>("rmsnorm_forward rstd" + size, test::rel_error(test::to_host(grstd), rstd));

        // The backward from the device's own rstd (as rounded to T), as the model runs it.
        const auto rstd_t = test::to_host(grstd);
        std::vector<double> dx = dx0, dw = dw0;
        rmsnorm_backward(host, dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd_t.data(), N, C);
        auto gdx = test::to_device<T>(dx0), gdw = test::to_device<T>(dw0), gdy = test::to_device<T>(dy);
        rmsnorm_backward(dev, gdx.data(), gdw.data(), gdy.data(), gx.data(), gw.data(), grstd.data(), N, C);
        test::check_error<T>("rmsnorm_backward din" + size, test::rel_error(test::to_host(gdx), dx));
        test::check_error<T>("rmsnorm_backward dw" + size, test::rel_error(test::to_host(gdw), dw));
    }
}

TEST_CASE_TEMPLATE("rope forward and backward match the CPU", T, float, bf16) {
    sgt::rng r(3);
    const int B = 3, T_ = 13, n = 5, HD = 16;
    std::vector<double> cs(std::size_t(T_) * HD / 2), sn(cs.size());
    rope_tables(host, cs.data(), sn.data(), T_, HD, 10000.0);
    device_buffer<accum_t<T>> gc(cs.size()), gs(sn.size());
    rope_tables(dev, gc.data(), gs.data(), T_, HD, 10000.0);
    // Rows as wide as the packed qkv (16-byte packs), and 7 wider (one element at a time).
    for (const std::int64_t stride : {std::int64_t(3) * n * HD, std::int64_t(3) * n * HD + 7}) {
        const auto x = test::rounded<T>(test::random_vector(r, std::size_t(B) * T_ * stride));
        for (const bool backward : {false, true}) {
            std::vector<double> ref = x;
            auto g = test::to_device<T>(x);
            if (backward) {
                rope_backward(host, ref.data(), cs.data(), sn.data(), B, T_, n, HD, stride);
                rope_backward(dev, g.data(), gc.data(), gs.data(), B, T_, n, HD, stride);
            } else {
                rope_forward(host, ref.data(), cs.data(), sn.data(), B, T_, n, HD, stride);
                rope_forward(dev, g.data(), gc.data(), gs.data(), B, T_, n, HD, stride);
            }
            test::check_error<T>(fmt::format("{} row stride {}", backward ? "rope_backward" : "rope_forward", stride),
                                 test::rel_error(test::to_host(g), ref));
        }
    }
}

TEST_CASE_TEMPLATE("swiglu forward and backward match the CPU, on separate arrays and on the halves of (N, 2F) rows", T,
                   float, bf16) {
    sgt::rng r(4);
    // (rows, F): odd rows (one element at a time), a single short row, rows of whole 16-byte packs.
    for (const auto& [rows, F] : std::vector<std::pair<int, int>>{{7, 143}, {1, 7}, {64, 1024}, {3, 40}})
        for (const bool halves : {false, true}) {
            CAPTURE(rows);
            CAPTURE(F);
            CAPTURE(halves);
            const std::int64_t n = std::int64_t(rows) * F, ld = halves ? 2 * F : F;
            // gate and up: the halves of each row of one (rows, 2F) array, or its first and second (rows, F) halves.
            const std::int64_t up_at = halves ? F : n;
            const auto gu = test::rounded<T>(test::random_vector(r, 2 * n, 2.0));
            const auto dy = test::rounded<T>(test::random_vector(r, n));
            std::vector<double> out(n), dgu(2 * n, 0.0);
            swiglu_forward(host, out.data(), gu.data(), gu.data() + up_at, rows, F, ld);
            swiglu_backward(host, dgu.data(), dgu.data() + up_at, dy.data(), gu.data(), gu.data() + up_at, rows, F, ld);
            auto g_gu = test::to_device<T>(gu), g_dy = test::to_device<T>(dy);
            auto g_out = test::poisoned<T>(n), g_dgu = test::poisoned<T>(2 * n);  // overwritten
            swiglu_forward(dev, g_out.data(), g_gu.data(), g_gu.data() + up_at, rows, F, ld);
            swiglu_backward(dev, g_dgu.data(), g_dgu.data() + up_at, g_dy.data(), g_gu.data(), g_gu.data() + up_at,
                            rows, F, ld);
            test::check_error<T>("swiglu_forward", test::rel_error(test::to_host(g_out), out));
            test::check_error<T>("swiglu_backward", test::rel_error(test::to_host(g_dgu), dgu));
            if (!halves) {  // dgate over dout, each pack read before it is written
                auto g_dup = test::poisoned<T>(n);
                swiglu_backward(dev, g_dy.data(), g_dup.data(), g_dy.data(), g_gu.data(), g_gu.data() + up_at, rows, F,
                                ld);
                const std::vector<double> dgate(dgu.begin(), dgu.begin() + n);
                test::check_error<T>("swiglu_backward in place", test::rel_error(test::to_host(g_dy), dgate));
            }
        }
}

TEST_CASE_TEMPLATE("cross-entropy forward and backward match the CPU", T, float, bf16) {
    sgt::rng r(5);
    for (auto [N, V] : {std::pair{23, 517}, std::pair{5, 50304}, std::pair{64, 3}, std::pair{6, 70000}}) {
        const auto z = test::rounded<T>(test::random_vector(r, std::size_t(N) * V, 3.0));
        std::vector<std::int32_t> tgt(N);
        for (int i = 0; i < N; ++i) tgt[i] = i % 4 == 1 ? ignore_target : std::int32_t(r.next_u64() % V);
        const loss_sum ref = cross_entropy_forward(host, z.data(), tgt.data(), N, V);
        auto gz = test::to_device<T>(z);
        device_buffer<std::int32_t> gt(N);
        copy_from_host(dev, gt.data(), tgt.data(), N);
        const loss_sum got = cross_entropy_forward(dev, gz.data(), gt.data(), N, V);
        CHECK(got.count == ref.count);
        const std::string size = fmt::format(" {}x{}", N, V);
        test::check_error<T>("cross_entropy_forward" + size, test::rel_error({got.sum}, {ref.sum}));

        const double scale = 1.0 / double(ref.count);
        std::vector<double> dz(z.size());
        cross_entropy_backward(host, dz.data(), z.data(), tgt.data(), N, V, scale);
        auto gdz = test::poisoned<T>(z.size());
        cross_entropy_backward(dev, gdz.data(), gz.data(), gt.data(), N, V, scale);
        test::check_error<T>("cross_entropy_backward" + size, test::rel_error(test::to_host(gdz), dz));

        // With the forward's log-sum-exps, written over the logits themselves, as the model runs it.
        device_buffer<accum_t<T>> lse(N);
        const loss_sum again = cross_entropy_forward(dev, gz.data(), gt.data(), N, V, lse.data());
        CHECK(again.sum == got.sum);
        cross_entropy_backward(dev, gz.data(), gz.data(), gt.data(), N, V, scale, lse.data());
        test::check_error<T>("cross_entropy_backward from lse, in place" + size, test::rel_error(test::to_host(gz), dz));

        // Both in one pass, the loss summed in device memory and the gradient written over the logits.
        auto fz = test::to_device<T>(z);
        auto sum = test::poisoned<double>(1);
        cross_entropy_forward_backward(dev, fz.data(), gt.data(), N, V, scale, sum.data());
        test::check_error<T>("cross_entropy_forward_backward loss" + size, test::rel_error(test::to_host(sum), {ref.sum}));
        test::check_error<T>("cross_entropy_forward_backward grad" + size, test::rel_error(test::to_host(fz), dz));
    }
}

TEST_CASE_TEMPLATE("embedding forward and backward match the CPU; the backward is deterministic", T, float, bf16) {
    sgt::rng r(6);
    const int N = 301, V = 19, C = 33;
    const auto table = test::rounded<T>(test::random_vector(r, std::size_t(V) * C));
    const auto dy = test::rounded<T>(test::random_vector(r, std::size_t(N) * C));
    const auto dt0 = test::rounded<T>(test::random_vector(r, std::size_t(V) * C));
    std::vector<std::int32_t> tok(N);
    for (auto& t : tok) t = std::int32_t(r.next_u64() % (V - 2));  // repeated tokens, and two rows never hit
    std::vector<double> out(std::size_t(N) * C), dt = dt0;
    embedding_forward(host, out.data(), tok.data(), table.data(), N, C);
    embedding_backward(host, dt.data(), dy.data(), tok.data(), N, C);
    device_buffer<std::int32_t> gtok(N);
    copy_from_host(dev, gtok.data(), tok.data(), N);
    auto gtable = test::to_device<T>(table), gdy = test::to_device<T>(dy);
    auto gout = test::poisoned<T>(out.size());
    embedding_forward(dev, gout.data(), gtok.data(), gtable.data(), N, C);
    test::check_error<T>("embedding_forward", test::rel_error(test::to_host(gout), out));
    std::vector<std::vector<double>> runs;
    for (int run = 0; run < 2; ++run) {
        auto gdt = test::to_device<T>(dt0);
        embedding_backward(dev, gdt.data(), gdy.data(), gtok.data(), N, C);
        runs.push_back(test::to_host(gdt));
    }
    test::check_error<T>("embedding_backward", test::rel_error(runs[0], dt));
    CHECK(runs[0] == runs[1]);
}

TEST_CASE_TEMPLATE("head packing and gains match the CPU", T, float, bf16) {
    sgt::rng r(7);
    const int NH = 6, HD = 8, C = NH * HD;
    const std::vector<int> heads{1, 4, 5};
    const std::span<const int> hs(heads);
    const int nhd = int(heads.size()) * HD;
    const auto w = test::rounded<T>(test::random_vector(r, std::size_t(C) * C));
    const auto packed_rows = test::rounded<T>(test::random_vector(r, std::size_t(nhd) * C));
    const auto packed_cols = test::rounded<T>(test::random_vector(r, std::size_t(C) * nhd));
    auto gw = test::to_device<T>(w);

    std::vector<double> rows(std::size_t(nhd) * C), cols(std::size_t(C) * nhd);
    gather_head_rows(host, rows.data(), w.data(), hs, HD, C);
    gather_head_cols(host, cols.data(), w.data(), hs, HD, C, NH);
    auto grows = test::poisoned<T>(rows.size()), gcols = test::poisoned<T>(cols.size());
    gather_head_rows(dev, grows.data(), gw.data(), hs, HD, C);
    gather_head_cols(dev, gcols.data(), gw.data(), hs, HD, C, NH);
    test::check_error<T>("gather_head_rows", test::rel_error(test::to_host(grows), rows));
    test::check_error<T>("gather_head_cols", test::rel_error(test::to_host(gcols), cols));

    std::vector<double> sr = w, sc = w;
    scatter_add_head_rows(host, sr.data(), packed_rows.data(), hs, HD, C);
    scatter_add_head_cols(host, sc.data(), packed_cols.data(), hs, HD, C, NH);
    auto gsr = test::to_device<T>(w), gsc = test::to_device<T>(w);
    auto gpr = test::to_device<T>(packed_rows), gpc = test::to_device<T>(packed_cols);
    scatter_add_head_rows(dev, gsr.data(), gpr.data(), hs, HD, C);
    scatter_add_head_cols(dev, gsc.data(), gpc.data(), hs, HD, C, NH);
    test::check_error<T>("scatter_add_head_rows", test::rel_error(test::to_host(gsr), sr));
    test::check_error<T>("scatter_add_head_cols", test::rel_error(test::to_host(gsc), sc));

    const std::vector<double> gains{1.0, 0.25, 0.7};
    std::vector<double> x = test::rounded<T>(test::random_vector(r, std::size_t(11) * nhd));
    auto gx = test::to_device<T>(x);
    const std::vector<double> gains_rounded = test::rounded<T>(gains);  // the device holds gains in T
    auto ggains = test::to_device<T>(gains_rounded);
    head_gain_forward(host, x.data(), gains_rounded.data(), 11, int(gains.size()), HD, false);
    head_gain_forward(dev, gx.data(), ggains.data(), 11, int(gains.size()), HD, false);
    test::check_error<T>("head_gain_forward", test::rel_error(test::to_host(gx), x));
}

TEST_CASE_TEMPLATE("head gains, per head and per position, and their gradients match the CPU", T, float, bf16) {
    sgt::rng r(31);
    const int n = 3, HD = 8;
    for (const std::int64_t N : {std::int64_t(1), std::int64_t(37), std::int64_t(1001)})
        for (const bool per_position : {false, true}) {
            CAPTURE(N);
            CAPTURE(per_position);
            const std::size_t values = std::size_t(N) * n * HD, gains_n = per_position ? std::size_t(N) * n : n;
            const auto x = test::rounded<T>(test::random_vector(r, values));
            const auto dy = test::rounded<T>(test::random_vector(r, values));
            const auto g = test::rounded<T>(test::random_vector(r, gains_n));
            const auto dg0 = test::rounded<T>(test::random_vector(r, gains_n));
            std::vector<double> y = x, d = dy, dg = dg0;
            head_gain_forward(host, y.data(), g.data(), N, n, HD, per_position);
            head_gain_backward(host, dg.data(), d.data(), x.data(), g.data(), N, n, HD, per_position);
            auto gy = test::to_device<T>(x), gd = test::to_device<T>(dy), gx = test::to_device<T>(x);
            auto gg = test::to_device<T>(g), gdg = test::to_device<T>(dg0);
            head_gain_forward(dev, gy.data(), gg.data(), N, n, HD, per_position);
            head_gain_backward(dev, gdg.data(), gd.data(), gx.data(), gg.data(), N, n, HD, per_position);
            test::check_error<T>("head_gain_forward", test::rel_error(test::to_host(gy), y));
            test::check_error<T>("head_gain_backward dy", test::rel_error(test::to_host(gd), d));
            test::check_error<T>("head_gain_backward dgains", test::rel_error(test::to_host(gdg), dg));
        }
}

TEST_CASE_TEMPLATE("attention forward (with entropy) and backward match the CPU", T, float, bf16) {
    sgt::rng r(8);
    struct dims { int B, S, n, HD; };  // S: the sequence length
    // Unfused path: the row kernels keep rows of up to 2048 in registers and re-read longer ones (S = 2100); the
    // permutes move 16-byte chunks where the head size allows and single elements otherwise (HD = 6). In bf16,
    // head sizes 32, 64, 96 and 128 run the fused kernels: partial tiles (130, 200, 65), one exact tile (64).
    // bf16 runs every size every way: automatic, cuDNN (in a build with it; head sizes that are multiples of 8),
    // our fused kernels and materialised, each falling back where it has no kernel. T = 1030 over 2 heads is a
    // loop pass at a training length.
    for (const auto mode : {attention_kernel::automatic, attention_kernel::cudnn, attention_kernel::fused,
                            attention_kernel::materialized}) {
        if (!std::is_same_v<T, bf16> && mode != attention_kernel::automatic) continue;
        if (mode == attention_kernel::cudnn && !detail::cudnn_built) continue;
        set_attention_kernel(dev, mode);
        for (const dims d : {dims{2, 37, 3, 16}, dims{1, 5, 1, 8}, dims{3, 130, 2, 64}, dims{1, 2100, 1, 8}, dims{2, 9, 2, 6},
                             dims{2, 200, 3, 32}, dims{1, 65, 2, 128}, dims{1, 64, 1, 96},
                             dims{1, 1030, 2, 64}}) {
            const std::size_t nqkv = std::size_t(d.B) * d.S * 3 * d.n * d.HD, no = std::size_t(d.B) * d.S * d.n * d.HD;
            const std::size_t np = std::size_t(d.B) * d.n * d.S * d.S;
            const auto qkv = test::rounded<T>(test::random_vector(r, nqkv));
            const auto dout = test::rounded<T>(test::random_vector(r, no));
            std::vector<double> out(no), probs(np), ent(std::size_t(d.B) * d.n), dqkv(nqkv);
            attention_forward(host, out.data(), probs.data(), ent.data(), qkv.data(), d.B, d.S, d.n, d.HD);
            attention_backward(host, dqkv.data(), dout.data(), qkv.data(), probs.data(), d.B, d.S, d.n, d.HD);

            auto gqkv = test::to_device<T>(qkv), gdout = test::to_device<T>(dout);
            const auto path = detail::attention_path_for<T>(d.S, d.HD);
            const bool fused = path != detail::attention_path::materialized;  // saves log-sum-exp and output, not probs
            auto gout = test::poisoned<T>(no), gdqkv = test::poisoned<T>(nqkv);
            auto gprobs = test::poisoned<T>(std::size_t(attention_saved_size<T>(dev, d.B, d.S, d.n, d.HD)));
            auto gent = test::poisoned<double>(ent.size());
            attention_forward(dev, gout.data(), gprobs.data(), gent.data(), gqkv.data(), d.B, d.S, d.n, d.HD);
            attention_backward(dev, gdqkv.data(), gdout.data(), gqkv.data(), gprobs.data(), d.B, d.S, d.n, d.HD);
            const std::string size = fmt::format(" B{} T{} n{} HD{}{}", d.B, d.S, d.n, d.HD,
                                                 path == detail::attention_path::cudnn ? " cuDNN"
                                                 : fused                               ? " fused"
                                                                                       : "");
            test::check_error<T>("attention_forward out" + size, test::rel_error(test::to_host(gout), out));
            if (!fused) test::check_error<T>("attention_forward probs" + size, test::rel_error(test::to_host(gprobs), probs));
            test::check_error<T>("attention_forward entropy" + size, test::rel_error(test::to_host(gent), ent));
            test::check_error<T>("attention_backward dqkv" + size, test::rel_error(test::to_host(gdqkv), dqkv));
            // Without an entropy buffer (a loop pass whose entropy no report takes) the same output.
            auto gout2 = test::poisoned<T>(no);
            attention_forward(dev, gout2.data(), gprobs.data(), static_cast<double*>(nullptr), gqkv.data(), d.B, d.S,
                              d.n, d.HD);
            const auto o1 = test::to_host(gout), o2 = test::to_host(gout2);
            CHECK(std::memcmp(o1.data(), o2.data(), o1.size() * sizeof(o1[0])) == 0);
        }
    }
    set_attention_kernel(dev, attention_kernel::automatic);
}

// Runs of lengths `lengths` cycling (decay alternating 0.1 / 0), a gap of lengths[0] elements after every seventh
// run, until n elements are used.
std::vector<adamw_run> make_runs(std::int64_t n, std::span<const std::int64_t> lengths) {
    std::vector<adamw_run> runs;
    std::int64_t at = 0;
    for (std::size_t i = 0;; ++i) {
        const std::int64_t len = lengths[i % lengths.size()];
        if (at + len > n) break;
        runs.push_back({at, len, i % 2 ? 0.0 : 0.1});
        at += len + (i % 7 == 6 ? lengths[0] : 0);
    }
    return runs;
}

TEST_CASE_TEMPLATE("the row ops of loop steps in the subspace (loop_subspace.hpp) match the CPU", T, float, bf16) {
    using A = accum_t<T>;
    sgt::rng r(31);
    // (rows, width C, heads n, head size HD; m = n·HD): odd sizes (rows of single elements: C = 67, m = 5, and
    // C = 67 with half-heads of 2 values: rotated pairs one by one), gpt2's (768, 2 heads of 64), and rows past a
    // block's 8 warps; the others move 16-byte packs. q and k are rotated as RoPE at position row mod 5, but for
    // the head size 5 (none).
    for (auto [N, C, n, HD] : {std::tuple{37, 67, 2, 4}, std::tuple{7, 50, 1, 5}, std::tuple{5, 768, 2, 64},
                               std::tuple{1000, 96, 1, 16}}) {
        const int m = n * HD, W = 3 * m, T_ = 5;
        const std::string size = fmt::format(" N{} C{} m{}", N, C, m);
        auto vec = [&](std::size_t n, double scale = 1.0) { return test::rounded<T>(test::random_vector(r, n, scale)); };
        auto acc = [&](std::size_t n, double scale) { return test::rounded<A>(test::random_vector(r, n, scale)); };
        const auto x = vec(std::size_t(N) * C), dx0 = vec(x.size());
        auto gx = test::to_device<T>(x);

        std::vector<double> s(N);
        row_sum_squares(host, s.data(), x.data(), N, C);
        auto gs = test::poisoned<A>(s.size());
        row_sum_squares(dev, gs.data(), gx.data(), N, C);
        test::check_error<T>("row_sum_squares" + size, test::rel_error(test::to_host(gs), s));
        const auto s_a = test::to_host(gs);  // as the device holds it, for the ops below
        auto ds = acc(std::size_t(N), 0.1);
        std::vector<double> dx = dx0;
        row_sum_squares_backward(host, dx.data(), ds.data(), x.data(), N, C);
        auto gdx = test::to_device<T>(dx0), gds = test::to_device<A>(ds);
        row_sum_squares_backward(dev, gdx.data(), gds.data(), gx.data(), N, C);
        test::check_error<T>("row_sum_squares_backward" + size, test::rel_error(test::to_host(gdx), dx));

        // RoPE tables in double on the host, rounded to A on the device
        std::vector<double> cos_t(std::size_t(T_) * std::max(HD / 2, 1)), sin_t(cos_t.size());
        rope_tables(host, cos_t.data(), sin_t.data(), T_, HD, 10000.0);
        auto gcos = test::to_device<A>(test::rounded<A>(cos_t)), gsin = test::to_device<A>(test::rounded<A>(sin_t));
        const int rotated = HD % 2 == 0 ? 2 * n : 0;
        const rope_rows<double> rope{cos_t.data(), sin_t.data(), T_, rotated, HD};
        const rope_rows<A> grope{gcos.data(), gsin.data(), T_, rotated, HD};
        // A step's row ops from the state z = [a | u] (rows of 4m): the first step of a run (s read) and a later
        // one (s from the update before it, o' copied into the sum at step 2 and added to it after).
        const auto z = vec(std::size_t(N) * 4 * m), u_prev = vec(std::size_t(N) * m), o_prev = vec(u_prev.size()),
                   sum0 = vec(u_prev.size());
        auto gz = test::to_device<T>(z), gu_prev = test::to_device<T>(u_prev), go_prev = test::to_device<T>(o_prev),
             gsa = test::to_device<A>(s_a);
        std::vector<double> s_k(N);  // s of the later step, as the device computed it (for the backward)
        std::vector<double> qkv_t;   // q, k, v of the later step, as the device computed them
        for (const int form_id : {0, 1, 2}) {
            const bool later = form_id > 0, first = form_id == 1;
            const std::string form = !later ? " (first step)" : first ? " (step 2)" : " (a later step)";
            std::vector<double> qkv(std::size_t(N) * W), sk = later ? std::vector<double>(N) : s_a, uk(u_prev.size()),
                sum = sum0;
            subspace_prev<double> prev;
            if (later) prev = {s_a.data(), u_prev.data(), o_prev.data(), sum.data(), first};
            subspace_step_forward(host, qkv.data(), sk.data(), uk.data(), z.data(), N, m, C, 1e-5, rope, prev);
            auto gqkv = test::poisoned<T>(qkv.size()), guk = test::poisoned<T>(uk.size());
            auto gsk = later ? test::poisoned<A>(sk.size()) : test::to_device<A>(s_a);
            auto gsum = test::to_device<T>(sum0);
            subspace_prev<T> gprev;
            if (later) gprev = {gsa.data(), gu_prev.data(), go_prev.data(), gsum.data(), first};
            subspace_step_forward(dev, gqkv.data(), gsk.data(), guk.data(), gz.data(), N, m, C, 1e-5, grope, gprev);
            test::check_error<T>("subspace_step_forward qkv" + form + size, test::rel_error(test::to_host(gqkv), qkv));
            test::check_error<T>("subspace_step_forward u" + form + size, test::rel_error(test::to_host(guk), uk));
            if (later) {
                test::check_error<T>("subspace_step_forward s" + form + size, test::rel_error(test::to_host(gsk), sk));
                test::check_error<T>("subspace_step_forward sum" + form + size,
                                     test::rel_error(test::to_host(gsum), sum));
                s_k = test::to_host(gsk);
                qkv_t = test::to_host(gqkv);
            }
        }
        // The backward of that later step from its q, k, v and s as the device holds them, in the model's three
        // forms: a run's last step (dz written, the step before's terms), a middle one (dz added to; the terms of
        // the updates before and after it) and its first (the update after it only).
        const auto dqkv = vec(std::size_t(N) * W), dz0 = vec(z.size()), o_k = vec(u_prev.size()),
                   u_k = vec(u_prev.size()), d_sum = vec(u_prev.size()), d_o0 = vec(u_prev.size());
        auto gqkv_t = test::to_device<T>(qkv_t), gs_k = test::to_device<A>(s_k), go_k = test::to_device<T>(o_k),
             gu_k = test::to_device<T>(u_k), gd_sum = test::to_device<T>(d_sum);
        for (const int form_id : {0, 1, 2}) {
            const bool last = form_id == 0, has_prev = form_id < 2;
            const std::string form = last ? " (last step)" : has_prev ? " (middle step)" : " (first step)";
            std::vector<double> dq = dqkv, dsk = ds, dz = dz0, d_o = d_o0;
            subspace_prev_grad<double> prev;
            if (has_prev) prev = {u_prev.data(), u_k.data(), o_prev.data(), d_sum.data(), d_o.data()};
            subspace_step_backward(host, dsk.data(), dz.data(), dq.data(), qkv_t.data(), s_k.data(),
                                   last ? nullptr : o_k.data(), N, m, C, 1e-5, rope, !last, prev);
            auto gdq = test::to_device<T>(dqkv), gdsk = test::to_device<A>(ds);
            auto gdz = last ? test::poisoned<T>(dz0.size()) : test::to_device<T>(dz0);
            auto gd_o = test::poisoned<T>(d_o0.size());
            subspace_prev_grad<T> gprev;
            if (has_prev) gprev = {gu_prev.data(), gu_k.data(), go_prev.data(), gd_sum.data(), gd_o.data()};
            subspace_step_backward(dev, gdsk.data(), gdz.data(), gdq.data(), gqkv_t.data(), gs_k.data(),
                                   last ? nullptr : go_k.data(), N, m, C, 1e-5, grope, !last, gprev);
            test::check_error<T>("subspace_step_backward dz" + form + size, test::rel_error(test::to_host(gdz), dz));
            test::check_error<T>("subspace_step_backward ds" + form + size, test::rel_error(test::to_host(gdsk), dsk));
            if (has_prev)
                test::check_error<T>("subspace_step_backward d_o" + form + size,
                                     test::rel_error(test::to_host(gd_o), d_o));
        }
        // A run's weights over heads 1, 3, ... of NH = 2n + 1 (W_Q, W_K, W_V (NH·HD, C), W_O (C, NH·HD)), and their
        // gradients added into the layer's.
        const int NH = 2 * n + 1;
        std::vector<int> heads;
        for (int i = 0; i < n; ++i) heads.push_back(2 * i + 1);
        const std::size_t full = std::size_t(NH) * HD * C, packed = std::size_t(m) * C;
        const auto wq = vec(full), wk = vec(full), wv = vec(full), wo = vec(full), gamma = vec(std::size_t(C));
        std::vector<double> w_qkv(3 * packed), w_o(packed), w(4 * packed);
        gather_run_weights(host, w_qkv.data(), w_o.data(), w.data(),
                           attention_weights<double>{gamma.data(), wq.data(), wk.data(), wv.data(), wo.data()}, heads,
                           HD, C, NH);
        auto gwq = test::to_device<T>(wq), gwk = test::to_device<T>(wk), gwv = test::to_device<T>(wv),
             gwo = test::to_device<T>(wo), ggamma = test::to_device<T>(gamma);
        auto gw_qkv = test::poisoned<T>(w_qkv.size()), gw_o = test::poisoned<T>(w_o.size()),
             gw = test::poisoned<T>(w.size());
        gather_run_weights(dev, gw_qkv.data(), gw_o.data(), gw.data(),
                           attention_weights<T>{ggamma.data(), gwq.data(), gwk.data(), gwv.data(), gwo.data()}, heads,
                           HD, C, NH);
        test::check_error<T>("gather_run_weights w_qkv" + size, test::rel_error(test::to_host(gw_qkv), w_qkv));
        test::check_error<T>("gather_run_weights w_o" + size, test::rel_error(test::to_host(gw_o), w_o));
        test::check_error<T>("gather_run_weights w" + size, test::rel_error(test::to_host(gw), w));
        const auto dw0 = vec(w.size()), dw_o0 = vec(w_o.size()), dq0 = vec(full), dk0 = vec(full), dv0 = vec(full),
                   do0 = vec(full), dg0 = vec(std::size_t(C));
        std::vector<double> dw = dw0, dw_o = dw_o0, dq = dq0, dk = dk0, dv = dv0, dout_w = do0, dg = dg0;
        scatter_run_grads(host, attention_grads<double>{dg.data(), dq.data(), dk.data(), dv.data(), dout_w.data()},
                          dw.data(), dw_o.data(), w_qkv.data(), gamma.data(), heads, HD, C, NH);
        auto gdw = test::to_device<T>(dw0), gdw_o = test::to_device<T>(dw_o0), gdq = test::to_device<T>(dq0),
             gdk = test::to_device<T>(dk0), gdv = test::to_device<T>(dv0), gdo = test::to_device<T>(do0),
             gdg = test::to_device<T>(dg0);
        scatter_run_grads(dev, attention_grads<T>{gdg.data(), gdq.data(), gdk.data(), gdv.data(), gdo.data()},
                          gdw.data(), gdw_o.data(), gw_qkv.data(), ggamma.data(), heads, HD, C, NH);
        test::check_error<T>("scatter_run_grads W_Q" + size, test::rel_error(test::to_host(gdq), dq));
        test::check_error<T>("scatter_run_grads W_K" + size, test::rel_error(test::to_host(gdk), dk));
        test::check_error<T>("scatter_run_grads W_V" + size, test::rel_error(test::to_host(gdv), dv));
        test::check_error<T>("scatter_run_grads W_O" + size, test::rel_error(test::to_host(gdo), dout_w));
        test::check_error<T>("scatter_run_grads gamma" + size, test::rel_error(test::to_host(gdg), dg));
    }
}

TEST_CASE("AdamW over many runs, clipped by the global norm, matches the CPU in fp32 and in mixed precision") {
    sgt::rng r(9);
    const std::int64_t n = 40009;
    const auto p = test::rounded<float>(test::random_vector(r, n)), g = test::rounded<float>(test::random_vector(r, n));
    const auto m0 = test::rounded<float>(test::random_vector(r, n, 0.1));
    auto v0 = test::rounded<float>(test::random_vector(r, n, 0.1));
    for (auto& x : v0) x = std::abs(x);
    adamw_hyper h;
    h.clip = 1.0;  // ‖g‖ ≈ 200: every gradient is scaled
    // More runs than one launch takes (96); lengths that keep runs aligned to 4 elements (the packed kernel) and
    // lengths that do not (the kernel of single elements), with runs longer than a block's chunk (2048 or 512).
    const std::int64_t aligned_lengths[] = {4, 64, 8, 12, 16, 2500, 4, 8, 12, 20},
                       odd_lengths[] = {5, 61, 3, 17, 9, 2501, 7, 11, 13, 21};
    for (const auto lengths : {std::span<const std::int64_t>(aligned_lengths), std::span<const std::int64_t>(odd_lengths)}) {
        const auto runs = make_runs(n, lengths);
        REQUIRE(runs.size() > 96);
        CAPTURE(lengths[0]);
        // The norm in two parts: the first half of the buffer and the rest.
        const std::int64_t half = n / 2;
        auto d_sq = test::to_device<double>(std::vector<double>(2, std::nan("")));
        auto d_values = sgt::device_buffer<adamw_step_values>(1);

        std::vector<double> rp = p, rm = m0, rv = v0;
        auto gp = test::to_device<float>(p), gg = test::to_device<float>(g), gm = test::to_device<float>(m0),
             gv = test::to_device<float>(v0);
        // Mixed: bf16 working copy and gradient, fp32 master and moments.
        const auto gb = test::rounded<bf16>(g);
        std::vector<double> mp = p, mm = m0, mv = v0;
        auto master = test::to_device<float>(p), mm_d = test::to_device<float>(m0), mv_d = test::to_device<float>(v0);
        auto work = test::poisoned<bf16>(n);
        auto gbd = test::to_device<bf16>(gb);
        for (int t = 1; t <= 3; ++t) {
            const adamw_step_values s{1e-3, 1.0 - std::pow(h.beta1, t), 1.0 - std::pow(h.beta2, t)};
            copy_from_host(dev, d_values.data(), &s, 1);
            double sq[2] = {sum_squares(host, g.data(), half), sum_squares(host, g.data() + half, n - half)};
            adamw_update(host, rp.data(), g.data(), rm.data(), rv.data(), runs, h, &s, sq, 2);
            sum_squares(dev, gg.data(), half, d_sq.data());
            sum_squares(dev, gg.data() + half, n - half, d_sq.data() + 1);
            adamw_update(dev, gp.data(), gg.data(), gm.data(), gv.data(), runs, h, d_values.data(), d_sq.data(), 2);

            double sqb[2] = {sum_squares(host, gb.data(), half), sum_squares(host, gb.data() + half, n - half)};
            adamw_update(host, mp.data(), gb.data(), mm.data(), mv.data(), runs, h, &s, sqb, 2);
            sum_squares(dev, gbd.data(), half, d_sq.data());
            sum_squares(dev, gbd.data() + half, n - half, d_sq.data() + 1);
            adamw_update(dev, work.data(), gbd.data(), master.data(), mm_d.data(), mv_d.data(), runs, h,
                         d_values.data(), d_sq.data(), 2);
        }
        test::check_error<float>("adamw_update param", test::rel_error(test::to_host(gp), rp));
        test::check_error<float>("adamw_update m", test::rel_error(test::to_host(gm), rm));
        test::check_error<float>("adamw_update v", test::rel_error(test::to_host(gv), rv));
        CHECK(test::to_host(gg) == test::rounded<float>(g));  // read, never scaled in place
        test::check_error<float>("adamw_update mixed: fp32 master", test::rel_error(test::to_host(master), mp));
        // The working copy is written where a run updates, and only there (the gaps keep their poison).
        const auto w = test::to_host(work);
        std::vector<double> w_runs, mp_runs;
        for (const auto& run : runs)
            for (std::int64_t i = run.offset; i < run.offset + run.n; ++i) {
                w_runs.push_back(w[std::size_t(i)]);
                mp_runs.push_back(mp[std::size_t(i)]);
            }
        test::check_error<bf16>("adamw_update mixed: bf16 copy", test::rel_error(w_runs, mp_runs));
        CHECK(std::isnan(w[std::size_t(runs[6].offset + runs[6].n)]));  // the first gap

        // A non-finite norm: nothing is written.
        const auto kept = test::to_host(gp);
        const double nan = std::nan("");
        copy_from_host(dev, d_sq.data(), &nan, 1);
        adamw_update(dev, gp.data(), gg.data(), gm.data(), gv.data(), runs, h, d_values.data(), d_sq.data(), 2);
        CHECK(test::to_host(gp) == kept);
    }
}

TEST_CASE_TEMPLATE("elementwise helpers and CUB reductions match the CPU", T, float, bf16) {
    sgt::rng r(10);
    const std::int64_t n = 100003;
    const auto a = test::rounded<T>(test::random_vector(r, n)), b = test::rounded<T>(test::random_vector(r, n));
    auto ga = test::to_device<T>(a), gb = test::to_device<T>(b);
    std::vector<double> sum(n);
    add(host, sum.data(), a.data(), b.data(), n);
    auto gsum = test::poisoned<T>(n);
    add(dev, gsum.data(), ga.data(), gb.data(), n);
    test::check_error<T>("add", test::rel_error(test::to_host(gsum), sum));
    std::vector<double> acc = a;
    accumulate(host, acc.data(), b.data(), n);
    scale(host, acc.data(), n, 0.37);
    auto gacc = test::poisoned<T>(n);
    copy(dev, gacc.data(), ga.data(), n);
    accumulate(dev, gacc.data(), gb.data(), n);
    scale(dev, gacc.data(), n, 0.37);
    test::check_error<T>("copy, accumulate, scale", test::rel_error(test::to_host(gacc), acc));
    test::check_error<T>("sum_squares", test::rel_error({sum_squares(dev, ga.data(), n)}, {sum_squares(host, a.data(), n)}));
    CHECK(all_finite(dev, ga.data(), n));
    auto gz = test::poisoned<T>(n);
    fill_zero(dev, gz.data(), n);
    CHECK(test::to_host(gz) == std::vector<double>(n, 0.0));
    CHECK(all_finite(dev, gz.data(), n));
    std::vector<double> with_nan = a;
    with_nan[n / 2] = std::numeric_limits<double>::quiet_NaN();
    auto gnan = test::to_device<T>(with_nan);
    CHECK_FALSE(all_finite(dev, gnan.data(), n));
}

TEST_CASE("dropout keeps about 1 - p of the values, scaled by 1/(1-p), and its backward applies the same mask") {
    sgt::rng r(11), dr(12);
    const std::int64_t n = 200001;
    const double p = 0.3;
    const auto x = test::random_vector(r, n);
    auto gx = test::to_device<float>(x);
    auto mask = test::poisoned<float>(n);
    dropout_forward(dev, gx.data(), mask.data(), n, p, dr);
    const auto m = test::to_host(mask), y = test::to_host(gx);
    std::int64_t kept = 0;
    bool values_ok = true;
    for (std::int64_t i = 0; i < n; ++i) {
        const bool keep = m[i] != 0.0;
        kept += keep;
        values_ok &= keep ? std::abs(m[i] - 1.0 / (1.0 - p)) < 1e-6 && std::abs(y[i] - x[i] * m[i]) < 1e-5 * (1 + std::abs(y[i]))
                          : y[i] == 0.0;
    }
    CHECK(values_ok);
    const double frac = double(kept) / n, sd = std::sqrt(p * (1 - p) / n);
    CHECK(std::abs(frac - (1 - p)) < 5 * sd);
    auto g = test::to_device<float>(x);
    dropout_backward(dev, g.data(), mask.data(), n);
    const auto gy = test::to_host(g);
    bool back_ok = true;
    for (std::int64_t i = 0; i < n; ++i) back_ok &= std::abs(gy[i] - x[i] * m[i]) <= 1e-5 * (1 + std::abs(gy[i]));
    CHECK(back_ok);
}

TEST_CASE("a failing CUDA call becomes sgt::error naming the call") {
    device_buffer<float> b;
    CHECK_THROWS_WITH_AS(b.resize(std::size_t(1) << 50), doctest::Contains("cudaMalloc"), sgt::error);
}
