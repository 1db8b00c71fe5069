#!/usr/bin/env python3
"""PyTorch side of the side-by-side GPU training-step benchmark of the Sparse Growing Transformer.

Times one training step (forward + backward + fused AdamW step + zero_grad) of the same model the C++ library
runs (tools/reference_model.py is its spec), at given shapes and loop plans, and prints one JSON object per
(variant, mode) on stdout, one line each, so that a C++ benchmark run in the same job on the same GPU can be
compared against it.

The model (mathematically identical to tools/reference_model.py with fade = 0, written for speed):
  LLaMA-style pre-norm decoder. h = E[x]; per layer, block_repeat times:
      H = h + o_proj(SDPA_causal(RoPE(q), RoPE(k), v)),  q, k, v = projections of RMSNorm_attn(h)
      k loop steps over the heads S:  H = H + W_O[:, S] @ SDPA over the heads S only, with the rows of S of
                                      W_Q, W_K, W_V applied to RMSNorm_attn(H) (same layer weights)
      h = H + down(silu(gate(n)) * up(n)),  n = RMSNorm_ffn(H)
  loss = mean cross-entropy of lm_head(RMSNorm_final(h)) (lm_head untied from the embedding).
  Speed choices: q/k/v are one fused (3C, C) weight and gate/up one fused (2F, C) weight (same parameters,
  rows concatenated); a loop step slices the weight rows/columns of its heads (no masking of all heads);
  attention is torch.nn.functional.scaled_dot_product_attention(is_causal=True); RoPE is HF rotate-half.

Variants:  vanilla (no loops);  sgt (the last L=3 layers each loop K=3 times over heads {0..h-1}, h=2);
           block (the last 3 layers have block_repeat=2).  Modes: eager, compile (torch.compile of the module,
           compilation excluded from the timing).  Precision: bf16 (autocast, fp32 master weights) or fp32
           (TF32 off).

FLOPs per step (our convention, the same as the C++ benchmark's):
  per token = 6*P + 12*NL*C*T,  P = all matrix parameters = 2*V*C + NL*(4*C^2 + 3*C*F)  (norms excluded)
            + for each extra block application (block_repeat - 1 per layer): 6*P_layer + 12*C*T,
              P_layer = 4*C^2 + 3*C*F
            + for each loop step over |S| heads: |S|/NH * (6*4*C^2 + 12*C*T)
  step FLOPs = B*T * per token;  MFU = step FLOPs / median step seconds / peak
  (peak: --peak-tflops, default 989 TFLOP/s = H100 SXM dense bf16, or 67 TFLOP/s = H100 SXM fp32 for fp32).

Run (GPU):
  python3 bench/torch_step.py --preset gpt2 --variants vanilla,sgt,block --modes eager,compile \
      --precision bf16 --steps 20 --warmup 5
CPU smoke test and correctness self-check (float64, against tools/reference_model.py, loss and gradients):
  OMP_NUM_THREADS=1 python3 bench/torch_step.py --device cpu --preset tiny --check
  OMP_NUM_THREADS=1 python3 bench/torch_step.py --device cpu --preset tiny --variants vanilla,sgt,block \
      --modes eager --steps 3 --warmup 1

JSON keys of a result: impl ("torch-eager"/"torch-compile"), variant, preset, precision, batch, seq, params,
step_ms_median, step_ms_min, step_ms_max, tokens_per_s, flops_per_step, tflops_per_s, mfu, peak_mem_mib,
device, torch, plus peak_tflops, peak_note, flops_overhead_pct, loss, steps, warmup, compile_s, plan.
A failed (variant, mode) prints the identifying keys and an "error" key instead, and the run continues.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------------------
# Shapes, presets and loop plans


@dataclass(frozen=True)
class Shape:
    layers: int  # NL
    heads: int  # NH
    head_dim: int  # HD
    d_ff: int  # F
    vocab: int  # V
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def width(self) -> int:  # C = NH * HD
        return self.heads * self.head_dim


# name -> (shape, default batch, default seq)
PRESETS = {
    "gpt2": (Shape(layers=12, heads=12, head_dim=64, d_ff=2048, vocab=50304), 16, 1024),
    "gpt2_2k": (Shape(layers=12, heads=12, head_dim=64, d_ff=2048, vocab=50304), 8, 2048),
    "gpt2_4k": (Shape(layers=12, heads=12, head_dim=64, d_ff=2048, vocab=50304), 4, 4096),
    "char_small": (Shape(layers=6, heads=6, head_dim=64, d_ff=1024, vocab=256), 64, 256),
    "tiny": (Shape(layers=4, heads=4, head_dim=8, d_ff=64, vocab=64), 4, 32),
}


@dataclass(frozen=True)
class LayerLoops:
    """Loop structure of one layer: k loop steps over heads S after the first attention pass; the whole block
    (attention, its loops, FFN) runs block_repeat times in a row."""

    k: int = 0
    heads: tuple[int, ...] = ()
    block_repeat: int = 1


def make_plan(variant: str, shape: Shape, args: argparse.Namespace) -> list[LayerLoops]:
    NL = shape.layers
    if variant == "vanilla":
        return [LayerLoops() for _ in range(NL)]
    if variant == "sgt":
        if not (1 <= args.sgt_layers <= NL and 1 <= args.sgt_heads <= shape.heads and args.sgt_k >= 1):
            raise ValueError("sgt needs 1 <= L <= layers, 1 <= h <= heads, K >= 1")
        loop = LayerLoops(k=args.sgt_k, heads=tuple(range(args.sgt_heads)))
        return [loop if l >= NL - args.sgt_layers else LayerLoops() for l in range(NL)]
    if variant == "block":
        if not (1 <= args.block_layers <= NL and args.block_repeat >= 1):
            raise ValueError("block needs 1 <= block layers <= layers, block repeat >= 1")
        rep = LayerLoops(block_repeat=args.block_repeat)
        return [rep if l >= NL - args.block_layers else LayerLoops() for l in range(NL)]
    raise ValueError(f"unknown variant {variant!r} (vanilla, sgt, block)")


def plan_string(plan: list[LayerLoops]) -> str:
    parts = []
    for l, lp in enumerate(plan):
        if lp.k:
            parts.append(f"L{l}:k={lp.k},S={list(lp.heads)}")
        if lp.block_repeat > 1:
            parts.append(f"L{l}:repeat={lp.block_repeat}")
    return ";".join(parts) or "vanilla"


def matrix_params(shape: Shape) -> int:
    C, F_ = shape.width, shape.d_ff
    return 2 * shape.vocab * C + shape.layers * (4 * C * C + 3 * C * F_)


def step_flops(shape: Shape, B: int, T: int, plan: list[LayerLoops]) -> int:
    """FLOPs of one training step by our convention (see the top of this file)."""
    C, F_, NH, HD = shape.width, shape.d_ff, shape.heads, shape.head_dim
    per_token = 6 * matrix_params(shape) + 12 * shape.layers * C * T
    p_layer = 4 * C * C + 3 * C * F_
    for lp in plan:
        per_token += (lp.block_repeat - 1) * (6 * p_layer + 12 * C * T)
        # |S|/NH * (24 C^2 + 12 C T) = |S| * HD * (24 C + 12 T), exact in integers since C = NH * HD
        per_token += lp.block_repeat * lp.k * len(lp.heads) * HD * (24 * C + 12 * T)
    return B * T * per_token


# ----------------------------------------------------------------------------------------------------------
# The fast model


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Layer(nn.Module):
    def __init__(self, shape: Shape, loops: LayerLoops, dtype: torch.dtype):
        super().__init__()
        C, F_ = shape.width, shape.d_ff
        self.shape, self.loops = shape, loops
        self.attn_norm = nn.Parameter(torch.ones(C, dtype=dtype))
        self.qkv = nn.Parameter(torch.empty(3 * C, C, dtype=dtype))  # rows: W_Q, W_K, W_V (each head-major)
        self.o = nn.Parameter(torch.empty(C, C, dtype=dtype))  # columns of head i: i*HD:(i+1)*HD
        self.ffn_norm = nn.Parameter(torch.ones(C, dtype=dtype))
        self.gate_up = nn.Parameter(torch.empty(2 * F_, C, dtype=dtype))  # rows: W_gate, W_up
        self.down = nn.Parameter(torch.empty(C, F_, dtype=dtype))
        # The loop head set S: a slice when contiguous (free views of W_O), else an index buffer.
        S = loops.heads
        self.loop_slice = None
        if S and list(S) == list(range(S[0], S[0] + len(S))):
            self.loop_slice = slice(S[0], S[0] + len(S))
        elif S:
            self.register_buffer("loop_idx", torch.tensor(S, dtype=torch.long), persistent=False)

    def attention(self, H: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, subset: bool) -> torch.Tensor:
        """H + sum over heads R of o_i @ W_O[:, head i].T, R = all heads, or S when subset (Eq. 1-3, 6)."""
        B, T, C = H.shape
        NH, HD = self.shape.heads, self.shape.head_dim
        a = rms_norm(H, self.attn_norm, self.shape.norm_eps)
        if not subset:
            R, w_qkv, w_o = NH, self.qkv, self.o
        else:
            R = len(self.loops.heads)
            sel = self.loop_slice if self.loop_slice is not None else self.loop_idx
            w_qkv = self.qkv.view(3, NH, HD, C)[:, sel].reshape(3 * R * HD, C)
            if self.loop_slice is not None:
                w_o = self.o[:, sel.start * HD:sel.stop * HD]  # (C, R*HD) view
            else:
                w_o = self.o.view(C, NH, HD)[:, sel].reshape(C, R * HD)
        qkv = F.linear(a, w_qkv).view(B, T, 3, R, HD)
        cos, sin = cos[:T].to(qkv.dtype), sin[:T].to(qkv.dtype)  # (T, 1, 1, HD)
        qk = qkv[:, :, :2]
        qk = qk * cos + rotate_half(qk) * sin  # RoPE on q and k together
        q, k = qk.unbind(2)  # (B, T, R, HD)
        v = qkv[:, :, 2]
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)  # (B, R, T, HD)
        y = y.transpose(1, 2).reshape(B, T, R * HD)
        return H + F.linear(y, w_o)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        for _ in range(self.loops.block_repeat):
            H = self.attention(h, cos, sin, subset=False)
            for _ in range(self.loops.k):
                H = self.attention(H, cos, sin, subset=True)
            n = rms_norm(H, self.ffn_norm, self.shape.norm_eps)
            gate, up = F.linear(n, self.gate_up).chunk(2, dim=-1)
            h = H + F.linear(F.silu(gate) * up, self.down)
        return h


class FastModel(nn.Module):
    def __init__(self, shape: Shape, plan: list[LayerLoops], max_seq: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        assert len(plan) == shape.layers and shape.head_dim % 2 == 0
        C = shape.width
        self.shape = shape
        self.embed = nn.Parameter(torch.empty(shape.vocab, C, dtype=dtype))
        self.layers = nn.ModuleList(Layer(shape, lp, dtype) for lp in plan)
        self.norm = nn.Parameter(torch.ones(C, dtype=dtype))
        self.lm_head = nn.Parameter(torch.empty(shape.vocab, C, dtype=dtype))
        # RoPE tables computed in float64 (as the reference does at float64), stored in the model dtype.
        HD = shape.head_dim
        inv_freq = 1.0 / (shape.rope_base ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD))
        angles = torch.outer(torch.arange(max_seq, dtype=torch.float64), inv_freq)
        emb = torch.cat([angles, angles], dim=-1).view(max_seq, 1, 1, HD)
        self.register_buffer("cos", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin", emb.sin().to(dtype), persistent=False)

    @torch.no_grad()
    def init_weights_(self, generator: torch.Generator, std: float = 0.02) -> None:
        for p in self.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32) * std)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = F.embedding(inputs, self.embed)  # (B, T, C)
        for layer in self.layers:
            h = layer(h, self.cos, self.sin)
        logits = F.linear(rms_norm(h, self.norm, self.shape.norm_eps), self.lm_head)  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)


def load_hf_weights_(model: FastModel, w: dict[str, torch.Tensor]) -> None:
    """Copy Hugging Face LLaMA-named weights (tools/reference_model.py's names) into the fast model."""
    with torch.no_grad():
        model.embed.copy_(w["model.embed_tokens.weight"])
        model.norm.copy_(w["model.norm.weight"])
        model.lm_head.copy_(w["lm_head.weight"])
        for l, layer in enumerate(model.layers):
            p = f"model.layers.{l}."
            layer.attn_norm.copy_(w[p + "input_layernorm.weight"])
            layer.qkv.copy_(torch.cat([w[p + f"self_attn.{m}_proj.weight"] for m in "qkv"]))
            layer.o.copy_(w[p + "self_attn.o_proj.weight"])
            layer.ffn_norm.copy_(w[p + "post_attention_layernorm.weight"])
            layer.gate_up.copy_(torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]]))
            layer.down.copy_(w[p + "mlp.down_proj.weight"])


