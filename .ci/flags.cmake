# CI's build settings, preloaded into CMake's cache by .ci/run (cmake -C): a build that only CI makes, on 2 cores
# with no GPU. All but the warnings only shorten the build; a user's build keeps the defaults (Release at -O3).
# Times measured on the 2-core development machine on 2026-12-07: kernels.cu's two builds one after the other,
# train.cpp's two side by side (one a core).

# C++ at -Og instead of -O3 (-O1 before): examples/train.cpp compiles in 94 s instead of 144 s at -O1, for about
# half again the run time of the heaviest tests (test_model 25 s instead of 17; the products run in OpenBLAS
# either way).
set(CMAKE_CXX_FLAGS_RELEASE "-Og" CACHE STRING "")
# Every C++ translation unit (library headers, examples, tests, benchmarks; not kernels.cu, which nvcc compiles)
# free of -Wall -Wextra warnings, a warning an error. g++'s -Wmissing-field-initializers is left out: it reports
# designated initialisers that leave members at their defaults (gate_options{.threshold = 0.5}), the way the
# options structs are meant to be written; clang does not report them. Nor is -Wuninitialized: on a machine with
# AVX-512, -march=native gives Eigen its AVX-512 paths, and g++ 12 then reports the self-initialised `__Y = __Y` of
# its own avx512fintrin.h intrinsics, inlined into Eigen's pexp and pmax, as used uninitialised (6 errors in a
# two-line use of Eigen's exp and maxCoeff at -Og, 29 at -O1 and -O2; none with -Wno-uninitialized): every program
# failed so on 2026-12-08, where machines without AVX-512 had passed.
set(CMAKE_CXX_FLAGS "-DNDEBUG -Wall -Wextra -Wno-missing-field-initializers -Wno-uninitialized -Werror" CACHE STRING "")

# The kernels (sgt::cuda_kernels, which only a GPU runs, and CI has none) with the device compiler's and the
# assembler's -O1 and the host compiler's -O0: kernels.cu in 59 s instead of 113 s. ptxas still assembles every
# kernel, so a malformed instruction still fails the build.
set(CMAKE_CUDA_FLAGS_RELEASE "-O0 -DNDEBUG -Xcicc -O1 -Xptxas -O1" CACHE STRING "")

# OpenBLAS's shared library instead of its static one in the ~40 test programs: the same kernels, faster links.
set(SGT_OPENBLAS_LIBRARY "/usr/lib/x86_64-linux-gnu/libopenblas.so" CACHE FILEPATH "")
