// examples/train_cuda: examples/train on the GPU, with the same flags, plus --precision fp32|bf16 (bf16 mixed
// precision: bf16 weights copy and activations, fp32 master weights, AdamW state and loss). Growth, entropy
// logging and evaluation work as on the CPU: the model, attention, growth and trainer are the same templates.
//
//     train_cuda --data input.txt --preset char_small --batch 64 --seq 256 --steps 2000 --variant sgt --precision bf16
#include "sgt/cuda.hpp"
#include "train_main.hpp"

int main(int argc, char** argv) { return examples::train_main<sgt::cuda, float, __nv_bfloat16>(argc, argv); }
