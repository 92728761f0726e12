#!/usr/bin/env python3
"""Loads a vlmtest-trained Qwen3-VL adapter with PEFT and checks it gives vlmtest's logits.

DIR is written by `VLMTEST_PEFT_QWEN_FIXTURE=DIR cargo test --test integration train_qwen`:
DIR/tiny (the seeded Qwen3-VL checkpoint), DIR/adapter (the PEFT folder `vlmtest-train` saved),
DIR/expected.json (prompt ids with an image, image_grid_thw) and DIR/expected.safetensors
(pixel_values and vlmtest's logits without and with the adapter). Runs on the CPU in f32 with eager
attention; exits 1 when a logit differs by more than 1e-3 or the adapter has no effect.

Usage: python3 scripts/peft_qwen_roundtrip.py DIR
"""
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import Qwen3VLForConditionalGeneration


def main():
    d = sys.argv[1]
    exp = json.load(open(f"{d}/expected.json"))
    t = load_file(f"{d}/expected.safetensors")
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        f"{d}/tiny", dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.tensor([exp["input_ids"]])
    kw = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == model.config.image_token_id).long(),
        "pixel_values": t["pixel_values"],
        "image_grid_thw": torch.tensor(exp["image_grid_thw"]),
    }
    with torch.no_grad():
        base = model(**kw).logits[0].float()
        peft_model = PeftModel.from_pretrained(model, f"{d}/adapter").eval()
        adapted = peft_model(**kw).logits[0].float()
    d_base = (base - t["logits_base"]).abs().max().item()
    d_adapted = (adapted - t["logits_adapter"]).abs().max().item()
    effect = (adapted - base).abs().max().item()
    print(json.dumps({"base_max_abs_diff": d_base, "adapted_max_abs_diff": d_adapted,
                      "adapter_effect": effect, "peft_version": __import__("peft").__version__,
                      "transformers_version": __import__("transformers").__version__}))
    sys.exit(0 if d_base < 1e-3 and d_adapted < 1e-3 and effect > 1e-2 else 1)


if __name__ == "__main__":
    main()
