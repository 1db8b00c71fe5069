// examples/compare's timing resolution: a wall-time difference counts only when it is at least 2 standard errors
// of the difference, estimated from the spread of each run's step times (examples/common.hpp).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../../examples/common.hpp"

using examples::total_time_error;
using examples::wall_difference_resolved;

TEST_CASE("the standard error of a run's total time, from its step times") {
    // Steps 1, 2, 3: mean 2, sample variance 1, so the total's standard error is sqrt(1 * 3).
    CHECK(total_time_error({1.0, 2.0, 3.0}) == doctest::Approx(std::sqrt(3.0)));
    CHECK(total_time_error({0.5, 0.5, 0.5, 0.5}) == 0.0);
    CHECK(total_time_error({2.5}) == 2.5);  // one step: no spread, the whole total is uncertain
    CHECK(total_time_error({}) == 0.0);
}

TEST_CASE("identical work under noise is not resolved; a clear difference is") {
    // 10 noisy steps of about 1 s against the same steps reordered: the same work, a 0 difference.
    const std::vector<double> a{0.4, 1.9, 0.7, 1.3, 0.9, 1.6, 0.5, 1.1, 1.4, 0.6};
    std::vector<double> same(a.rbegin(), a.rend());
    CHECK_FALSE(wall_difference_resolved(a, same));
    // 20% slower in every step is within this noise at 10 steps (a's total error is about 1.6 s of 10.4 s)...
    std::vector<double> slower;
    for (double x : a) slower.push_back(1.2 * x);
    CHECK_FALSE(wall_difference_resolved(a, slower));
    // ...but resolved once the steps are steady.
    const std::vector<double> steady(10, 1.0), steady_slower(10, 1.2);
    CHECK(wall_difference_resolved(steady, steady_slower));
    // Two 1-step runs never resolve anything smaller than themselves.
    CHECK_FALSE(wall_difference_resolved({1.0}, {1.5}));
}
