// sgt/core/precision.hpp: the precision policy. A model is a template over its stored type T: double (the CPU
// reference), float (fp32: parity tests, TF32 off), or __nv_bfloat16 on the CUDA backend (bf16 mixed precision:
// bf16 weights copy and activations, fp32 master weights, AdamW moments, reductions and loss).
// accum_t<T> is the type arithmetic on T runs in and optimizer state is kept in: T, except for bf16 (float;
// the specialisation lives in backend/cuda/backend.cuh, beside the type).
#pragma once

namespace sgt {

template <class T>
struct accum_type {
    using type = T;
};
template <class T>
using accum_t = typename accum_type<T>::type;

// The name programs and logs use for a stored type ("bf16" is declared beside the type, in the CUDA backend).
template <class T>
struct precision_name;
template <>
struct precision_name<float> {
    static constexpr const char* value = "fp32";
};
template <>
struct precision_name<double> {
    static constexpr const char* value = "fp64";
};

}  // namespace sgt
