"""Write the PyTorch oracle fixtures of the C++ tests: tests/fixtures/tiny_{vanilla,loops,block}.safetensors.

    python3 tools/make_fixtures.py            # from the repository root; deterministic, prints a summary

For the `tiny` shape (NL=4, NH=4, HD=8, C=32, F=64, V=64), B=2, T=16, one fixed seed, one file per loop plan.
Each file holds the initial float32 weights (Hugging Face LLaMA names), the batch, and, computed in float64
from those float32 weights by tools/reference_model.py: logits, loss, every gradient, the first-pass
last-row attention entropy and the losses/learning rates of 10 AdamW steps. See tests/fixtures/README.md.

Before writing, the script asserts the reference model against independent computations: F.cross_entropy,
central finite differences, a literal per-head transcription of the model, the loop = attention-twice
identity, and (when `transformers` is importable) Hugging Face's LlamaForCausalLM.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model as rm  # noqa: E402
from reference_model import LayerPlan, Plan  # noqa: E402

SEED = 20260324
B, T = 2, 16
SHAPE = rm.SHAPES["tiny"]
TRAIN = rm.TrainSettings(lr_max=1e-2, lr_min_ratio=0.1, warmup=3, steps=10)
OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")

PLANS = OrderedDict(
    vanilla=Plan.vanilla(SHAPE.layers),
    loops=Plan.with_layers(SHAPE.layers, {1: LayerPlan(k=2, heads=(0, 2), fade=0.0),
                                          3: LayerPlan(k=1, heads=(1, 2), fade=0.5)}),
    block=Plan.with_layers(SHAPE.layers, {2: LayerPlan(block_repeat=2)}),
)

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------
# Inputs


def make_initial_state() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """float32 weights (matrices N(0, 0.02), norm weights 1 + 0.1 N(0, 1)), inputs and targets (B, T) int64."""
    g = torch.Generator().manual_seed(SEED)
    model = rm.ReferenceModel(SHAPE)  # float32
    rm.init_weights_(model, g, std=0.02, norm_jitter=0.1)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert list(weights) == list(rm.iter_hf_names(SHAPE)), "parameter order differs from the HF name list"
    inputs = torch.randint(0, SHAPE.vocab, (B, T), generator=g)
    targets = torch.randint(0, SHAPE.vocab, (B, T), generator=g)
    targets[0, 5] = rm.IGNORE_INDEX
    return weights, inputs, targets


def model_f64(weights: dict[str, torch.Tensor]) -> rm.ReferenceModel:
    m = rm.ReferenceModel(SHAPE).double()
    rm.load_weights_(m, weights)
    return m


# ----------------------------------------------------------------------------------------------------------
# Independent computations for the self-checks


def naive_attention(layer: rm.DecoderLayer, H, heads, gains, cos, sin):
    """The attention pass written literally, one head at a time (no head batching, no weight views)."""
    HD = SHAPE.head_dim
    a = rm.rms_norm(H, layer.input_layernorm.weight, SHAPE.norm_eps)
    att = layer.self_attn
    out = H
    for i, g in zip(heads, gains):
        rows = slice(i * HD, (i + 1) * HD)
        q = rm.apply_rope(a @ att.q_proj.weight[rows].T, cos, sin)  # (B, T, HD)
        k = rm.apply_rope(a @ att.k_proj.weight[rows].T, cos, sin)
        v = a @ att.v_proj.weight[rows].T
        scores = q @ k.transpose(-1, -2) / math.sqrt(HD)  # (B, T, T)
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        p = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        out = out + g * ((p @ v) @ att.o_proj.weight[:, rows].T)
    return out


def naive_forward(model: rm.ReferenceModel, inputs, plan: Plan, attn_repeats: dict[int, int] | None = None):
    """Logits of the model computed by naive_attention. attn_repeats[l] = r applies layer l's plain attention
    sublayer r times in a row instead of its loop plan (for the loop = attention-twice check)."""
    attn_repeats = attn_repeats or {}
    cos, sin = rm.rope_cos_sin(T, SHAPE.head_dim, SHAPE.rope_base, torch.float64)
    allh = list(range(SHAPE.heads))
    h = model.model.embed_tokens.weight[inputs]
    for l, (layer, lp) in enumerate(zip(model.model.layers, plan.layers)):
        for _ in range(lp.block_repeat):
            H = h
            for _ in range(attn_repeats.get(l, 1)):
                H = naive_attention(layer, H, allh, [1.0] * SHAPE.heads, cos, sin)
            for s in range(1, lp.k + 1):
                if s == 1 and lp.fade > 0:
                    H = naive_attention(layer, H, allh, [1.0 if i in lp.heads else lp.fade for i in allh], cos, sin)
                else:
                    H = naive_attention(layer, H, lp.heads, [1.0] * len(lp.heads), cos, sin)
            n = rm.rms_norm(H, layer.post_attention_layernorm.weight, SHAPE.norm_eps)
            m = layer.mlp
            h = H + (F.silu(n @ m.gate_proj.weight.T) * (n @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    return rm.rms_norm(h, model.model.norm.weight, SHAPE.norm_eps) @ model.lm_head.weight.T


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def check_loss_and_naive(model, inputs, targets, plan, name) -> None:
    with torch.no_grad():
        out = model(inputs, targets, plan)
        ref = F.cross_entropy(out["logits"].reshape(-1, SHAPE.vocab), targets.reshape(-1), ignore_index=-1)
        assert abs(out["loss"].item() - ref.item()) <= 1e-14 * abs(ref.item()), (name, out["loss"], ref)
        d = max_rel(out["logits"], naive_forward(model, inputs, plan))
        assert d < 1e-13, f"{name}: reference vs per-head transcription rel diff {d}"
    print(f"  [{name}] loss == F.cross_entropy(ignore_index=-1); logits == per-head transcription (rel {d:.1e})")


def finite_difference_check(model, inputs, targets, plan, name, grads) -> float:
    """Central differences in float64 at the largest-|grad| entries of several parameters, and along one
    random direction through all parameters. Returns the worst relative error."""
    params = dict(model.named_parameters())
    eps = 1e-5

    def loss_at() -> float:
        with torch.no_grad():
            return model(inputs, targets, plan)["loss"].item()

    worst_entry = 0.0
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.layers.1.self_attn.k_proj.weight", "model.layers.1.input_layernorm.weight",
             "model.layers.2.mlp.gate_proj.weight", "model.layers.2.post_attention_layernorm.weight",
             "model.layers.3.self_attn.v_proj.weight", "model.layers.3.self_attn.o_proj.weight",
             "model.layers.3.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"]
    for pname in names:
        p, g = params[pname], grads[pname]
        for flat in g.abs().flatten().topk(2).indices.tolist():
            idx = tuple(torch.unravel_index(torch.tensor(flat), p.shape))
            with torch.no_grad():
                orig = p[idx].item()
                p[idx] = orig + eps
                up = loss_at()
                p[idx] = orig - eps
                down = loss_at()
                p[idx] = orig
            fd = (up - down) / (2 * eps)
            ad = g[idx].item()
            rel = abs(fd - ad) / max(abs(fd), abs(ad))
            worst_entry = max(worst_entry, rel)
            assert rel < 1e-6, f"{name}: {pname}{list(idx)} fd {fd} autograd {ad} rel {rel}"
    # One random direction through every parameter at once.
    gen = torch.Generator().manual_seed(SEED + 1)
    dirs = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
    scale = 1.0 / math.sqrt(sum((d * d).sum().item() for d in dirs.values()))  # a unit direction
    dirs = {n: d * scale for n, d in dirs.items()}
    ad = sum((grads[n] * dirs[n]).sum() for n in params).item()
    with torch.no_grad():
        base = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(base[n] + eps * dirs[n])
        up = loss_at()
        for n, p in params.items():
            p.copy_(base[n] - eps * dirs[n])
        down = loss_at()
        for n, p in params.items():
            p.copy_(base[n])
    fd = (up - down) / (2 * eps)
    rel_dir = abs(fd - ad) / max(abs(fd), abs(ad))
    assert rel_dir < 1e-6, f"{name}: directional derivative fd {fd} autograd {ad} rel {rel_dir}"
    print(f"  [{name}] finite differences (central, eps {eps:g}): worst rel err {worst_entry:.2e} over "
          f"{2 * len(names)} entries (top-|grad| of {len(names)} parameters), {rel_dir:.2e} along a random "
          f"unit direction through all parameters")
    return max(worst_entry, rel_dir)


def check_loop_identities(model, inputs) -> None:
    allh = tuple(range(SHAPE.heads))
    with torch.no_grad():
        for l in range(SHAPE.layers):
            plan = Plan.with_layers(SHAPE.layers, {l: LayerPlan(k=1, heads=allh, fade=0.0)})
            got = model(inputs, None, plan)["logits"]
            twice = naive_forward(model, inputs, Plan.vanilla(SHAPE.layers), attn_repeats={l: 2})
            d = max_rel(got, twice)
            assert d < 1e-13, f"layer {l}: loop over all heads (k=1) vs attention twice: rel {d}"
            faded = model(inputs, None, Plan.with_layers(SHAPE.layers, {l: LayerPlan(k=1, heads=allh, fade=0.5)}))
            assert max_rel(faded["logits"], got) < 1e-13, "fade with S = all heads must equal the hard loop"
        # A head-subset pass equals the all-heads pass with zero gains outside the subset (the authors' release).
        layer = model.model.layers[1]
        cos, sin = rm.rope_cos_sin(T, SHAPE.head_dim, SHAPE.rope_base, torch.float64)
        H = model.model.embed_tokens(inputs)
        sub, _ = layer.attention_pass(H, [0, 2], [1.0, 1.0], cos, sin)
        zeroed, _ = layer.attention_pass(H, list(allh), [1.0, 0.0, 1.0, 0.0], cos, sin)
        assert max_rel(sub - H, zeroed - H) < 1e-13
    print("  loop with S = all heads, k = 1 == attention sublayer applied twice (every layer, fade 0 and 0.5); "
          "head subset == all heads with zero gains")


def check_against_hf(model, inputs) -> str:
    """Vanilla logits vs transformers' LlamaForCausalLM with the same weights. Returns a one-line result."""
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as e:  # noqa: BLE001
        msg = f"transformers not importable ({type(e).__name__}: {e}); HF comparison skipped"
        print("  NOTE: " + msg)
        return msg
    cfg = LlamaConfig(vocab_size=SHAPE.vocab, hidden_size=SHAPE.width, intermediate_size=SHAPE.d_ff,
                      num_hidden_layers=SHAPE.layers, num_attention_heads=SHAPE.heads,
                      num_key_value_heads=SHAPE.heads, head_dim=SHAPE.head_dim, hidden_act="silu",
                      max_position_embeddings=SHAPE.max_seq, rms_norm_eps=SHAPE.norm_eps,
                      rope_theta=SHAPE.rope_base,
                      rope_parameters={"rope_type": "default", "rope_theta": SHAPE.rope_base},
                      attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                      attn_implementation="eager")
    hf = LlamaForCausalLM(cfg).double().eval()
    missing, unexpected = hf.load_state_dict({n: p.detach() for n, p in model.named_parameters()}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    theta = (getattr(hf.config, "rope_parameters", None) or {}).get("rope_theta", getattr(hf.config, "rope_theta", None))
    assert theta == SHAPE.rope_base, theta
    with torch.no_grad():
        ours = model(inputs)["logits"]
        raw = hf(input_ids=inputs).logits
        d_raw = (raw - ours).abs().max().item()
        assert d_raw < 1e-5, f"HF logits differ by {d_raw}"
        # HF's eager path computes RMSNorm, RoPE's cos/sin and the softmax in float32 even in a float64 model.
        # With RMSNorm and cos/sin replaced by float64 versions and HF's SDPA path (float64 on the CPU),
        # everything else (projections, head layout, RoPE application, attention, SwiGLU, residuals) must
        # agree to rounding.
        hf.config._attn_implementation = "sdpa"
        for m in hf.modules():
            if type(m).__name__ == "LlamaRMSNorm":
                m.forward = (lambda x, m=m: rm.rms_norm(x, m.weight, m.variance_epsilon))
        cos, sin = rm.rope_cos_sin(T, SHAPE.head_dim, SHAPE.rope_base, torch.float64)
        hf.model.rotary_emb.forward = lambda x, position_ids: (cos[position_ids], sin[position_ids])
        d_f64 = (hf(input_ids=inputs).logits - ours).abs().max().item()
        assert d_f64 < 1e-13, f"HF (float64 norm and RoPE) logits differ by {d_f64}"
    msg = (f"transformers {transformers.__version__} LlamaForCausalLM (eager, float64): max |logit diff| "
           f"{d_raw:.2e} as is (HF does RMSNorm, RoPE cos/sin and softmax in float32), {d_f64:.2e} with "
           f"float64 RMSNorm and cos/sin and HF's sdpa attention")
    print("  " + msg)
    return msg


def check_optimizer(weights, inputs, targets) -> None:
    """torch.optim.AdamW + clip_grad_norm_ (the oracle) against the update rule the C++ side implements,
    written out: g *= min(1, max_norm / (||g|| + 1e-6)); p -= lr*wd*p (2-D weights only); Adam with bias
    correction, eps added to sqrt(v_hat)."""
    plan = PLANS["loops"]
    oracle = model_f64(weights)
    hist = rm.train(oracle, inputs, targets, plan, TRAIN)
    manual = model_f64(weights)
    params = list(manual.parameters())
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2 = TRAIN.betas
    for t in range(1, TRAIN.steps + 1):
        lr = rm.learning_rate(t, TRAIN)
        for p in params:
            p.grad = None
        loss = manual(inputs, targets, plan)["loss"]
        assert abs(loss.item() - hist["losses"][t - 1]) <= 1e-12 * abs(loss.item())
        loss.backward()
        with torch.no_grad():
            norm = torch.sqrt(sum((p.grad * p.grad).sum() for p in params))
            clip = min(1.0, TRAIN.grad_clip / (norm.item() + 1e-6))
            for i, p in enumerate(params):
                g = p.grad * clip
                if p.dim() >= 2:
                    p.mul_(1.0 - lr * TRAIN.weight_decay)
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                m_hat = m[i] / (1 - b1 ** t)
                v_hat = v[i] / (1 - b2 ** t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + TRAIN.eps))
    d = max(max_rel(a.detach(), b.detach()) for a, b in zip(manual.parameters(), oracle.parameters()))
    assert d < 1e-12, f"AdamW written out vs torch.optim.AdamW: rel diff {d}"
    print(f"  torch.optim.AdamW + clip_grad_norm_ == the update rule written out (10 steps, weights rel {d:.1e})")


