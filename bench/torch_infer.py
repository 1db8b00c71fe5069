#!/usr/bin/env python3
"""bench/torch_infer.py: inference in PyTorch on the same GPU as bench/bench_infer.cpp, bf16, one JSON line per
result with bench_infer's fields (prefill tokens/s: one forward over the B prompts; decode tokens/s: the median
decode step, one token per sequence).

Two implementations:
  hf-eager, hf-compile    the vanilla model as Hugging Face transformers' LlamaForCausalLM, `generate` with its
                          static cache (greedy); eager with generate's automatic compilation turned off
                          (disable_compile=True), compiled the way transformers does it itself: generate compiles
                          its decoding forward when given compile_config=CompileConfig(fullgraph=True,
                          mode="reduce-overhead") (wrapping model.forward in torch.compile as well fails: "accessing
                          tensor output of CUDAGraphs that has been overwritten", transformers 5.17); decode time is
                          (generate N tokens - generate 1 token) / (N - 1), as generate gives no per-step hook.
  ref-eager, ref-compile  our PyTorch model with a KV cache for every variant (bench/torch_step.py's FastModel:
                          fused q/k/v and gate/up, SDPA) and one static cache slot per attention pass, as spec
                          Sec. 7 and include/sgt/infer/ hold it: a layer's first pass caches all heads, each loop
                          step k the heads S it computes, a repeated block (Block Loop) another full set. Decode
                          attends over the whole static cache with a mask (as HF's static cache does), so that
                          torch.compile(mode="reduce-overhead") can record it as one CUDA graph.

    python3 bench/torch_infer.py --impls hf,ref --models gpt2,char_small --variants vanilla,sgt,block \
        --batches 1,32 --contexts 1024,4096 --modes eager,compile
    python3 bench/torch_infer.py --check    # the cached reference equals the uncached forward (CPU, float64)
"""
import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # leave no __pycache__ in bench/
sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_step import FastModel, Shape, make_plan, rms_norm, rotate_half  # noqa: E402

# The models of bench/bench_infer.cpp (a 4096-token context each).
SHAPES = {"gpt2": Shape(layers=12, heads=12, head_dim=64, d_ff=2048, vocab=50304),
          "char_small": Shape(layers=6, heads=6, head_dim=64, d_ff=1024, vocab=256),
          "tiny": Shape(layers=4, heads=4, head_dim=8, d_ff=64, vocab=64)}


# bench/plans.hpp's structures, as torch_step.make_plan reads them: SGT on the 3 deepest layers, K = 3 over heads
# {0, 1}; Block Loop on the same 3 layers, each block twice.
PLAN_ARGS = argparse.Namespace(sgt_layers=3, sgt_heads=2, sgt_k=3, block_layers=3, block_repeat=2)


# ----------------------------------------------------------------------------------------------------------
# Our model with a KV cache: one slot per attention pass


