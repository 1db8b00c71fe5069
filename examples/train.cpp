// examples/train: trains one model (Vanilla, Block Loop, Attention Loop or SGT) on a text file, on llm.c token
// shards, or on the embedded k-hop task, with a progress bar, periodic validation, a JSONL log and a summary.
//
//     train                                   # the embedded default, about a minute on 2 cores
//     train --data input.txt --preset char_small --steps 2000 --variant sgt --k-max 3 --log run.jsonl
#include "train_main.hpp"

int main(int argc, char** argv) { return examples::train_main<sgt::cpu, float>(argc, argv); }
