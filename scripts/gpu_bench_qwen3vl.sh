#!/usr/bin/env bash
# The Qwen3-VL-2B-shaped GPU benchmark of issue 3: vlmtest (candle, bf16) beside transformers'
# `generate` on the same seeded checkpoint, batches and prompt, in one run.
#
# Usage (on a CUDA 13 machine with torch + transformers):
#   scripts/gpu_bench_qwen3vl.sh path/to/vlmtest-fixture OUTDIR
# where vlmtest-fixture was built with `cargo build --release --features cuda --bin vlmtest-fixture`
# (README: "Building the cuda feature"). Writes OUTDIR/transformers.jsonl and OUTDIR/vlmtest.jsonl.
set -euo pipefail
BIN=$1
OUT=$2
CKPT=${CKPT:-/tmp/qwen3vl-2b-seeded}
BATCHES=${BATCHES:-1,8,32}
mkdir -p "$OUT" "$CKPT"
export PYTHONUNBUFFERED=1
"$BIN" metadata2b "$CKPT"
# Seeded bf16 weights (torch.manual_seed(0)), saved as safetensors, then transformers' timings.
python3 "$(dirname "$0")/qwen3vl_parity.py" --bench2b "$CKPT" --batches "$BATCHES" | tee "$OUT/transformers.jsonl"
# vlmtest on the checkpoint transformers just wrote, plus the weight-matmul floor per step.
"$BIN" bench "$CKPT" --batches "$BATCHES" --breakdown --image 640x480 | tee "$OUT/vlmtest.jsonl"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.csv"
