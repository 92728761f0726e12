#!/usr/bin/env bash
# LoRA training step on the Qwen3-VL-2B-shaped seeded checkpoint (issue 6): vlmtest-train beside
# PEFT + transformers, same ids, rank, targets, batch and sequence length, on one GPU.
#
# Usage: scripts/gpu_bench_train_qwen3vl.sh path/to/vlmtest-train CKPT OUTDIR
# CKPT is the folder `scripts/gpu_bench_qwen3vl.sh` filled (metadata2b + seeded bf16 weights).
set -euo pipefail
BIN=$1
CKPT=$2
OUT=$3
T=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
ARGS=(--rank 16 --alpha 32 --target-modules $T --batch-size 4 --seq-len 512 --steps 10 --warmup 3)
export PYTHONUNBUFFERED=1
python3 "$(dirname "$0")/peft_bench.py" --qwen "$CKPT" --device cuda --dtype bf16 "${ARGS[@]}" | tee "$OUT/train_peft.jsonl"
"$BIN" bench --base "$CKPT" --device cuda --dtype bf16 "${ARGS[@]}" | tee "$OUT/train_vlmtest.jsonl"
"$BIN" bench --base "$CKPT" --device cuda --dtype bf16 "${ARGS[@]}" --image 448x448 | tee -a "$OUT/train_vlmtest.jsonl"
