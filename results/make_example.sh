#!/usr/bin/env bash
# The tiny example sweep behind results/tiny_fig5_lora/: Fig. 5 (right), full fine-tuning vs LoRA, 3 seeds,
# at tiny scale on CPU, then the report written straight into this folder. Raw runs go to $ROOT (outside git).
# Usage: bash results/make_example.sh [ROOT]        (default ROOT: /tmp/ablate-example)
set -euo pipefail
ROOT=${1:-/tmp/ablate-example}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
cd "$REPO"
# 80 stage-2 steps is about where tiny cells stop answering with an empty string (30 steps: every answer "")
"$PY" -m ablate -m tuning=full,lora seed=0,1,2 sweep_name=example_fig5_lora resolution=224 logger=none \
  data.num_train=256 data.num_eval=50 eval.max_questions=50 \
  scale.stage1.max_steps=10 scale.stage1.batch_size=8 scale.stage1.micro_batch_size=8 \
  scale.stage2.max_steps=80 scale.stage2.batch_size=8 scale.stage2.micro_batch_size=8 \
  paths.root="$ROOT"
rm -rf results/tiny_fig5_lora
"$PY" -m ablate.report --root "$ROOT" --out results/tiny_fig5_lora