def hf_grads(model: FastModel) -> dict[str, torch.Tensor]:
    """The fast model's gradients under the Hugging Face names (the inverse of load_hf_weights_)."""
    C, F_ = model.shape.width, model.shape.d_ff
    g = {"model.embed_tokens.weight": model.embed.grad, "model.norm.weight": model.norm.grad,
         "lm_head.weight": model.lm_head.grad}
    for l, layer in enumerate(model.layers):
        p = f"model.layers.{l}."
        g[p + "input_layernorm.weight"] = layer.attn_norm.grad
        for i, m in enumerate("qkv"):
            g[p + f"self_attn.{m}_proj.weight"] = layer.qkv.grad[i * C:(i + 1) * C]
        g[p + "self_attn.o_proj.weight"] = layer.o.grad
        g[p + "post_attention_layernorm.weight"] = layer.ffn_norm.grad
        g[p + "mlp.gate_proj.weight"] = layer.gate_up.grad[:F_]
        g[p + "mlp.up_proj.weight"] = layer.gate_up.grad[F_:]
        g[p + "mlp.down_proj.weight"] = layer.down.grad
    return g


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    """AdamW lr 6e-4, betas (0.9, 0.95), weight decay 0.1 on 2-D weights (0 on norms, as the reference)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kw = {"fused": True} if device.type == "cuda" else {"foreach": False}
    return torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), **kw)


# ----------------------------------------------------------------------------------------------------------
# Benchmark


def bench_one(variant: str, mode: str, shape: Shape, B: int, T: int, args: argparse.Namespace,
              device: torch.device) -> dict:
    plan = make_plan(variant, shape, args)
    cuda = device.type == "cuda"
    bf16 = args.precision == "bf16" and cuda
    torch.manual_seed(args.seed)
    model = FastModel(shape, plan, max_seq=T).to(device)
    gen = torch.Generator().manual_seed(args.seed)
    model.init_weights_(gen)
    opt = make_optimizer(model, device)
    dgen = torch.Generator(device=device).manual_seed(args.seed)
    tokens = torch.randint(0, shape.vocab, (B, T + 1), generator=dgen, device=device)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    fwd = torch.compile(model, mode=args.compile_mode) if mode == "compile" else model

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    compile_s = None
    warmup = args.warmup
    if mode == "compile":  # the first step compiles forward and backward; then >= 3 more warm-up steps
        t0 = time.perf_counter()
        step()
        sync()
        compile_s = time.perf_counter() - t0
        warmup = max(warmup, 3)
    for _ in range(warmup):
        step()
    sync()

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(args.steps)]
        for start, end in events:
            start.record()
            loss = step()
            end.record()
        torch.cuda.synchronize()
        times_ms = [s.elapsed_time(e) for s, e in events]
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        times_ms = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            loss = step()
            times_ms.append((time.perf_counter() - t0) * 1e3)
        peak_mib = None  # no allocator statistics on the CPU

    med = statistics.median(times_ms)
    flops = step_flops(shape, B, T, plan)
    peak_tflops = args.peak_tflops
    if peak_tflops is None and cuda:
        peak_tflops = 989.0 if bf16 else 67.0
    if args.peak_tflops is not None:
        note = "given by --peak-tflops"
    elif not cuda:
        note = "cpu: no peak, mfu null"
    else:
        note = "H100 SXM dense bf16 (989)" if bf16 else "H100 SXM fp32 non-tensor-core (67)"
    tflops_per_s = flops / (med / 1e3) / 1e12
    return {
        "impl": f"torch-{mode}", "variant": variant, "preset": args.preset,
        "precision": args.precision if cuda else "fp32",
        "batch": B, "seq": T, "params": sum(p.numel() for p in model.parameters()),
        "step_ms_median": med, "step_ms_min": min(times_ms), "step_ms_max": max(times_ms),
        "tokens_per_s": B * T / (med / 1e3), "flops_per_step": flops, "tflops_per_s": tflops_per_s,
        "mfu": tflops_per_s / peak_tflops if peak_tflops else None, "peak_mem_mib": peak_mib,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
        "peak_tflops": peak_tflops, "peak_note": note,
        "flops_overhead_pct": 100.0 * (flops / step_flops(shape, B, T, make_plan("vanilla", shape, args)) - 1),
        "loss": float(loss.detach()), "steps": args.steps, "warmup": warmup, "compile_s": compile_s,
        "plan": plan_string(plan),
    }


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_benchmarks(args: argparse.Namespace, device: torch.device) -> int:
    shape, B, T = PRESETS[args.preset]
    B, T = args.batch or B, args.seq or T
    if device.type == "cuda" and args.precision == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    n_ok = n_all = 0
    for variant in args.variants.split(","):
        for mode in args.modes.split(","):
            n_all += 1
            try:
                result = bench_one(variant, mode, shape, B, T, args, device)
                n_ok += 1
            except Exception as e:  # a failed compile (or OOM) is reported and the run continues
                result = {"impl": f"torch-{mode}", "variant": variant, "preset": args.preset,
                          "precision": args.precision if device.type == "cuda" else "fp32",
                          "batch": B, "seq": T,
                          "error": f"{type(e).__name__}: {e}"[:4000]}
            print(json.dumps(result), flush=True)
            if mode == "compile":
                torch._dynamo.reset()  # drop the compiled graphs of this model
            free_memory(device)
    return 0 if n_ok > 0 or n_all == 0 else 1


# ----------------------------------------------------------------------------------------------------------
# Correctness self-check against tools/reference_model.py (float64, CPU)


def run_check(args: argparse.Namespace) -> int:
    sys.dont_write_bytecode = True  # leave no __pycache__ in tools/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import reference_model as ref

    name = args.preset if args.preset in ref.SHAPES else "tiny"
    rs = ref.SHAPES[name]
    shape = Shape(layers=rs.layers, heads=rs.heads, head_dim=rs.head_dim, d_ff=rs.d_ff, vocab=rs.vocab,
                  norm_eps=rs.norm_eps, rope_base=rs.rope_base)
    B, T = 2, min(rs.max_seq, args.seq or rs.max_seq)
    dt = torch.float64
    reference = ref.ReferenceModel(rs).to(dt)
    ref.init_weights_(reference, torch.Generator().manual_seed(args.seed), std=0.1, norm_jitter=0.2)
    weights = ref.parameters_by_name(reference)
    g = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, rs.vocab, (B, T + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]

    plans = {v: make_plan(v, shape, args) for v in ("vanilla", "sgt", "block")}
    # One more plan: loops over a non-contiguous head set inside a repeated block (the index-gather path).
    if shape.heads >= 3:
        mixed = LayerLoops(k=2, heads=(shape.heads - 1, 0), block_repeat=2)
        plans["mixed"] = [mixed if l == shape.layers - 1 else LayerLoops() for l in range(shape.layers)]
    worst = 0.0
    for variant, plan in plans.items():
        ref_plan = ref.Plan(tuple(ref.LayerPlan(k=lp.k, heads=lp.heads, block_repeat=lp.block_repeat)
                                  for lp in plan))
        reference.zero_grad(set_to_none=True)
        loss_ref = reference(x, y, ref_plan)["loss"]
        loss_ref.backward()
        fast = FastModel(shape, plan, max_seq=T, dtype=dt)
        load_hf_weights_(fast, weights)
        loss_fast = fast(x, y)
        loss_fast.backward()
        d_loss = abs(loss_fast.item() - loss_ref.item())
        fg = hf_grads(fast)
        d_grad = max((fg[n] - p.grad).abs().max().item() for n, p in reference.named_parameters())
        worst = max(worst, d_loss, d_grad)
        print(json.dumps({"check": variant, "plan": plan_string(plan), "loss_ref": loss_ref.item(),
                          "loss_fast": loss_fast.item(), "max_abs_diff_loss": d_loss,
                          "max_abs_diff_grad": d_grad}), flush=True)
    ok = worst <= 1e-9
    print(json.dumps({"check": "all", "max_abs_diff": worst, "tolerance": 1e-9, "ok": ok}), flush=True)
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt2", choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=None, help="override the preset's batch")
    p.add_argument("--seq", type=int, default=None, help="override the preset's sequence length")
    p.add_argument("--variants", default="vanilla,sgt,block", help="comma list of vanilla, sgt, block")
    p.add_argument("--modes", default="eager,compile", help="comma list of eager, compile")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps (compile: at least 3 after compiling)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke test: fp32, no autocast)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak for MFU (default: 989 for bf16, 67 for fp32; H100 SXM dense)")
    p.add_argument("--sgt-layers", type=int, default=3, help="sgt: the last L layers loop")
    p.add_argument("--sgt-k", type=int, default=3, help="sgt: K loop steps per looped layer")
    p.add_argument("--sgt-heads", type=int, default=2, help="sgt: loop over heads {0..h-1}")
    p.add_argument("--block-layers", type=int, default=3, help="block: the last n layers repeat")
    p.add_argument("--block-repeat", type=int, default=2, help="block: block_repeat of those layers")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: PyTorch's default)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--check", action="store_true",
                   help="float64 CPU self-check against tools/reference_model.py, exit 1 if diff > 1e-9")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        return run_check(args)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: CUDA is not available (use --device cpu --preset tiny for a smoke test)", file=sys.stderr)
        return 2
    return run_benchmarks(args, device)


if __name__ == "__main__":
    sys.exit(main())
