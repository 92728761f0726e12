#!/usr/bin/env python3
"""Reference values for vlmtest's Qwen3-VL implementation, computed with transformers and peft.

Loads a checkpoint folder written by `vlmtest-fixture checkpoint` (and an adapter written by
`vlmtest-fixture adapter`), runs the reference image processor, chat template, forward pass and
greedy `generate` on the parity cases below, and writes:

  OUT/reference.safetensors  pixel values per image, logits per case (base and with the adapter)
  OUT/reference.json         versions, checkpoint hash, grids, token ids, greedy tokens, smart_resize

vlmtest's tests (tests/integration/qwen_parity.rs) compare against these files.

Usage: python3 scripts/qwen3vl_parity.py --checkpoint DIR --adapter DIR --images DIR --out DIR

Benchmark mode (GPU): `--bench2b DIR` fills DIR (config/tokenizer written by
`vlmtest-fixture metadata2b DIR`) with seeded bf16 weights of the Qwen3-VL-2B shape and times
transformers' `generate` on the text prompt `vlmtest-fixture bench` uses, one JSON line per batch.
"""
import argparse
import hashlib
import json
import os
import sys

import torch
from PIL import Image
from safetensors.torch import save_file

# (case id, list of messages); an image part names a file in --images.
CASES = [
    ("text_only", [{"role": "user", "content": [{"type": "text", "text": "the weather is"}]}]),
    ("one_image", [{"role": "user", "content": [
        {"type": "image", "file": "img_64x96.png"}, {"type": "text", "text": "What is in the image?"}]}]),
    ("upscaled", [{"role": "user", "content": [
        {"type": "image", "file": "img_50x77.png"}, {"type": "text", "text": "Describe it."}]}]),
    ("two_images", [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare "}, {"type": "image", "file": "img_120x90.png"},
            {"type": "text", "text": " with "}, {"type": "image", "file": "img_33x33.png"}]}]),
    ("downscaled", [{"role": "user", "content": [
        {"type": "image", "file": "img_300x200.png"}, {"type": "text", "text": "Is there a cat?"}]}]),
]
IMAGES = ["img_64x96.png", "img_50x77.png", "img_120x90.png", "img_33x33.png", "img_300x200.png"]
SMART_RESIZE_INPUTS = [(64, 96), (48, 80), (10, 20), (1000, 2000), (77, 50), (90, 120), (33, 33),
                       (200, 300), (1080, 1920), (333, 1000), (17, 3000)]
