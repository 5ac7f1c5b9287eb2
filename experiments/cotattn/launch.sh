#!/usr/bin/env bash
# MoLSAKI paper pairs on a GPU node: teacher rationales, teacher targets, every arm x seed, evaluation.
#   experiments/cotattn/launch.sh llama3-8b_gpt2-large      # Table 1, Llama3-8B -> GPT-2 Large
#   experiments/cotattn/launch.sh qwen2.5-32b_tinyllama     # Table 1, Qwen2.5-32B -> TinyLlama-1.1B
#   experiments/cotattn/launch.sh llama3-8b_gpt2-medium     # Table 2 (needs llama3-8b_gpt2-large's rationales and targets)
# SEEDS (default "0 1 2") picks the seeds; every stage resumes, so a rerun continues a killed run.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pair="${1:?usage: launch.sh <pair folder>}"
dir="$here/$pair"
seeds="${SEEDS:-0 1 2}"
# Table 2's single-layer pairs, 0-based teacher:student (the paper's 13/14/15 -> 8/17/24 and 32 -> 24).
sl_pairs="12:7 12:16 12:23 13:7 13:16 13:23 14:7 14:16 14:23 31:23"
cd "$here/../.."

if [[ -f "$dir/rationales.yaml" ]]; then uv run cotattn rationales --config "$dir/rationales.yaml"; fi
if [[ -f "$dir/teacher.yaml" ]]; then uv run cotattn teacher-targets --config "$dir/teacher.yaml"; fi

train_and_eval() {  # <train yaml> <run name> [overrides...]
  local config="$1" name="$2"
  shift 2
  local out="runs/cotattn/$pair/$name"
  uv run cotattn train --config "$config" "out=$out" "$@"
  local eval_config="$dir/eval.yaml"  # or the arm's own eval_<arm>.yaml (vanilla: the answer task's prompt and grade)
  [[ -f "$dir/eval_$arm.yaml" ]] && eval_config="$dir/eval_$arm.yaml"
  uv run attncore eval --config "$eval_config" "model.name=$out/student" "out=$out/eval"
}

for config in "$dir"/train_*.yaml; do
  arm="$(basename "$config" .yaml)"
  arm="${arm#train_}"
  for seed in $seeds; do
    if [[ "$arm" == sl ]]; then
      for pair_layers in $sl_pairs; do
        t="${pair_layers%%:*}" s="${pair_layers##*:}"
        train_and_eval "$config" "sl-t$t-s$s-seed$seed" "optim.seed=$seed" "arm.teacher_layer=$t" "arm.student_layer=$s"
      done
    else
      train_and_eval "$config" "$arm-seed$seed" "optim.seed=$seed"
    fi
  done
done
