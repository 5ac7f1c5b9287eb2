#!/usr/bin/env bash
# One paper-recipe AttnPO run on one node of 8 GPUs; `<recipe folder>/launch.sh` calls it. Never run in
# this repository's sessions (no GPU lent). Each stage resumes where a killed run stopped:
#   1. the recipe's validation suite on the base model (validation/step-0);
#   2. training: `accelerate launch` with accelerate/fsdp.yaml (8 processes), vLLM colocated;
#   3. the validation suite on the saved checkpoints (validation/step-N), one per GPU at a time, then
#      one comparison table of them all.
# Usage: [GPUS=8] [VALIDATE_EVERY=20] gpu-recipe.sh <recipe folder> [key=value training overrides ...]
# VALIDATE_EVERY picks the checkpoints validated (steps divisible by it; the release validates every 20).
# Needs `uv sync --frozen --extra vllm` and hub access (model, DeepScaleR, validation benchmarks).
set -euo pipefail
recipe="$(cd "$1" && pwd)"
shift
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
run="$(sed -n 's/^out: *//p' "$recipe/train.yaml")"
for arg in "$@"; do
  case "$arg" in out=*) run="${arg#out=}" ;; esac
done
mkdir -p "$run/validation"
validate() {  # validate <model> <step>
  uv run --extra vllm attncore eval --config "$recipe/validation.yaml" \
    model.name="$1" out="$run/validation/step-$2"
}
validate "$(sed -n 's/^  name: *//p' "$recipe/validation.yaml")" 0
uv run --extra vllm accelerate launch --config_file experiments/attnpo/accelerate/fsdp.yaml \
  -m attnpo train --config "$recipe/train.yaml" "$@"
gpus="${GPUS:-8}"
every="${VALIDATE_EVERY:-20}"
slot=0
for ckpt in $(ls -d "$run"/checkpoints/checkpoint-* | sort -t- -k2 -n); do
  step="${ckpt##*-}"
  (( step % every == 0 )) || continue
  CUDA_VISIBLE_DEVICES=$slot validate "$ckpt" "$step" >"$run/validation/step-$step.log" 2>&1 &
  slot=$(( (slot + 1) % gpus ))
  if (( slot == 0 )); then wait; fi
done
wait
uv run attncore eval compare $(ls -d "$run"/validation/step-* | sort -t- -k2 -n) --out "$run/validation/compare"