# ----------------------------------------------------------------------------------------------------------
# Writing


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors.torch.save, with the header's __metadata__ keys sorted: the library writes them in hash
    order, which changes from run to run. The result is checked to load back identically."""
    import safetensors.torch as st

    raw = st.save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n], object_pairs_hook=OrderedDict)
    header["__metadata__"] = OrderedDict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    out = len(text).to_bytes(8, "little") + text + raw[8 + n:]
    back = st.load(out)
    assert set(back) == set(tensors)
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in tensors.items())
    return out


def build_fixture(name: str, plan: Plan, weights, inputs, targets, hf_note: str) -> tuple[bytes, dict]:
    model = model_f64(weights)
    out = model(inputs, targets, plan)
    out["loss"].backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    check_loss_and_naive(model, inputs, targets, plan, name)
    fd_worst = finite_difference_check(model, inputs, targets, plan, name, grads)

    trained = model_f64(weights)
    hist = rm.train(trained, inputs, targets, plan, TRAIN)
    assert abs(hist["losses"][0] - out["loss"].item()) < 1e-12
    with torch.no_grad():
        after = trained(inputs, targets, plan)  # after the last update

    tensors: dict[str, torch.Tensor] = {}
    for n, w in weights.items():
        tensors[n] = w.to(torch.float32).contiguous()
    tensors["batch.inputs"] = inputs.to(torch.int32).contiguous()
    tensors["batch.targets"] = targets.to(torch.int32).contiguous()
    tensors["logits"] = out["logits"].detach().contiguous()
    tensors["loss"] = out["loss"].detach().reshape(1)
    for n, g in grads.items():
        tensors["grad." + n] = g.contiguous()
    tensors["entropy"] = out["entropy"].contiguous()
    tensors["train.losses"] = torch.tensor(hist["losses"], dtype=torch.float64)
    tensors["train.lrs"] = torch.tensor(hist["lrs"], dtype=torch.float64)
    tensors["train.grad_norms"] = torch.tensor(hist["grad_norms"], dtype=torch.float64)
    tensors["train.final_loss"] = after["loss"].reshape(1)
    tensors["train.final_entropy"] = after["entropy"].contiguous()

    metadata = {
        "config": SHAPE.to_json(),
        "plan": plan.to_json(),
        "generator": "tools/make_fixtures.py",
        "torch_version": torch.__version__,
        "B": str(B),
        "T": str(T),
        "seed": str(SEED),
        "init": json.dumps({"matrices": "N(0, 0.02)", "rmsnorm": "1 + 0.1 * N(0, 1)", "dtype": "float32",
                            "compute_dtype": "float64"}),
        "ignore_index": str(rm.IGNORE_INDEX),
        "optimizer": TRAIN.to_json(),
        "checks": json.dumps({"finite_difference_worst_rel": float(f"{fd_worst:.3e}"), "hf": hf_note}),
    }
    info = {"loss": out["loss"].item(), "losses": hist["losses"], "lrs": hist["lrs"],
            "grad_norms": hist["grad_norms"], "fd": fd_worst}
    return canonical_safetensors(tensors, metadata), info


def main() -> None:
    print(f"torch {torch.__version__}; tiny shape {SHAPE.to_json()}; B={B} T={T} seed={SEED}")
    weights, inputs, targets = make_initial_state()
    print("self-checks:")
    base = model_f64(weights)
    check_loop_identities(base, inputs)
    hf_note = check_against_hf(base, inputs)
    check_optimizer(weights, inputs, targets)

    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for name, plan in PLANS.items():
        data, info = build_fixture(name, plan, weights, inputs, targets, hf_note)
        path = os.path.join(OUT_DIR, f"tiny_{name}.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        total += len(data)
        clipped = sum(n > TRAIN.grad_clip for n in info["grad_norms"])
        print(f"tiny_{name}.safetensors: {len(data)} bytes sha256 {hashlib.sha256(data).hexdigest()[:16]}  "
              f"loss {info['loss']:.12f}  train {info['losses'][0]:.6f} -> {info['losses'][-1]:.6f}  "
              f"(clipped {clipped}/{TRAIN.steps} steps, grad norm {info['grad_norms'][0]:.3f} -> "
              f"{info['grad_norms'][-1]:.3f})")
    assert total < 2 * 1024 * 1024, f"fixtures total {total} bytes, over 2 MB"
    lrs = [rm.learning_rate(t, TRAIN) for t in range(1, TRAIN.steps + 1)]
    print(f"total {total} bytes; lrs {', '.join(f'{x:.6g}' for x in lrs)}")

if __name__ == "__main__":
    main()
