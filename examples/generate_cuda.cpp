// examples/generate_cuda: examples/generate on the GPU (same flags, plus --precision fp32|bf16); the decode step
// is recorded once as a CUDA graph and replayed for every token.
//
//     generate_cuda --checkpoint ck --prompt "ROMEO:" --tokens 500 --precision bf16
#include "sgt/cuda.hpp"
#include "generate_main.hpp"

int main(int argc, char** argv) { return examples::generate_main<sgt::cuda, float, __nv_bfloat16>(argc, argv); }
