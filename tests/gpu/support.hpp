// Helpers of the GPU tests: random host data, transfers in any precision, poisoning, and the error measure.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "sgt/cuda.hpp"

// Template test cases in bf16 are named "...<bf16>" (scripts/gpu_check.sh selects them by that name).
TYPE_TO_STRING_AS("bf16", __nv_bfloat16);

namespace sgt::test {

using bf16 = __nv_bfloat16;

// B x T random tokens and targets below V, every 7th target (from the 4th on) ignored.
inline sgt::batch random_batch_some_ignored(int B, int T, int V, std::uint64_t seed) {
    sgt::rng r(seed);
    sgt::batch b{B, T, {}, {}};
    for (int i = 0; i < B * T; ++i) {
        b.inputs.push_back(std::int32_t(r.next_u64() % std::uint64_t(V)));
        b.targets.push_back(i % 7 == 3 ? sgt::ignore_target : std::int32_t(r.next_u64() % std::uint64_t(V)));
    }
    return b;
}

inline std::vector<double> random_vector(sgt::rng& r, std::size_t n, double scale = 1.0) {
    std::vector<double> v(n);
    for (auto& x : v) x = scale * r.normal();
    return v;
}

// The values as T would hold them (rounded to bf16 for bf16), as doubles: the reference sees the inputs the
// device sees.
template <class T>
std::vector<double> rounded(const std::vector<double>& x) {
    std::vector<double> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
        if constexpr (std::is_same_v<T, double>)
            y[i] = x[i];
        else
            y[i] = double(static_cast<float>(T(x[i])));
    }
    return y;
}

template <class T>
sgt::device_buffer<T> to_device(const std::vector<double>& x) {
    std::vector<T> h(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) h[i] = T(x[i]);
    sgt::device_buffer<T> d(x.size());
    sgt::copy_from_host(sgt::cuda{}, d.data(), h.data(), std::int64_t(h.size()));
    return d;
}

template <class T>
std::vector<double> to_host(const T* d, std::size_t n) {
    std::vector<T> h(n);
    sgt::copy_to_host(sgt::cuda{}, h.data(), d, std::int64_t(n));
    std::vector<double> y(n);
    for (std::size_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<T, double>)
            y[i] = h[i];
        else
            y[i] = double(static_cast<float>(h[i]));  // bf16 converts through float
    }
    return y;
}
template <class T>
std::vector<double> to_host(const sgt::device_buffer<T>& d) {
    return to_host(d.data(), d.size());
}

// Fills a device output with NaN, so that an element the op fails to write cannot pass.
template <class T>
void poison(sgt::device_buffer<T>& d) {
    const std::vector<T> h(d.size(), T(std::numeric_limits<float>::quiet_NaN()));
    sgt::copy_from_host(sgt::cuda{}, d.data(), h.data(), std::int64_t(h.size()));
}
template <class T>
sgt::device_buffer<T> poisoned(std::size_t n) {
    sgt::device_buffer<T> d(n);
    poison(d);
    return d;
}

// ‖got − ref‖ / ‖ref‖ (‖·‖ Euclidean); +inf when any value is not finite, so NaN never passes. It asserts, so call it
// outside another assertion's message: doctest reporting successes (-s) would deadlock on the nested assertion.
inline double rel_error(const std::vector<double>& got, const std::vector<double>& ref) {
    REQUIRE(got.size() == ref.size());
    double num = 0.0, den = 0.0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        if (!std::isfinite(got[i]) || !std::isfinite(ref[i])) return std::numeric_limits<double>::infinity();
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// The bound of the issue: fp32 1e-5, bf16 2e-2 (double: 1e-12).
template <class T>
constexpr double tolerance() {
    if constexpr (std::is_same_v<T, float>) return 1e-5;
    else if constexpr (std::is_same_v<T, double>) return 1e-12;
    else return 2e-2;
}
template <class T>
const char* type_name() {
    if constexpr (std::is_same_v<T, float>) return "fp32";
    else if constexpr (std::is_same_v<T, double>) return "fp64";
    else return "bf16";
}

// Prints a measured error with its bound, so the log of a run shows the numbers and not only a pass.
template <class T>
void check_error(const std::string& what, double err) {
    std::printf("  %-44s %s  rel error %.3e  (bound %.0e)\n", what.c_str(), type_name<T>(), err, tolerance<T>());
    CHECK_MESSAGE(err <= tolerance<T>(), what << " (" << type_name<T>() << "): relative error " << err);
}

// Every gradient of a model on the GPU against its twin on the CPU after the same backward, tensor by tensor: the
// relative error of each within bound(name).
template <class CpuModel, class GpuModel, class Bound>
void check_gradients(const CpuModel& mc, const GpuModel& mg, Bound bound) {
    const auto gc = mc.gradients_to_host(), gg = mg.gradients_to_host();
    for (const auto& e : mc.parameter_table()) {
        const std::vector<double> c(gc.begin() + e.offset, gc.begin() + e.offset + e.numel());
        const std::vector<double> g(gg.begin() + e.offset, gg.begin() + e.offset + e.numel());
        const double err = rel_error(g, c);  // outside the message (see rel_error)
        CHECK_MESSAGE(err <= bound(e.name), "gradient of " << e.name << " differs by " << err);
    }
}

}  // namespace sgt::test
