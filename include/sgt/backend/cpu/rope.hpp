// sgt/backend/cpu/rope.hpp: rotary position embedding, Hugging Face LLaMA's rotate-half convention
// (spec Sec. 1): rope(x) = x ⊙ cos + rotate_half(x) ⊙ sin, rotate_half(x1, x2) = (−x2, x1), where the angle of
// pair j at position t is t · base^(−2j/HD). The same positions are used in every loop step.
#pragma once

#include <cmath>
#include <cstdint>

#include "sgt/backend/cpu/backend.hpp"
#include "sgt/core/rope_tables.hpp"

namespace sgt {

// cos_table, sin_table (T, HD/2).
template <class T>
void rope_tables(cpu, T* cos_table, T* sin_table, int T_, int HD, double base) {
    detail::rope_tables_host(cos_table, sin_table, T_, HD, base);
}

namespace detail {
// Rotates the n_heads head vectors of HD values at v, v + HD, ... by the angles of one position (c, s: its row of
// the tables); inverse = true rotates by −angle.
template <class T>
void rope_row(T* v, const T* c, const T* s, int n_heads, int HD, bool inverse) {
    const int half = HD / 2;
    const T sign = inverse ? T(-1) : T(1);
    for (int h = 0; h < n_heads; ++h, v += HD)
        for (int j = 0; j < half; ++j) {
            const T x1 = v[j], x2 = v[j + half];
            v[j] = x1 * c[j] - sign * x2 * s[j];
            v[j + half] = x2 * c[j] + sign * x1 * s[j];
        }
}
}  // namespace detail

// Rotates, in place, n_heads head vectors of HD values per token: x at x + (b·T + t)·row_stride + h·HD.
// inverse = true applies the transpose (rotation by −angle): the backward of the forward rotation.
template <class T>
void rope_apply(cpu, T* x, const T* cos_table, const T* sin_table, int B, int T_, int n_heads, int HD,
                std::int64_t row_stride, bool inverse) {
    const int half = HD / 2;
    const std::int64_t rows = std::int64_t(B) * T_;
    const std::int64_t min_rows = std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(1, std::int64_t(n_heads) * HD));
    parallel_blocks(rows, detail::grain_for(rows, min_rows), [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t bt = b; bt < e; ++bt) {
            const std::int64_t t = bt % T_;
            detail::rope_row(x + bt * row_stride, cos_table + t * half, sin_table + t * half, n_heads, HD, inverse);
        }
    });
}

template <class T>
void rope_forward(cpu, T* x, const T* cos_table, const T* sin_table, int B, int T_, int n_heads, int HD,
                  std::int64_t row_stride) {
    rope_apply(cpu{}, x, cos_table, sin_table, B, T_, n_heads, HD, row_stride, false);
}

// The rotation is orthogonal: its backward is the inverse rotation of the gradient, in place.
template <class T>
void rope_backward(cpu, T* dx, const T* cos_table, const T* sin_table, int B, int T_, int n_heads, int HD,
                   std::int64_t row_stride) {
    rope_apply(cpu{}, dx, cos_table, sin_table, B, T_, n_heads, HD, row_stride, true);
}

}  // namespace sgt
