#!/usr/bin/env python3
"""Writes tests/fixtures/hf_tiny: a randomly initialised Hugging Face LlamaForCausalLM of sgt's `tiny` preset shape
(4 layers, 4 heads of 8, d_ff 64, vocab 64), saved by transformers itself, and the logits transformers computes for
a fixed token sequence. The C++ test (tests/io/test_hugging_face.cpp) imports the directory into the preset and
compares its logits, so CI needs no Python. Nothing is downloaded.

    pip install torch transformers safetensors --extra-index-url https://download.pytorch.org/whl/cpu
    python3 tools/make_hf_fixture.py [OUT_DIR]      # default: tests/fixtures/hf_tiny

Layout of OUT_DIR:
    single/   config.json + model.safetensors                    (fp32)
    sharded/  config.json + model-0000X-of-0000N.safetensors + model.safetensors.index.json   (bf16, small shards)
    expected.safetensors   "input_ids" (1, 24) int32; "logits_fp32" (1, 24, 64) of single/, "logits_bf16" of
                           sharded/ computed in fp32 from the bf16 weights
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf_tiny")
    torch.manual_seed(20240610)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4, head_dim=8, max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0,
        hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config).eval()
    # Larger weights than the 0.02 init, so that logits are O(1) and every layer matters in the comparison.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
            else:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.save_pretrained(os.path.join(out, "single"), safe_serialization=True)
    ids = torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits32 = model(ids).logits.float()
    bf16 = LlamaForCausalLM(config).eval()
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    bf16.save_pretrained(os.path.join(out, "sharded"), safe_serialization=True, max_shard_size="40KB")
    # The bf16 weights in an fp32 model of its own (casting the bf16 model back would keep its bf16-rounded RoPE
    # frequencies, which are a buffer, not a weight).
    ref = LlamaForCausalLM(config).eval()
    ref.load_state_dict({k: v.float() for k, v in bf16.state_dict().items()})
    with torch.no_grad():
        logits16 = ref(ids).logits.float()
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits_fp32": logits32.contiguous(),
               "logits_bf16": logits16.contiguous()}, os.path.join(out, "expected.safetensors"))
    for root, _, files in os.walk(out):
        for f in sorted(files):
            print(os.path.join(root, f), os.path.getsize(os.path.join(root, f)))


if __name__ == "__main__":
    main()
