// sgt/backend/cpu/gates.hpp: the learned head gate of GATES.md Sec. 1-2, forward and backward.
//
// For the heads i ≥ i0 of a pass (the gated ones; the first i0 heads are the dense ones of Sec. 2), sequence b
// and position t, with q, k the RoPE'd query and key of qkv (B, T, 3, n, HD):
//
//     k̄_t = (1/(t+1)) Σ_{u≤t} k_u,   z_t = w_q · q_t + w_k · k̄_t + c,   s_t = σ(z_t)
//
// w (ng, 2·HD) holds the rows [w_q ; w_k] of the gated heads in order (ng = n − i0), c (ng) their biases. Since
// w_k · k̄_t = (1/(t+1)) Σ_{u≤t} w_k · k_u, the prefix mean is a running sum of scalars.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "sgt/backend/cpu/backend.hpp"
#include "sgt/core/precision.hpp"

namespace sgt {

// s (B, T, n): the scores σ(z), 1 on the dense heads (i < i0). g (B, T, n): the gain applied to the head outputs:
// 1 on the dense heads, s on the gated ones, or s·[s ≥ θ] when `hard` (a head below θ contributes nothing).
// The positions of the call are 0..T−1 (training, prefill); gate_forward_at continues a sequence (decoding).
template <class T>
void gate_forward(cpu, T* s, T* g, const T* qkv, const T* w, const T* c, int B, int T_, int n, int HD, int i0,
                  double theta, bool hard);

// The same over positions start[b] .. start[b] + T − 1 of each sequence b, with the running key sum of the prefix
// mean carried across calls: run (B, n), in accum_t<T>, holds Σ_{u < start[b]} w_k · k_u of gated head i on entry
// and, on exit, the sum up to position start[b] + len[b] − 1 (len[b] ≤ T: the sequence's real tokens in the call,
// the rest padding). Null start, len and run: positions from 0, len = T, nothing carried (gate_forward).
template <class T>
void gate_forward_at(cpu, T* s, T* g, accum_t<T>* run, const T* qkv, const T* w, const T* c, const std::int32_t* start,
                     const std::int32_t* len, int B, int T_, int n, int HD, int i0, double theta, bool hard) {
    using A = accum_t<T>;
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    const std::int64_t heads = std::int64_t(B) * n;  // (b, i) pairs, each independent of the others
    const std::int64_t min_heads = std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(1, std::int64_t(T_) * HD));
    parallel_blocks(heads, detail::grain_for(heads, min_heads), [&](std::int64_t first, std::int64_t last) {
        for (std::int64_t bi = first; bi < last; ++bi) {
            const int b = int(bi / n), i = int(bi % n);
            const T* wq = w + std::int64_t(i - i0) * 2 * HD;
            const T* wk = wq + HD;
            const std::int64_t p0 = start ? start[b] : 0;
            const int kept = len ? len[b] : T_;
            A sum = run && i >= i0 ? run[bi] : A(0);
            for (int t = 0; t < T_; ++t) {
                const std::int64_t r = std::int64_t(b) * T_ + t, o = r * n + i;
                if (i < i0) {
                    s[o] = g[o] = T(1);
                    continue;
                }
                const T* q = qkv + r * row + std::int64_t(i) * HD;
                const T* k = q + std::int64_t(n) * HD;
                A zq = 0, zk = 0;
                for (int d = 0; d < HD; ++d) {
                    zq += A(wq[d]) * A(q[d]);
                    zk += A(wk[d]) * A(k[d]);
                }
                sum += zk;
                if (run && t + 1 == kept) run[bi] = sum;
                const A z = zq + sum / A(p0 + t + 1) + A(c[i - i0]);
                const A sig = A(1) / (A(1) + std::exp(-z));
                s[o] = T(sig);
                g[o] = hard && double(sig) < theta ? T(0) : T(sig);
            }
        }
    });
}

template <class T>
void gate_forward(cpu be, T* s, T* g, const T* qkv, const T* w, const T* c, int B, int T_, int n, int HD, int i0,
                  double theta, bool hard) {
    gate_forward_at(be, s, g, static_cast<accum_t<T>*>(nullptr), qkv, w, c, nullptr, nullptr, B, T_, n, HD, i0, theta,
                    hard);
}

// Backward of s: with ∂L/∂s = ds + ds_add (ds (B, T, n), read on the gated heads only; ds_add a constant, the
// sparsity term's λ / count), dz = ∂L/∂s · s (1 − s), and
//     dc += Σ dz,   dw_q += Σ dz q_t,   dw_k += Σ_u E_u k_u,   E_u = Σ_{t≥u} dz_t / (t+1)   (sums over b and t)
//     dq_t = dz_t w_q,   dk_u = E_u w_k.
// dqkv (B, T, 3, n, HD) is overwritten: dq and dk of the gated heads, zeros elsewhere (v, dense heads).
// dw (ng, 2·HD) and dc (ng) accumulate. s is the forward's (B, T, n).
template <class T>
void gate_backward(cpu, T* dqkv, T* dw, T* dc, const T* ds, const T* s, const T* qkv, const T* w, int B, int T_,
                   int n, int HD, int i0, double ds_add) {
    using A = accum_t<T>;
    const std::int64_t row = 3 * std::int64_t(n) * HD;
    std::fill(dqkv, dqkv + std::int64_t(B) * T_ * row, T(0));
    const int ng = n - i0;
    std::vector<A> acc(std::size_t(ng) * (2 * HD + 1), A(0));  // per gated head: dw_q, dw_k, dc (in order)
    std::vector<A> dz(static_cast<std::size_t>(T_));
    for (int b = 0; b < B; ++b)
        for (int j = 0; j < ng; ++j) {
            const int i = i0 + j;
            const T* wq = w + std::int64_t(j) * 2 * HD;
            const T* wk = wq + HD;
            A* a = acc.data() + std::size_t(j) * (2 * HD + 1);
            for (int t = 0; t < T_; ++t) {
                const std::int64_t o = (std::int64_t(b) * T_ + t) * n + i;
                const A sv = A(s[o]);
                dz[std::size_t(t)] = (A(ds[o]) + A(ds_add)) * sv * (A(1) - sv);
            }
            A E = 0;
            for (int t = T_ - 1; t >= 0; --t) {
                const std::int64_t r = std::int64_t(b) * T_ + t;
                const A z = dz[std::size_t(t)];
                E += z / A(t + 1);
                const T* q = qkv + r * row + std::int64_t(i) * HD;
                const T* k = q + std::int64_t(n) * HD;
                T* dq = dqkv + r * row + std::int64_t(i) * HD;
                T* dk = dq + std::int64_t(n) * HD;
                for (int d = 0; d < HD; ++d) {
                    dq[d] = T(z * A(wq[d]));
                    dk[d] = T(E * A(wk[d]));
                    a[d] += z * A(q[d]);
                    a[HD + d] += E * A(k[d]);
                }
                a[2 * HD] += z;
            }
        }
    for (int j = 0; j < ng; ++j) {
        const A* a = acc.data() + std::size_t(j) * (2 * HD + 1);
        for (int d = 0; d < 2 * HD; ++d) dw[std::int64_t(j) * 2 * HD + d] += T(a[d]);
        dc[j] += T(a[2 * HD]);
    }
}

}  // namespace sgt
