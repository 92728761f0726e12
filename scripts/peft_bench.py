#!/usr/bin/env python3
"""PEFT + PyTorch side of `vlmtest-train bench`: the same LoRA training step on the same token ids.

SmolLM2-135M's architecture (LlamaForCausalLM, 30 layers, hidden 576, 9/3 heads, tied embeddings)
with seeded random weights, f32, CPU; LoRA r/alpha on the given modules (dropout 0); AdamW lr 1e-4;
gradient clipping at 1.0; loss on the second half of each row. Prints one JSON line.

Usage: python3 scripts/peft_bench.py --threads 1 --rank 16 --batch-size 4 --seq-len 128 --steps 10

With `--qwen DIR` it times the same step on a Qwen3-VL checkpoint folder instead (e.g. the 2B-shaped
one `vlmtest-fixture metadata2b` + `scripts/qwen3vl_parity.py --bench2b` write), on `--device`
(default cuda) in `--dtype` (default bf16), text rows only, token ids taken modulo the first special
token id exactly as `vlmtest-train bench --base DIR` does:

    python3 scripts/peft_bench.py --qwen q2b --rank 16 --batch-size 4 --seq-len 512 --steps 10
"""
import argparse
import json
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def bench_token(r, j, seq_len):
    """Same formula as `bench_token` in src/train/bench.rs."""
    k = r * seq_len + j
    return ((1103515245 * k + 12345) % (2**64)) % 2147483648 % 40000 + 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--target-modules", default="q_proj,v_proj")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--qwen", help="a Qwen3-VL checkpoint folder (times it instead of SmolLM2's shape)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    a = ap.parse_args()
    if a.qwen:
        return qwen_bench(a)
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    cfg = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).float()
    lora = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                      target_modules=a.target_modules.split(","), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    b, t = a.batch_size, a.seq_len
    ids = torch.tensor([[bench_token(r, j, t) for j in range(t)] for r in range(b)], dtype=torch.long)
    labels = ids.clone()
    labels[:, : t // 2] = -100
    losses, timed = [], 0.0
    for step in range(a.warmup + a.steps):
        start = time.perf_counter()
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if step >= a.warmup:
            timed += time.perf_counter() - start
    sps = timed / a.steps
    print(json.dumps({
        "implementation": f"PEFT {__import__('peft').__version__} + PyTorch {torch.__version__}",
        "rank": a.rank, "target_modules": a.target_modules.split(","), "batch_size": b, "seq_len": t,
        "steps": a.steps, "threads": torch.get_num_threads(), "seconds_per_step": sps,
        "tokens_per_second": b * t / sps, "first_loss": losses[0], "last_loss": losses[-1],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def qwen_bench(a):
    """The Qwen3-VL variant: PEFT LoRA on Qwen3VLForConditionalGeneration's text layers."""
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    dev = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    tok = AutoTokenizer.from_pretrained(a.qwen)
    limit = tok.convert_tokens_to_ids("<|endoftext|>")
    model = Qwen3VLForConditionalGeneration.from_pretrained(a.qwen, dtype=dtype).to(dev)
    limit = min(limit, model.config.text_config.vocab_size)
    lora = LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                      target_modules=a.target_modules.split(","), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    b, t = a.batch_size, a.seq_len
    ids = torch.tensor([[bench_token(r, j, t) % limit for j in range(t)] for r in range(b)],
                       dtype=torch.long, device=dev)
    labels = ids.clone()
    labels[:, : t // 2] = -100
    kw = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
          # transformers 5.x takes each token's modality from the processor: all text here.
          "mm_token_type_ids": torch.zeros_like(ids)}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    losses, timed = [], 0.0
    for step in range(a.warmup + a.steps):
        sync()
        start = time.perf_counter()
        out = model(**kw)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        sync()
        if step >= a.warmup:
            timed += time.perf_counter() - start
    sps = timed / a.steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    print(json.dumps({
        "implementation": f"PEFT {__import__('peft').__version__} + PyTorch {torch.__version__}",
        "base": a.qwen, "device": a.device, "dtype": a.dtype,
        "rank": a.rank, "target_modules": a.target_modules.split(","), "batch_size": b, "seq_len": t,
        "steps": a.steps, "seconds_per_step": sps, "tokens_per_second": b * (t - 1) / sps,
        "first_loss": losses[0], "last_loss": losses[-1],
        "trainable_params": sum(p.numel() for p in params), "peak_gpu_mib": peak,
    }))


if __name__ == "__main__":
    main()