class CachedModel:
    """FastModel's weights plus one static (key, value) slot per attention pass, (B, R, ctx, HD) each, R the
    heads of that pass. forward(tokens, pos) runs T = tokens.shape[1] new tokens at positions pos..pos+T-1
    through every pass in order, writes their keys and values into each pass's slot, and returns the logits of
    the last position. pos is a 0-d device tensor, so a decode step has no Python-side state that changes."""

    def __init__(self, model: FastModel, B: int, ctx: int):
        self.m, self.ctx = model, ctx
        sh = model.shape
        dt, dev = model.embed.dtype, model.embed.device
        self.slots = []  # per layer: per block repeat: [all-heads slot, loop step 1 slot, ...]
        self.cache_bytes = 0
        for layer in model.layers:
            per_layer = []
            for _ in range(layer.loops.block_repeat):
                heads = [sh.heads] + [len(layer.loops.heads)] * layer.loops.k
                passes = [(torch.zeros(B, R, ctx, sh.head_dim, dtype=dt, device=dev),
                           torch.zeros(B, R, ctx, sh.head_dim, dtype=dt, device=dev)) for R in heads]
                for k, v in passes:
                    self.cache_bytes += k.numel() * k.element_size() + v.numel() * v.element_size()
                    if hasattr(torch, "_dynamo"):
                        torch._dynamo.mark_static_address(k)
                        torch._dynamo.mark_static_address(v)
                per_layer.append(passes)
            self.slots.append(per_layer)
        self.cache_heads_per_token = sum(k.shape[1] for l in self.slots for r in l for k, _ in r)

    def attention(self, layer, H, pos, slot, subset):
        B, T, C = H.shape
        sh = self.m.shape
        NH, HD = sh.heads, sh.head_dim
        a = rms_norm(H, layer.attn_norm, sh.norm_eps)
        if not subset:
            R, w_qkv, w_o = NH, layer.qkv, layer.o
        else:  # bench plans loop over a contiguous head range
            R, sel = len(layer.loops.heads), layer.loop_slice
            w_qkv = layer.qkv.view(3, NH, HD, C)[:, sel].reshape(3 * R * HD, C)
            w_o = layer.o[:, sel.start * HD:sel.stop * HD]
        qkv = F.linear(a, w_qkv).view(B, T, 3, R, HD)
        positions = pos + torch.arange(T, device=H.device)
        cos, sin = self.m.cos[positions].to(qkv.dtype), self.m.sin[positions].to(qkv.dtype)  # (T, 1, 1, HD)
        qk = qkv[:, :, :2]
        qk = qk * cos + rotate_half(qk) * sin
        q, k = qk.unbind(2)
        v = qkv[:, :, 2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, R, T, HD)
        kc, vc = slot
        kc.index_copy_(2, positions, k)
        vc.index_copy_(2, positions, v)
        if T > 1:  # prefill from position 0: causal attention over the new tokens
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # decode: the one query over the whole static cache, later positions masked
            mask = (torch.arange(self.ctx, device=H.device) <= pos).view(1, self.ctx)
            y = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask)
        return H + F.linear(y.transpose(1, 2).reshape(B, T, R * HD), w_o)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, all_logits: bool = False) -> torch.Tensor:
        m, sh = self.m, self.m.shape
        h = F.embedding(tokens, m.embed)
        for layer, per_layer in zip(m.layers, self.slots):
            for passes in per_layer:
                H = self.attention(layer, h, pos, passes[0], subset=False)
                for slot in passes[1:]:
                    H = self.attention(layer, H, pos, slot, subset=True)
                n = rms_norm(H, layer.ffn_norm, sh.norm_eps)
                gate, up = F.linear(n, layer.gate_up).chunk(2, dim=-1)
                h = H + F.linear(F.silu(gate) * up, layer.down)
        if not all_logits:
            h = h[:, -1:]
        return F.linear(rms_norm(h, m.norm, sh.norm_eps), m.lm_head)


def full_logits(model: FastModel, tokens: torch.Tensor) -> torch.Tensor:
    """The uncached forward's logits (FastModel.forward returns the loss, so its body without the loss)."""
    h = F.embedding(tokens, model.embed)
    for layer in model.layers:
        h = layer(h, model.cos, model.sin)
    return F.linear(rms_norm(h, model.norm, model.shape.norm_eps), model.lm_head)


def run_check() -> int:
    """Prefill + decode of the cached reference equals the uncached forward at every position (float64, CPU)."""
    shape, T, P = SHAPES["tiny"], 12, 5
    worst = 0.0
    for variant in ("vanilla", "sgt", "block"):
        torch.manual_seed(0)
        model = FastModel(shape, make_plan(variant, shape, PLAN_ARGS), max_seq=T, dtype=torch.float64)
        model.init_weights_(torch.Generator().manual_seed(1), std=0.1)
        tokens = torch.randint(0, shape.vocab, (2, T))
        with torch.no_grad():
            want = full_logits(model, tokens)
            c = CachedModel(model, 2, T)
            got = [c.forward(tokens[:, :P], torch.tensor(0), all_logits=True)]
            for t in range(P, T):
                got.append(c.forward(tokens[:, t:t + 1], torch.tensor(t)))
            got = torch.cat(got, dim=1)
        err = (got - want).abs().max().item()
        worst = max(worst, err)
        print(f"check {variant}: max |cached - uncached| = {err:.3e} over {T} positions ({P} prefilled)")
    ok = worst <= 1e-12
    print("check: " + ("ok" if ok else "FAILED (tolerance 1e-12)"))
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------------------------
# Benchmarks


def timed(f) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    f()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def result(impl, name, variant, B, ctx, prompt_len, decode_tokens, prefill_s, step_s, **extra) -> dict:
    return {"impl": impl, "model": name, "variant": variant, "precision": "bf16", "batch": B, "context": ctx,
            "prompt": prompt_len, "decode_tokens": decode_tokens, "prefill_tokens_per_s": B * prompt_len / prefill_s,
            "decode_tokens_per_s": B / step_s, "decode_step_ms": 1e3 * step_s, **extra}


