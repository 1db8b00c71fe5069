"""A plain PyTorch reference of the Sparse Growing Transformer (spec/SGT.md Sec. 1, 2, 5).

This is the outside oracle of the C++ library: a short, readable model that any reader can check line by line
against the spec. It is written for clarity first (float64 works everywhere) and is reused by
tools/make_fixtures.py, by benchmarks and by Hugging Face comparisons.

The model is a LLaMA-style pre-norm decoder, parameter names as Hugging Face LLaMA:

    h = E[x]
    per layer, repeated block_repeat times:
        H = attention pass over all heads, gains 1                                  (Eq. 1-3)
        for s in 1..k:
            s == 1 and fade > 0: attention pass over ALL heads, gain 1 on S, `fade` on the others
            otherwise:           attention pass over the heads S, gain 1                         (Eq. 6)
        h = H + W_2(silu(W_1 n) * W_3 n),  n = RMSNorm_ffn(H)
    logits = RMSNorm_final(h) @ lm_head.T ;  loss = mean cross-entropy, targets == -1 ignored

An attention pass over heads R with gains g:  a = RMSNorm_attn(H);  H + sum_{i in R} g_i * o_i @ W_O[:, head i].T
with o_i = softmax_causal(q_i k_i^T / sqrt(HD)) v_i, q_i and k_i rotated by RoPE (HF rotate-half, base 10000).
Every loop pass reuses the layer's own W_Q, W_K, W_V, W_O and attention norm weight.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -1


# ----------------------------------------------------------------------------------------------------------
# Shapes and loop plans


@dataclass(frozen=True)
class ModelShape:
    """The shape of the model (include/sgt/config.hpp's model_shape plus the norm eps and RoPE base)."""

    layers: int  # NL
    heads: int  # NH
    head_dim: int  # HD
    d_ff: int  # F
    vocab: int  # V
    max_seq: int
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def width(self) -> int:  # C = NH * HD
        return self.heads * self.head_dim

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["width"] = self.width
        return json.dumps(d, sort_keys=True)


# The presets of include/sgt/config.hpp.
SHAPES = {
    "tiny": ModelShape(layers=4, heads=4, head_dim=8, d_ff=64, vocab=64, max_seq=32),
    "char_mini": ModelShape(layers=4, heads=4, head_dim=32, d_ff=384, vocab=256, max_seq=128),
    "char_small": ModelShape(layers=6, heads=6, head_dim=64, d_ff=1024, vocab=256, max_seq=256),
    "p275m": ModelShape(layers=12, heads=12, head_dim=64, d_ff=6144, vocab=50304, max_seq=4096),
    "p573m": ModelShape(layers=16, heads=16, head_dim=64, d_ff=8192, vocab=50304, max_seq=4096),
    "p1_2b": ModelShape(layers=16, heads=16, head_dim=96, d_ff=12288, vocab=50304, max_seq=4096),
}


@dataclass(frozen=True)
class LayerPlan:
    """The loop structure of one layer: k loop steps over the heads S, the fade factor of the first loop step
    (0 = hard), and how many times the whole block (attention, loops, FFN) runs (Block Loop baseline)."""

    k: int = 0
    heads: tuple[int, ...] = ()
    fade: float = 0.0
    block_repeat: int = 1

    def to_dict(self) -> dict:
        return {"k": self.k, "heads": list(self.heads), "fade": float(self.fade), "block_repeat": self.block_repeat}


@dataclass(frozen=True)
class Plan:
    layers: tuple[LayerPlan, ...] = field(default_factory=tuple)

    @staticmethod
    def vanilla(n_layers: int) -> "Plan":
        return Plan(tuple(LayerPlan() for _ in range(n_layers)))

    @staticmethod
    def with_layers(n_layers: int, changes: dict[int, LayerPlan]) -> "Plan":
        return Plan(tuple(changes.get(l, LayerPlan()) for l in range(n_layers)))

    def to_json(self) -> str:
        return json.dumps({"layers": [lp.to_dict() for lp in self.layers]})

    @staticmethod
    def from_json(text: str) -> "Plan":
        d = json.loads(text)
        return Plan(tuple(LayerPlan(k=l["k"], heads=tuple(l["heads"]), fade=l["fade"],
                                    block_repeat=l.get("block_repeat", 1)) for l in d["layers"]))

    def validate(self, shape: ModelShape) -> None:
        if len(self.layers) != shape.layers:
            raise ValueError(f"plan has {len(self.layers)} layers, the model has {shape.layers}")
        for l, lp in enumerate(self.layers):
            if lp.k < 0 or lp.block_repeat < 1:
                raise ValueError(f"layer {l}: k must be >= 0 and block_repeat >= 1, got {lp}")
            if lp.k > 0 and not lp.heads:
                raise ValueError(f"layer {l}: k = {lp.k} needs a non-empty head set")
            if any(not 0 <= i < shape.heads for i in lp.heads) or len(set(lp.heads)) != len(lp.heads):
                raise ValueError(f"layer {l}: heads {lp.heads} must be distinct and in [0, {shape.heads})")


# ----------------------------------------------------------------------------------------------------------
# Leaf ops


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2 over the last dim) + eps) * weight."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rope_cos_sin(T: int, head_dim: int, base: float, dtype: torch.dtype,
                 compute_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of pos * inv_freq, inv_freq_j = base^(-2j/HD), duplicated over the two halves: (T, HD) each.

    compute_dtype (default: dtype) is only for parity tests with Hugging Face, which computes these in float32.
    """
    cd = compute_dtype or dtype
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(cd) / head_dim))  # (HD/2)
    pos = torch.arange(T, dtype=torch.int64).to(cd)  # (T)
    angles = torch.outer(pos, inv_freq)  # (T, HD/2)
    emb = torch.cat([angles, angles], dim=-1)  # (T, HD)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (..., T, HD); cos, sin: (T, HD)."""
    return x * cos + rotate_half(x) * sin


def causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim of (..., T, T) scores with key j > query t masked out."""
    T = scores.shape[-1]
    mask = torch.ones(T, T, dtype=torch.bool, device=scores.device).triu(1)
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


def last_row_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Normalized entropy of the attention row of the last query, mean over the batch (spec Eq. 4, 5).

    probs: (B, NH, T, T) -> (NH).  E = -(1/log T) sum_j p_j log p_j.
    """
    p = probs[:, :, -1, :]  # (B, NH, T)
    T = probs.shape[-1]
    return (-torch.special.xlogy(p, p).sum(dim=-1) / math.log(T)).mean(dim=0)


# ----------------------------------------------------------------------------------------------------------
# Modules (named so that named_parameters() gives the Hugging Face LLaMA names)


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))  # (C)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        C = shape.width
        self.heads, self.head_dim = shape.heads, shape.head_dim
        self.q_proj = nn.Linear(C, C, bias=False)  # weight (C, C), rows of head i: i*HD:(i+1)*HD
        self.k_proj = nn.Linear(C, C, bias=False)
        self.v_proj = nn.Linear(C, C, bias=False)
        self.o_proj = nn.Linear(C, C, bias=False)  # weight (C, C), columns of head i: i*HD:(i+1)*HD

    def heads_out(self, a: torch.Tensor, heads: Sequence[int], cos: torch.Tensor, sin: torch.Tensor,
                  gains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_{i in heads} gains_i * o_i @ W_O[:, head i].T for the normed input a (B, T, C).

        Only the rows of W_Q/W_K/W_V and the columns of W_O of the given heads are used.
        Returns the (B, T, C) sum and the attention probabilities (B, |R|, T, T).
        """
        NH, HD = self.heads, self.head_dim
        C = NH * HD
        idx = torch.as_tensor(list(heads), dtype=torch.long, device=a.device)
        wq = self.q_proj.weight.view(NH, HD, C)[idx]  # (R, HD, C)
        wk = self.k_proj.weight.view(NH, HD, C)[idx]  # (R, HD, C)
        wv = self.v_proj.weight.view(NH, HD, C)[idx]  # (R, HD, C)
        wo = self.o_proj.weight.view(C, NH, HD)[:, idx]  # (C, R, HD)
        q = apply_rope(torch.einsum("btc,rdc->brtd", a, wq), cos, sin)  # (B, R, T, HD)
        k = apply_rope(torch.einsum("btc,rdc->brtd", a, wk), cos, sin)  # (B, R, T, HD)
        v = torch.einsum("btc,rdc->brtd", a, wv)  # (B, R, T, HD)
        probs = causal_softmax(q @ k.transpose(-1, -2) / math.sqrt(HD))  # (B, R, T, T)
        o = (probs @ v) * gains.view(1, -1, 1, 1)  # (B, R, T, HD)
        return torch.einsum("brtd,crd->btc", o, wo), probs


class MLP(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_proj = nn.Linear(shape.width, shape.d_ff, bias=False)  # W_1 (F, C)
        self.up_proj = nn.Linear(shape.width, shape.d_ff, bias=False)  # W_3 (F, C)
        self.down_proj = nn.Linear(shape.d_ff, shape.width, bias=False)  # W_2 (C, F)

    def forward(self, n: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class DecoderLayer(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.input_layernorm = RMSNorm(shape.width, shape.norm_eps)
        self.self_attn = Attention(shape)
        self.post_attention_layernorm = RMSNorm(shape.width, shape.norm_eps)
        self.mlp = MLP(shape)

    def attention_pass(self, H: torch.Tensor, heads: Sequence[int], gains: Sequence[float] | torch.Tensor,
                       cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """H + sum_{i in heads} g_i * Attn_i(RMSNorm_attn(H)): one attention pass (first pass or loop step)."""
        gains = torch.as_tensor(gains, dtype=H.dtype, device=H.device)
        out, probs = self.self_attn.heads_out(self.input_layernorm(H), heads, cos, sin, gains)
        return H + out, probs

    def forward(self, h: torch.Tensor, plan: LayerPlan, cos: torch.Tensor,
                sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the layer output (B, T, C) and the probabilities of the first attention pass (B, NH, T, T)."""
        all_heads = list(range(self.self_attn.heads))
        first_probs = None
        for _ in range(plan.block_repeat):
            H, probs = self.attention_pass(h, all_heads, [1.0] * len(all_heads), cos, sin)
            if first_probs is None:
                first_probs = probs
            for s in range(1, plan.k + 1):
                if s == 1 and plan.fade > 0:
                    gains = [1.0 if i in plan.heads else plan.fade for i in all_heads]
                    H, _ = self.attention_pass(H, all_heads, gains, cos, sin)
                else:
                    H, _ = self.attention_pass(H, plan.heads, [1.0] * len(plan.heads), cos, sin)
            h = H + self.mlp(self.post_attention_layernorm(H))
        return h, first_probs


class Backbone(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.embed_tokens = nn.Embedding(shape.vocab, shape.width)  # E (V, C)
        self.layers = nn.ModuleList(DecoderLayer(shape) for _ in range(shape.layers))
        self.norm = RMSNorm(shape.width, shape.norm_eps)


class ReferenceModel(nn.Module):
    """The whole decoder. Parameter names are Hugging Face LLaMA's (model.layers.3.self_attn.q_proj.weight)."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.model = Backbone(shape)
        self.lm_head = nn.Linear(shape.width, shape.vocab, bias=False)  # (V, C), untied from the embedding

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor | None = None, plan: Plan | None = None,
                rope_compute_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """inputs, targets: (B, T) integer tokens (targets == -1 are ignored).

        Returns {"logits": (B, T, V), "entropy": (NL, NH) first-pass last-row entropy (no gradient),
                 "loss": scalar (only with targets)}.
        """
        plan = plan or Plan.vanilla(self.shape.layers)
        plan.validate(self.shape)
        B, T = inputs.shape
        if T > self.shape.max_seq:
            raise ValueError(f"sequence length {T} exceeds max_seq {self.shape.max_seq}")
        dtype = self.lm_head.weight.dtype
        cos, sin = rope_cos_sin(T, self.shape.head_dim, self.shape.rope_base, dtype, rope_compute_dtype)
        cos, sin = cos.to(inputs.device), sin.to(inputs.device)

        h = self.model.embed_tokens(inputs)  # (B, T, C)
        entropies = []
        for layer, lp in zip(self.model.layers, plan.layers):
            h, probs = layer(h, lp, cos, sin)
            entropies.append(last_row_entropy(probs.detach()))
        logits = self.lm_head(self.model.norm(h))  # (B, T, V)
        out = {"logits": logits, "entropy": torch.stack(entropies)}
        if targets is not None:
            out["loss"] = cross_entropy(logits, targets)
        return out


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of logsumexp(logits) - logits[target] over the positions whose target is not -1."""
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    keep = targets != IGNORE_INDEX
    lse = torch.logsumexp(logits[keep], dim=-1)
    picked = logits[keep].gather(1, targets[keep].long().unsqueeze(1)).squeeze(1)
    return (lse - picked).mean()


# ----------------------------------------------------------------------------------------------------------
# Initialization


def init_weights_(model: ReferenceModel, generator: torch.Generator, std: float = 0.02,
                  norm_jitter: float = 0.0) -> None:
    """Matrices ~ N(0, std); RMSNorm weights 1 + norm_jitter * N(0, 1). Drawn in float32, in the order of
    named_parameters(), from the given generator (deterministic)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if p.dim() >= 2:
                p.copy_(noise * std)
            else:
                p.copy_(1.0 + norm_jitter * noise)


# ----------------------------------------------------------------------------------------------------------
# Training: AdamW, global-norm clipping, warm-up + cosine schedule


@dataclass(frozen=True)
class TrainSettings:
    lr_max: float = 1e-2
    lr_min_ratio: float = 0.1  # lr_min = lr_min_ratio * lr_max
    warmup: int = 3
    steps: int = 10  # N
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # on every 2-D weight (embedding and lm_head included), 0 on RMSNorm weights
    grad_clip: float = 1.0  # torch.nn.utils.clip_grad_norm_: scale = min(1, max_norm / (norm + 1e-6))

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.update(optimizer="torch.optim.AdamW", lr_min=self.lr_min_ratio * self.lr_max, clip_eps=1e-6,
                 weight_decay_on="2-D weights (embeddings, projections, lm_head); 0 on RMSNorm weights",
                 schedule="t<=warmup: lr_max*t/warmup; else lr_min+0.5*(lr_max-lr_min)*(1+cos(pi*(t-warmup)/(N-warmup)))")
        return json.dumps(d, sort_keys=True)


def learning_rate(t: int, s: TrainSettings) -> float:
    """The lr of step t = 1..N: linear warm-up to lr_max, then cosine down to lr_min at t = N."""
    if t <= s.warmup:
        return s.lr_max * t / s.warmup
    lr_min = s.lr_min_ratio * s.lr_max
    p = (t - s.warmup) / (s.steps - s.warmup)
    return lr_min + 0.5 * (s.lr_max - lr_min) * (1.0 + math.cos(math.pi * p))


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr_max, betas=s.betas, eps=s.eps, foreach=False)


def train(model: ReferenceModel, inputs: torch.Tensor, targets: torch.Tensor, plan: Plan | None,
          s: TrainSettings) -> dict[str, list[float]]:
    """s.steps AdamW steps on one batch. Returns per step the loss before the update, the lr and the global
    gradient norm before clipping."""
    opt = make_optimizer(model, s)
    losses, lrs, norms = [], [], []
    for t in range(1, s.steps + 1):
        lr = learning_rate(t, s)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = model(inputs, targets, plan)["loss"]
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        losses.append(loss.item())
        lrs.append(lr)
        norms.append(norm.item())
    return {"losses": losses, "lrs": lrs, "grad_norms": norms}


def parameters_by_name(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def load_weights_(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy weights (any float dtype) into the model by Hugging Face name; every parameter must be given."""
    params = parameters_by_name(model)
    missing = set(params) - set(weights)
    if missing:
        raise KeyError(f"missing weights: {sorted(missing)}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.dtype))


def iter_hf_names(shape: ModelShape) -> Iterable[str]:
    yield "model.embed_tokens.weight"
    for l in range(shape.layers):
        pre = f"model.layers.{l}."
        yield pre + "input_layernorm.weight"
        for m in "qkvo":
            yield pre + f"self_attn.{m}_proj.weight"
        yield pre + "post_attention_layernorm.weight"
        for m in ("gate", "up", "down"):
            yield pre + f"mlp.{m}_proj.weight"
    yield "model.norm.weight"
    yield "lm_head.weight"
