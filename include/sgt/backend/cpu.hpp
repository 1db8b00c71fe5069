// sgt/backend/cpu.hpp: every leaf op of the CPU (Eigen) backend.
#pragma once

#include "sgt/backend/cpu/adamw.hpp"
#include "sgt/backend/cpu/attention.hpp"
#include "sgt/backend/cpu/backend.hpp"
#include "sgt/backend/cpu/cross_entropy.hpp"
#include "sgt/backend/cpu/decode.hpp"
#include "sgt/backend/cpu/dropout.hpp"
#include "sgt/backend/cpu/embedding.hpp"
#include "sgt/backend/cpu/gates.hpp"
#include "sgt/backend/cpu/heads.hpp"
#include "sgt/backend/cpu/matmul.hpp"
#include "sgt/backend/cpu/rmsnorm.hpp"
#include "sgt/backend/cpu/rope.hpp"
#include "sgt/backend/cpu/subspace.hpp"
#include "sgt/backend/cpu/swiglu.hpp"
#include "sgt/backend/backend.hpp"

static_assert(sgt::check_backend<sgt::cpu>());
