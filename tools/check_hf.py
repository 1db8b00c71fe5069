#!/usr/bin/env python3
"""Checks that a vanilla sgt checkpoint loads as Hugging Face's LlamaForCausalLM and gives our logits.

End to end, in a temporary directory:
  1. trains char_mini (vanilla: no loops) for --steps steps with the built `train`, writing a checkpoint;
  2. runs the built `export_logits` on B x T bytes of the text (from the validation part), which writes our
     float logits;
  3. loads the checkpoint's step directory with transformers.LlamaForCausalLM.from_pretrained (eager
     attention), in float32 and in float64, runs the same tokens and compares the logits: max |diff|, max |diff|
     relative to max |logit|, argmax agreement. A float64 reference (HF's float64 model with its float32
     RMSNorm and RoPE cos/sin replaced by float64 ones, and SDPA attention, whose softmax stays in float64)
     shows that the remaining gap is float32 rounding on both sides.
Exits 1 when the float32 max |diff| exceeds --tol (1e-3), when from_pretrained reports missing, unexpected or
mismatched weights, when the config it reads differs from the checkpoint's, or when transformers warns while
reading config.json or the weights. The C++ tests do not use this.

Loops do not transfer: LlamaForCausalLM has no looped attention (the head-sparse loop steps of Eq. 6, the fade
gains, Block Loop's repeated blocks), so only a plan without loops has a Hugging Face counterpart; the weights
of a looped checkpoint still load, but HF then computes the vanilla network (export_logits --plan vanilla).
--looped shows it on a short SGT run.

    python3 tools/check_hf.py --build-dir build          # needs the train and export_logits targets built
Results: docs/HF_CHECK.md. Needs torch, safetensors and transformers (tools/requirements.txt).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/work/shared/data/tinyshakespeare.txt")


def fallback_text() -> str:
    """About 60 KB of plain English (byte-level; the same every time) for when no data file is present."""
    lines = [
        "The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire.",
        "A journey of a thousand miles begins with a single step, and every step is counted.",
        "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
        "All that glitters is not gold; often have you heard that told.",
        "Now is the winter of our discontent made glorious summer by this sun of York.",
        "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him.",
        "The sea was calm that night, and the ship sailed slowly toward the northern lights.",
        "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    ]
    out, i = [], 0
    while sum(len(s) + 1 for s in out) < 60_000:
        out.append(lines[(i * 5 + i // len(lines)) % len(lines)])
        i += 1
    return "\n".join(out) + "\n"


def run(cmd: list[str], env: dict[str, str]) -> str:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    p = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        sys.exit(f"check_hf: {Path(cmd[0]).name} exited with status {p.returncode}")
    return p.stdout


class captured_logs:
    """Collects Python warnings and transformers' log records (warning and above) inside a with-block."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setLevel(logging.WARNING)
        self.logger = hf_logging.get_logger("transformers")
        self.logger.addHandler(self.handler)
        self.warn_ctx = warnings.catch_warnings(record=True)
        self.warned = self.warn_ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self.warn_ctx.__exit__(*exc)
        self.logger.removeHandler(self.handler)
        self.messages = [line for line in self.stream.getvalue().splitlines() if line.strip()]
        self.messages += [f"{w.category.__name__}: {w.message}" for w in self.warned]
        return False


def load_hf(step_dir: Path, dtype):
    """LlamaForCausalLM.from_pretrained(step_dir) in dtype, eager attention. Returns (model, info, messages);
    exits 1 when transformers refuses the checkpoint (it raises on shape mismatches)."""
    import transformers
    from transformers import LlamaForCausalLM

    # transformers >= 4.56 names the argument `dtype` and warns that `torch_dtype` is deprecated.
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kw = {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    try:
        with captured_logs() as logs:
            model, info = LlamaForCausalLM.from_pretrained(step_dir, attn_implementation="eager",
                                                           output_loading_info=True, **kw)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"FAIL: LlamaForCausalLM.from_pretrained({step_dir}) refused the checkpoint: {e}")
        sys.exit(1)
    return model.eval(), info, logs.messages


def compare(name: str, ours, theirs, ref_max: float | None = None) -> dict:
    """Max |diff|, max |diff| / max |logit| and argmax agreement of two (B, T, V) logit tensors."""
    import torch

    d = (ours.double() - theirs.double()).abs()
    scale = ref_max if ref_max is not None else theirs.double().abs().max().item()
    agree = (ours.argmax(-1) == theirs.argmax(-1)).double().mean().item()
    r = {"max_abs": d.max().item(), "mean_abs": d.mean().item(), "max_rel": d.max().item() / scale,
         "argmax_agree": agree}
    print(f"  {name:<44} max|diff| {r['max_abs']:.3e}  mean|diff| {r['mean_abs']:.3e}  "
          f"max|diff|/max|logit| {r['max_rel']:.3e}  argmax agree {100 * agree:.2f}%")
    return r


