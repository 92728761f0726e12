#!/usr/bin/env python3
"""LoRA training speed on a Qwen3-VL-2B-shaped checkpoint, one GPU: `vlmtest-train bench` beside
PEFT + transformers (`peft_bench.py --qwen`) on the same seeded bf16 checkpoint, ids and settings.

Usage (on a CUDA 13 machine with torch + transformers + peft):
    python3 scripts/peft_train_gpu_bench.py --train-bin path/to/vlmtest-train \
        --fixture-bin path/to/vlmtest-fixture --out OUTDIR
where both binaries were built with `cargo build --release --features cuda`. Writes the checkpoint
(unless --ckpt already holds weights) and OUTDIR/train_bench.jsonl (one JSON line per run).
"""
import argparse
import glob
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def run(cmd, out):
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(res.stderr[-4000:])
    lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
    if res.returncode != 0 or not lines:
        print(json.dumps({"command": cmd, "returncode": res.returncode, "stdout": res.stdout[-2000:]}))
        return
    for l in lines:
        print(l, flush=True)
        out.write(l + "\n")
        out.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-bin", required=True)
    ap.add_argument("--fixture-bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt", default="/tmp/qwen3vl-2b-seeded")
    ap.add_argument("--rank", default="16")
    ap.add_argument("--batch-size", default="4")
    ap.add_argument("--seq-len", default="512")
    ap.add_argument("--steps", default="10")
    ap.add_argument("--warmup", default="3")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if not glob.glob(os.path.join(a.ckpt, "*.safetensors")):
        subprocess.run([a.fixture_bin, "metadata2b", a.ckpt], check=True)
        # Seeded bf16 weights, written by transformers (its generate timings come along).
        subprocess.run([sys.executable, os.path.join(HERE, "qwen3vl_parity.py"), "--bench2b", a.ckpt,
                        "--batches", "1"], check=True)
    common = ["--rank", a.rank, "--alpha", str(2 * int(a.rank)), "--target-modules", TARGETS,
              "--batch-size", a.batch_size, "--seq-len", a.seq_len, "--steps", a.steps,
              "--warmup", a.warmup]
    with open(os.path.join(a.out, "train_bench.jsonl"), "a") as out:
        run([a.train_bin, "bench", "--base", a.ckpt, "--device", "cuda", "--dtype", "bf16"] + common, out)
        run([sys.executable, os.path.join(HERE, "peft_bench.py"), "--qwen", a.ckpt, "--device", "cuda",
             "--dtype", "bf16"] + common, out)
        run([a.train_bin, "bench", "--base", a.ckpt, "--device", "cuda", "--dtype", "bf16",
             "--image", "448x448"] + common, out)
    subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv"])


if __name__ == "__main__":
    main()
