// Must NOT compile: a backend whose rmsnorm_backward is misspelled is refused by the model with a message that
// names the op (tests/CMakeLists.txt checks it). With -DSGT_SPELLED_RIGHT the same backend is accepted: the
// message comes from the one missing op, not from anything else about this file.
#include <cstdint>
#include <span>
#include <vector>

#include "sgt/model.hpp"

namespace user {
struct fake {
    static constexpr const char* name = "fake";
    static constexpr bool host_memory = true;
    template <class U>
    using buffer = std::vector<U>;
};
using i64 = std::int64_t;
template <class T> void fill_zero(fake, T*, i64);
template <class T> void copy(fake, T*, const T*, i64);
template <class T> void copy_from_host(fake, T*, const T*, i64);
template <class T> void copy_to_host(fake, T*, const T*, i64);
template <class T> void add(fake, T*, const T*, const T*, i64);
template <class T> void accumulate(fake, T*, const T*, i64);
template <class T> void scale(fake, T*, i64, double);
template <class T> double sum_squares(fake, const T*, i64);
template <class T> void sum_squares(fake, const T*, i64, double*);
template <class T> bool all_finite(fake, const T*, i64);
template <class T> void matmul_forward(fake, T*, const T*, const T*, int, int, int, bool = false, const T* = nullptr);
template <class T> void matmul_backward(fake, T*, T*, const T*, const T*, const T*, int, int, int, sgt::overwrite = {});
template <class T> void embedding_forward(fake, T*, const std::int32_t*, const T*, int, int);
template <class T> void embedding_backward(fake, T*, const T*, const std::int32_t*, int, int);
template <class T> void rmsnorm_forward(fake, T*, T*, const T*, const T*, int, int, double);
#ifdef SGT_SPELLED_RIGHT
template <class T> void rmsnorm_backward(fake, T*, T*, const T*, const T*, const T*, const T*, int, int);
#else
template <class T> void rmsnorm_backwards(fake, T*, T*, const T*, const T*, const T*, const T*, int, int);
#endif
template <class A> void rope_tables(fake, A*, A*, int, int, double);
template <class T, class A> void rope_forward(fake, T*, const A*, const A*, int, int, int, int, i64);
template <class T, class A> void rope_backward(fake, T*, const A*, const A*, int, int, int, int, i64);
template <class T> i64 attention_saved_size(fake, int, int, int, int);
template <class T> void attention_forward(fake, T*, T*, double*, const T*, int, int, int, int);
template <class T> void attention_backward(fake, T*, const T*, const T*, const T*, int, int, int, int);
template <class T> void gather_head_rows(fake, T*, const T*, std::span<const int>, int, int);
template <class T> void scatter_add_head_rows(fake, T*, const T*, std::span<const int>, int, int);
template <class T> void gather_head_cols(fake, T*, const T*, std::span<const int>, int, int, int);
template <class T> void scatter_add_head_cols(fake, T*, const T*, std::span<const int>, int, int, int);
template <class T> void head_gain_forward(fake, T*, const T*, i64, int, int, bool);
template <class T> void head_gain_backward(fake, T*, T*, const T*, const T*, i64, int, int, bool);
template <class T> void gate_forward(fake, T*, T*, const T*, const T*, const T*, int, int, int, int, int, double, bool);
template <class T> void gate_backward(fake, T*, T*, T*, const T*, const T*, const T*, const T*, int, int, int, int, int, double);
template <class T> void swiglu_forward(fake, T*, const T*, const T*, int, int, i64);
template <class T> void swiglu_backward(fake, T*, T*, const T*, const T*, const T*, int, int, i64);
template <class T>
sgt::loss_sum cross_entropy_forward(fake, const T*, const std::int32_t*, int, int, sgt::accum_t<T>* = nullptr);
template <class T>
void cross_entropy_forward(fake, const T*, const std::int32_t*, int, int, sgt::accum_t<T>*, double*);
template <class T>
void cross_entropy_forward_backward(fake, T*, const std::int32_t*, int, int, double, double*);
template <class T>
void cross_entropy_backward(fake, T*, const T*, const std::int32_t*, int, int, double, const sgt::accum_t<T>* = nullptr);
template <class T> void dropout_forward(fake, T*, T*, i64, double, sgt::rng&);
template <class T> void dropout_backward(fake, T*, const T*, i64);
template <class T>
void adamw_update(fake, T*, const T*, T*, T*, std::span<const sgt::adamw_run>, const sgt::adamw_hyper&,
                  const sgt::adamw_step_values*, const double*, int);
}  // namespace user

static_assert(sizeof(sgt::model<float, sgt::presets::tiny, user::fake>) > 0);
