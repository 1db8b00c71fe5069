#!/usr/bin/env python3
"""bench/torch_infer.py: the vanilla models of bench/bench_infer.cpp in Hugging Face transformers, generating with
a static KV cache, eager and torch.compile, bf16, on the same GPU: prefill tokens/s (one forward over the prompts)
and decode tokens/s (generate's new tokens after the first, timed with CUDA synchronisation). One JSON line per
result, the fields of bench_infer's.

    python3 bench/torch_infer.py --models gpt2,char_small --batches 1,32 --contexts 1024,4096 --modes eager,compile
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {"gpt2": dict(layers=12, heads=12, head_dim=64, d_ff=2048, vocab=50304),
          "char_small": dict(layers=6, heads=6, head_dim=64, d_ff=1024, vocab=256)}


def model_of(name: str, ctx: int) -> LlamaForCausalLM:
    s = SHAPES[name]
    c = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["heads"] * s["head_dim"], intermediate_size=s["d_ff"],
                    num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["heads"],
                    head_dim=s["head_dim"], max_position_embeddings=ctx, rms_norm_eps=1e-5, rope_theta=10000.0,
                    tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(c).to("cuda", torch.bfloat16).eval()


def timed(f) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    f()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt2,char_small")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--contexts", default="1024,4096")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--decode-tokens", type=int, default=64)
    a = ap.parse_args()
    for name in a.models.split(","):
        for mode in a.modes.split(","):
            for B in map(int, a.batches.split(",")):
                for ctx in map(int, a.contexts.split(",")):
                    torch.manual_seed(0)
                    m = model_of(name, ctx)
                    if mode == "compile":
                        m.forward = torch.compile(m.forward, mode="reduce-overhead", fullgraph=True)
                    prompt_len = ctx - a.decode_tokens
                    ids = torch.randint(0, SHAPES[name]["vocab"], (B, prompt_len), device="cuda")
                    gen = dict(do_sample=False, cache_implementation="static", pad_token_id=0)
                    with torch.no_grad():
                        # Warm-up (compilation), then: prefill = generate 1 token; decode = the rest.
                        m.generate(ids, max_new_tokens=a.decode_tokens, min_new_tokens=a.decode_tokens, **gen)
                        t1 = min(timed(lambda: m.generate(ids, max_new_tokens=1, **gen)) for _ in range(2))
                        tn = timed(lambda: m.generate(ids, max_new_tokens=a.decode_tokens,
                                                      min_new_tokens=a.decode_tokens, **gen))
                    decode_s = max(tn - t1, 1e-9) / (a.decode_tokens - 1)
                    print(json.dumps({"impl": f"hf-{mode}", "model": name, "variant": "vanilla", "precision": "bf16",
                                      "batch": B, "context": ctx, "prompt": prompt_len,
                                      "decode_tokens": a.decode_tokens, "prefill_tokens_per_s": B * prompt_len / t1,
                                      "decode_tokens_per_s": B / decode_s, "decode_step_ms": 1e3 * decode_s}),
                          flush=True)
                    del m
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