def bench_hf(name: str, mode: str, B: int, ctx: int, decode_tokens: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM
    s = SHAPES[name]
    c = LlamaConfig(vocab_size=s.vocab, hidden_size=s.width, intermediate_size=s.d_ff, num_hidden_layers=s.layers,
                    num_attention_heads=s.heads, num_key_value_heads=s.heads, head_dim=s.head_dim,
                    max_position_embeddings=ctx, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                    bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    m = LlamaForCausalLM(c).to("cuda", torch.bfloat16).eval()
    prompt_len = ctx - decode_tokens
    ids = torch.randint(0, s.vocab, (B, prompt_len), device="cuda")
    gen = dict(do_sample=False, cache_implementation="static", pad_token_id=0)
    if mode == "compile":
        from transformers import CompileConfig
        gen["compile_config"] = CompileConfig(fullgraph=True, mode="reduce-overhead")
    else:
        gen["disable_compile"] = True
    with torch.no_grad():
        # Warm-up (compilation), then: prefill = generate 1 token; decode = the rest.
        m.generate(ids, max_new_tokens=decode_tokens, min_new_tokens=decode_tokens, **gen)
        t1 = min(timed(lambda: m.generate(ids, max_new_tokens=1, **gen)) for _ in range(2))
        tn = min(timed(lambda: m.generate(ids, max_new_tokens=decode_tokens, min_new_tokens=decode_tokens, **gen))
                 for _ in range(2))
    return result(f"hf-{mode}", name, "vanilla", B, ctx, prompt_len, decode_tokens, t1,
                  max(tn - t1, 1e-9) / (decode_tokens - 1))


def bench_ref(name: str, variant: str, mode: str, B: int, ctx: int, decode_tokens: int) -> dict:
    shape = SHAPES[name]
    torch.manual_seed(0)
    model = FastModel(shape, make_plan(variant, shape, PLAN_ARGS), max_seq=ctx).to("cuda", torch.bfloat16)
    model.init_weights_(torch.Generator().manual_seed(1))
    c = CachedModel(model, B, ctx)
    prompt_len = ctx - decode_tokens
    ids = torch.randint(0, shape.vocab, (B, prompt_len), device="cuda")
    pos = torch.zeros((), dtype=torch.long, device="cuda")
    prefill = c.forward
    step = c.forward
    if mode == "compile":
        prefill = torch.compile(c.forward, dynamic=False)
        step = torch.compile(c.forward, mode="reduce-overhead", fullgraph=True, dynamic=False)
    with torch.no_grad():
        def run_prefill():
            pos.zero_()
            return prefill(ids, pos)
        run_prefill()  # warm-up (compilation)
        prefill_s = min(timed(run_prefill) for _ in range(2))
        tok = run_prefill().argmax(-1)
        pos.fill_(prompt_len)
        times = []
        for i in range(decode_tokens):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            logits = step(tok, pos)
            tok = logits.argmax(-1)
            pos.add_(1)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    warm = 3 if mode == "compile" else 2  # the first steps record the graph
    return result(f"ref-{mode}", name, variant, B, ctx, prompt_len, decode_tokens, prefill_s,
                  statistics.median(times[warm:]), cache_bytes=c.cache_bytes,
                  cache_heads_per_token=c.cache_heads_per_token)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impls", default="hf,ref", help="hf (Hugging Face generate, vanilla), ref (ours, all variants)")
    ap.add_argument("--models", default="gpt2,char_small")
    ap.add_argument("--variants", default="vanilla,sgt,block", help="for ref")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--contexts", default="1024,4096")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--check", action="store_true", help="the cached reference against the uncached one, CPU")
    a = ap.parse_args()
    if a.check:
        return run_check()
    if a.decode_tokens < 8:
        ap.error("--decode-tokens must be at least 8 (the first steps are warm-up)")
    for name in a.models.split(","):
        if name not in SHAPES:
            ap.error(f"unknown model {name!r}: expected one of {', '.join(SHAPES)}")
        for impl in a.impls.split(","):
            variants = ["vanilla"] if impl == "hf" else a.variants.split(",")
            for variant in variants:
                for mode in a.modes.split(","):
                    for B in map(int, a.batches.split(",")):
                        for ctx in map(int, a.contexts.split(",")):
                            try:
                                r = (bench_hf(name, mode, B, ctx, a.decode_tokens) if impl == "hf"
                                     else bench_ref(name, variant, mode, B, ctx, a.decode_tokens))
                            except Exception as e:  # a failed compile or OOM is reported; the rest goes on
                                traceback.print_exc(file=sys.stderr)
                                r = {"impl": f"{impl}-{mode}", "model": name, "variant": variant, "batch": B,
                                     "context": ctx, "error": f"{type(e).__name__}: {e}"[:2000]}
                            print(json.dumps(r), flush=True)
                            torch._dynamo.reset()
                            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
