// sgt/cuda.hpp: the library with the CUDA backend. Include it from ordinary C++ files and use sgt::cuda as the
// backend tag; compile backend/cuda/kernels.cu (nvcc) once into the program (CMake: link sgt::cuda_kernels):
//     sgt::model<float, sgt::presets::tiny, sgt::cuda> m(batch, seq);            // fp32
//     sgt::model<__nv_bfloat16, sgt::presets::tiny, sgt::cuda> m16(batch, seq);  // bf16 mixed precision
#pragma once

#include "sgt/backend/cuda.hpp"
#include "sgt/sgt.hpp"
