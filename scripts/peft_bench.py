#!/usr/bin/env python3
"""PEFT + PyTorch side of `vlmtest-train bench`: the same LoRA training step on the same token ids.

SmolLM2-135M's architecture (LlamaForCausalLM, 30 layers, hidden 576, 9/3 heads, tied embeddings)
with seeded random weights, f32, CPU; LoRA r/alpha on the given modules (dropout 0); AdamW lr 1e-4;
gradient clipping at 1.0; loss on the second half of each row. Prints one JSON line.

Usage: python3 scripts/peft_bench.py --threads 1 --rank 16 --batch-size 4 --seq-len 128 --steps 10
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
    a = ap.parse_args()
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


if __name__ == "__main__":
    main()