def float64_reference(model64, inputs):
    """HF's float64 model with float64 RMSNorm and RoPE cos/sin and SDPA attention (float64 softmax)."""
    import torch

    HD = model64.config.head_dim
    theta = (getattr(model64.config, "rope_parameters", None) or {}).get(
        "rope_theta", getattr(model64.config, "rope_theta", None))
    for m in model64.modules():
        if type(m).__name__ == "LlamaRMSNorm":
            m.forward = (lambda x, m=m: m.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) +
                                                                    m.variance_epsilon)))
    inv_freq = 1.0 / (theta ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD))

    def rotary(x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    model64.model.rotary_emb.forward = rotary
    model64.config._attn_implementation = "sdpa"
    with torch.no_grad():
        return model64(input_ids=inputs).logits


def check_config(hf_config, sgt_config: dict) -> list[str]:
    """Differences between the config transformers read and the checkpoint's own (model.safetensors metadata)."""
    C = sgt_config["heads"] * sgt_config["head_dim"]
    theta = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta", getattr(hf_config, "rope_theta", None))
    rope_type = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_type", "default")
    want = {"hidden_size": C, "intermediate_size": sgt_config["d_ff"], "num_hidden_layers": sgt_config["layers"],
            "num_attention_heads": sgt_config["heads"], "num_key_value_heads": sgt_config["heads"],
            "head_dim": sgt_config["head_dim"], "vocab_size": sgt_config["vocab"],
            "max_position_embeddings": sgt_config["max_seq"], "rms_norm_eps": sgt_config["norm_eps"],
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False}
    bad = [f"{k}: HF read {getattr(hf_config, k, None)!r}, the checkpoint has {v!r}"
           for k, v in want.items() if getattr(hf_config, k, None) != v]
    if theta != sgt_config["rope_base"]:
        bad.append(f"rope theta: HF read {theta!r}, the checkpoint has {sgt_config['rope_base']!r}")
    if rope_type != "default":
        bad.append(f"rope_type: HF read {rope_type!r}, expected 'default'")
    return bad


def looped_demo(a, train, export, data: Path, offset: int, work: Path, env) -> list[str]:
    """An SGT checkpoint whose plan loops: its weights load in HF, which computes the vanilla network, so HF
    matches export_logits --plan vanilla and not the looped plan. Returns failures (only of the vanilla plan)."""
    import torch
    from safetensors import safe_open

    ckpt = work / "ckpt_sgt"
    print("\nlooped checkpoint (SGT, growth from step 10 every 10 steps):")
    run([train, "--preset", "char_mini", "--variant", "sgt", "--t-start", 10, "--dt", 10, "--steps", 40,
         "--warmup", 5, "--data", data, "--checkpoint-dir", ckpt, "--eval-interval", 40, "--threads", a.threads,
         "--quiet"], env)
    step_dir = ckpt / (ckpt / "latest").read_text().strip()
    ours = {}
    for plan in ("checkpoint", "vanilla"):
        out = work / f"logits_sgt_{plan}.safetensors"
        print("  " + run([export, "--preset", "char_mini", "--checkpoint", ckpt, "--tokens", data, "--offset", offset,
                          "--batch", a.batch, "--seq", a.seq, "--plan", plan, "--out", out, "--threads", a.threads],
                         env).strip().replace("\n", "\n  "))
        with safe_open(out, "pt") as f:
            ours[plan] = (f.get_tensor("logits"), f.get_tensor("inputs").long(), f.metadata())
    print(f"  saved plan: {ours['checkpoint'][2]['plan']}")
    model, info, _ = load_hf(step_dir, torch.float32)
    with torch.no_grad():
        hf = model(input_ids=ours["vanilla"][1]).logits
    looped = compare("ours, saved plan (loops) vs HF float32", ours["checkpoint"][0], hf)
    vanilla = compare("ours, --plan vanilla vs HF float32", ours["vanilla"][0], hf)
    bad = [f"looped checkpoint: {k}: {sorted(v)}" for k, v in info.items() if v]
    if vanilla["max_abs"] > a.tol:
        bad.append(f"looped checkpoint, vanilla plan: max |logit diff| {vanilla['max_abs']:.3e} exceeds {a.tol:g}")
    if looped["max_abs"] <= a.tol:
        print("  note: the loops changed the logits by less than the tolerance")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", type=Path, default=REPO / "build",
                    help="CMake build directory holding examples/train and examples/export_logits (default: build/)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="a text file; when absent, the script writes a small English text")
    ap.add_argument("--steps", type=int, default=30, help="training steps of the checkpoint")
    ap.add_argument("--batch", type=int, default=4, help="sequences compared (B)")
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence (T), at most 128 for char_mini")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest float32 max |logit diff| accepted")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of train, export_logits and torch")
    ap.add_argument("--looped", action="store_true",
                    help="also train a short SGT run (loops active) and show that HF matches only its vanilla plan")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    a = ap.parse_args()

    import torch
    import transformers
    from safetensors import safe_open

    torch.set_num_threads(a.threads)
    transformers.utils.logging.disable_progress_bar()
    examples = a.build_dir / "examples"
    train, export = examples / "train", examples / "export_logits"
    for exe in (train, export):
        if not exe.exists():
            sys.exit(f"check_hf: {exe} not found; build it: cmake --build {a.build_dir} --target train export_logits")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))

    tmp = None
    if a.keep:
        work = a.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="sgt-hf-")
        work = Path(tmp.name)
    data = a.data
    if not data.exists():
        data = work / "text.txt"
        data.write_text(fallback_text())
        print(f"check_hf: {a.data} not found; using a generated text ({data.stat().st_size} bytes)")
    ckpt = work / "ckpt"
    out = work / "logits.safetensors"

    print(f"python {sys.version.split()[0]} | torch {torch.__version__} | transformers {transformers.__version__}")
    # (a) a vanilla checkpoint
    warmup = min(25, max(1, a.steps // 5))
    run([train, "--preset", "char_mini", "--variant", "vanilla", "--steps", a.steps, "--warmup", warmup,
         "--data", data, "--checkpoint-dir", ckpt, "--eval-interval", a.steps, "--threads", a.threads, "--quiet"],
        env)
    step_dir = ckpt / (ckpt / "latest").read_text().strip()
    # (b) our logits on B x T bytes from the start of the validation part (the last 10% of the file)
    offset = int(data.stat().st_size * 0.9)
    if offset + a.batch * a.seq > data.stat().st_size:
        offset = 0
    print(run([export, "--preset", "char_mini", "--checkpoint", ckpt, "--tokens", data, "--offset", offset,
               "--batch", a.batch, "--seq", a.seq, "--out", out, "--threads", a.threads], env).strip())
    with safe_open(out, "pt") as f:
        meta = f.metadata()
        inputs = f.get_tensor("inputs").long()  # (B, T)
        ours = f.get_tensor("logits")  # (B, T, V) float32
    if meta.get("loops") != "false":
        sys.exit("check_hf: the exported plan loops; LlamaForCausalLM has no looped attention (see the docstring)")
    with safe_open(step_dir / "model.safetensors", "pt") as f:
        sgt_config = json.loads(f.metadata()["config"])

    # (c) Hugging Face
    failures = []
    print(f"\nconfig.json of {step_dir}:")
    with captured_logs() as logs:
        cfg = transformers.AutoConfig.from_pretrained(step_dir)
    print(f"  AutoConfig -> {type(cfg).__name__}, rope_parameters {getattr(cfg, 'rope_parameters', None)}, "
          f"dtype {getattr(cfg, 'dtype', None)}")
    for m in logs.messages:
        print(f"  config warning: {m}")
        failures.append(f"AutoConfig warned: {m}")
    bad = check_config(cfg, sgt_config)
    for b in bad:
        print(f"  config MISMATCH: {b}")
    failures += bad

    results = {}
    logits = {}
    for dtype in (torch.float32, torch.float64):
        model, info, messages = load_hf(step_dir, dtype)
        name = str(dtype).replace("torch.", "")
        print(f"\nLlamaForCausalLM.from_pretrained({step_dir.name}, dtype={name}, attn_implementation='eager'):")
        print("  loading info: " + ", ".join(f"{k} {len(v)}" for k, v in info.items()))
        for m in messages:
            print(f"  load warning: {m}")
            failures.append(f"from_pretrained ({name}) warned: {m}")
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
            if info.get(k):
                failures.append(f"{name}: {k}: {sorted(info[k])}")
        with torch.no_grad():
            logits[name] = model(input_ids=inputs).logits
            if dtype == torch.float32:
                t = inputs[:, 1:]
                loss = torch.nn.functional.cross_entropy(logits[name][:, :-1].reshape(-1, ours.shape[-1]),
                                                         t.reshape(-1)).item()
                print(f"  loss on the same tokens: HF {loss:.6f}, ours {float(meta['loss']):.6f}")
            else:
                logits["reference64"] = float64_reference(model, inputs)

    ref = logits["reference64"]
    ref_max = ref.abs().max().item()
    print(f"\nlogits (B, T, V) = {tuple(ours.shape)}, max |logit| {ref_max:.3f}:")
    results["ours_vs_hf32"] = compare("ours (float32) vs HF float32", ours, logits["float32"])
    results["ours_vs_hf64"] = compare("ours (float32) vs HF float64 (as loaded)", ours, logits["float64"], ref_max)
    results["ours_vs_ref64"] = compare("ours (float32) vs float64 reference", ours, ref, ref_max)
    results["hf32_vs_ref64"] = compare("HF float32 vs float64 reference", logits["float32"], ref, ref_max)
    results["hf64_vs_ref64"] = compare("HF float64 (as loaded) vs float64 reference", logits["float64"], ref, ref_max)

    if results["ours_vs_hf32"]["max_abs"] > a.tol:
        failures.append(f"float32 max |logit diff| {results['ours_vs_hf32']['max_abs']:.3e} exceeds {a.tol:g}")
    if a.looped:
        failures += looped_demo(a, train, export, data, offset, work, env)
    print()
    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        return 1
    print(f"OK: the vanilla checkpoint loads as LlamaForCausalLM; float32 max |logit diff| "
          f"{results['ours_vs_hf32']['max_abs']:.3e} <= {a.tol:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
