#!/usr/bin/env python3
"""Loads a vlmtest-trained adapter with PEFT and checks it gives vlmtest's logits.

DIR is written by `VLMTEST_PEFT_FIXTURE=DIR cargo test --test integration train_peft`:
DIR/base (config.json + model.safetensors, HF names), DIR/adapter (PEFT folder), DIR/expected.json.
Exits 1 when the logits differ by more than 1e-4.

Usage: python3 scripts/peft_roundtrip.py DIR
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    d = sys.argv[1]
    cfg = LlamaConfig.from_pretrained(f"{d}/base")
    model = LlamaForCausalLM(cfg).float().eval()
    missing, unexpected = model.load_state_dict(load_file(f"{d}/base/model.safetensors"), strict=False)
    # lm_head is tied to the embedding, so it is the only key the file may leave out.
    assert [k for k in missing if k != "lm_head.weight"] == [] and unexpected == [], (missing, unexpected)
    model.tie_weights()
    exp = json.load(open(f"{d}/expected.json"))
    ids = torch.tensor([exp["input_ids"]])
    with torch.no_grad():
        base = model(ids).logits[0]
        peft_model = PeftModel.from_pretrained(model, f"{d}/adapter").eval()
        adapted = peft_model(ids).logits[0]
    d_base = (base - torch.tensor(exp["base_logits"])).abs().max().item()
    d_adapted = (adapted - torch.tensor(exp["logits"])).abs().max().item()
    effect = (adapted - base).abs().max().item()
    print(json.dumps({"base_max_abs_diff": d_base, "adapted_max_abs_diff": d_adapted,
                      "adapter_effect": effect, "peft_version": __import__("peft").__version__,
                      "transformers_version": __import__("transformers").__version__}))
    sys.exit(0 if d_base < 1e-4 and d_adapted < 1e-4 and effect > 1e-2 else 1)


if __name__ == "__main__":
    main()