MAX_NEW_TOKENS = 12


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--adapter")
    ap.add_argument("--images")
    ap.add_argument("--out")
    ap.add_argument("--bench2b", help="checkpoint folder to fill with seeded weights and time")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    if args.bench2b:
        return bench(args)

    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    tensors = {}
    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "checkpoint_sha256": sha256(os.path.join(args.checkpoint, "model.safetensors")),
        "images": {},
        "cases": {},
    }
    with open(os.path.join(args.checkpoint, "preprocessor_config.json")) as f:
        pcfg = json.load(f)
    factor = pcfg["patch_size"] * pcfg["merge_size"]
    meta["smart_resize"] = [
        [h, w, *smart_resize(h, w, factor=factor, min_pixels=pcfg["size"]["shortest_edge"],
                             max_pixels=pcfg["size"]["longest_edge"])]
        if max(h, w) / min(h, w) <= 200 else [h, w, -1, -1]
        for h, w in SMART_RESIZE_INPUTS
    ]

    # Image processor: the one AutoImageProcessor picks (fast, torchvision), plus the slow
    # (PIL) one where this transformers still ships it, to show how far the two differ.
    fast = AutoImageProcessor.from_pretrained(args.checkpoint)
    meta["processor"] = type(fast).__name__
    slow = None
    try:
        slow = AutoImageProcessor.from_pretrained(args.checkpoint, use_fast=False)
        if type(slow) is type(fast):
            slow = None
    except Exception as e:  # noqa: BLE001 - report, don't fail
        meta["slow_processor_error"] = repr(e)
    pixels = {}
    for name in IMAGES:
        img = Image.open(os.path.join(args.images, name)).convert("RGB")
        out = fast(images=[img], return_tensors="pt")
        pv, grid = out["pixel_values"].float(), out["image_grid_thw"]
        pixels[name] = (pv, grid)
        tensors[f"pixel_values.{name}"] = pv.contiguous()
        entry = {"grid_thw": grid[0].tolist(), "shape": list(pv.shape)}
        if slow is not None:
            sp = slow(images=[img], return_tensors="pt")["pixel_values"].float()
            entry["slow_vs_fast_max_abs"] = float((sp - pv).abs().max()) if sp.shape == pv.shape else None
            tensors[f"pixel_values_slow.{name}"] = sp.contiguous()
        meta["images"][name] = entry

    tok = AutoTokenizer.from_pretrained(args.checkpoint)
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        args.checkpoint, dtype=torch.float32, attn_implementation="eager").eval()
    merge = model.config.vision_config.spatial_merge_size
    with open(os.path.join(args.checkpoint, "generation_config.json")) as f:
        gen = json.load(f)

    def inputs_for(messages):
        chat = [{"role": m["role"], "content": [
            {"type": "image"} if c["type"] == "image" else c for c in m["content"]]} for m in messages]
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        files = [c["file"] for m in messages for c in m["content"] if c["type"] == "image"]
        # Expand each placeholder to the image's token count, as Qwen3VLProcessor does.
        parts = text.split("<|image_pad|>")
        assert len(parts) == len(files) + 1, (len(parts), files)
        expanded = parts[0]
        for f, rest in zip(files, parts[1:]):
            n = int(pixels[f][1].prod()) // (merge * merge)
            expanded += "<|image_pad|>" * n + rest
        ids = tok(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"]
        kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        # transformers 5.x takes the modality of each token from the processor (text 0, image 1).
        kw["mm_token_type_ids"] = (ids == model.config.image_token_id).long()
        if files:
            kw["pixel_values"] = torch.cat([pixels[f][0] for f in files])
            kw["image_grid_thw"] = torch.cat([pixels[f][1] for f in files])
        return text, kw

    def run(m, tag):
        for cid, messages in CASES:
            text, kw = inputs_for(messages)
            with torch.no_grad():
                logits = m(**kw).logits[0].float()
                seq = m.generate(**kw, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 eos_token_id=gen["eos_token_id"], pad_token_id=gen["pad_token_id"])
            new = seq[0, kw["input_ids"].shape[1]:].tolist()
            while new and new[-1] in gen["eos_token_id"]:
                new.pop()
            tensors[f"logits.{tag}.{cid}"] = logits.contiguous()
            entry = meta["cases"].setdefault(cid, {"text": text, "input_ids": kw["input_ids"][0].tolist()})
            entry[f"greedy.{tag}"] = new

    run(model, "base")
    if args.adapter:
        from peft import PeftModel
        import peft
        meta["peft"] = peft.__version__
        pm = PeftModel.from_pretrained(model, args.adapter).eval()
        run(pm, "adapter")

    save_file(tensors, os.path.join(args.out, "reference.safetensors"))
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps({k: v for k, v in meta.items() if k != "cases"}, indent=1))
    for cid, e in meta["cases"].items():
        print(cid, len(e["input_ids"]), e.get("greedy.base"), e.get("greedy.adapter"))
    return 0


def bench(args):
    import time
    from transformers import AutoConfig, Qwen3VLForConditionalGeneration

    cfg = AutoConfig.from_pretrained(args.bench2b)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16).eval()
    model.save_pretrained(args.bench2b)
    params = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n)
    print(json.dumps({"text_params": params, "text_weight_bytes": 2 * params}), flush=True)
    ids1 = [32 + (i * 7 % 90) for i in range(args.prompt_tokens)]
    for b in [int(x) for x in args.batches.split(",")]:
        ids = torch.tensor([ids1] * b, device="cuda")
        kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": torch.zeros_like(ids)}

        def timed(n):
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(**kw, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
            torch.cuda.synchronize()
            assert out.shape[1] == ids.shape[1] + n
            return time.perf_counter() - t

        timed(2)
        runs = [(timed(1), timed(1 + args.new_tokens)) for _ in range(3)]
        p = sorted(r[0] for r in runs)[1]
        t = sorted(r[1] for r in runs)[1]
        d = max(t - p, 1e-9)
        print(json.dumps({"impl": "transformers", "batch": b, "prompt_tokens": args.prompt_tokens,
                          "new_tokens": args.new_tokens, "prefill_s": p,
                          "prefill_tok_s": b * args.prompt_tokens / p,
                          "decode_step_ms": d * 1e3 / args.new_tokens,
                          "decode_tok_s": b * args.new_tokens / d}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
