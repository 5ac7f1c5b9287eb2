#!/usr/bin/env bash
# MoLSAKI CPU pair (issue 19): teacher testbed-mini -> student SmolLM2-135M cut to 20 layers, on testbed
# problems. From anywhere:
#   experiments/cotattn/testbed/launch.sh                                  # every stage in order (README)
#   experiments/cotattn/testbed/launch.sh train_molsaki.yaml [key=value]   # one student: train, then evaluate
#     into runs/cotattn/testbed/<arm>-seed<optim.seed> (seed 0 unless given)
# THREADS (default 1) sets torch's CPU threads of every stage; SEEDS (default "0 1 2") the seeds of DSS and
# MoLSAKI. Every stage resumes: after a kill, rerun the same command.
# Inside a sweep trial (attncore sweep, or wandb agent) the one-student form trains into <trial>/train and
# evaluates into the trial folder itself, whose summary carries the sweep's metric (eval/testbed/pass@1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../../.."
runs=runs/cotattn/testbed
threads="threads=${THREADS:-1}"

eval_config() {  # <train yaml>: the arm's own eval_<arm>.yaml where there is one (vanilla), else eval.yaml
  local arm
  arm="$(basename "$1" .yaml)"
  arm="${arm#train_}"
  [[ -f "$here/eval_$arm.yaml" ]] && echo "$here/eval_$arm.yaml" || echo "$here/eval.yaml"
}

train_and_eval() {  # <train yaml> <run folder> [overrides...]
  local config="$1" out="$2"
  shift 2
  uv run cotattn train --config "$here/$config" "out=$out" "$threads" "$@"
  uv run attncore eval --config "$(eval_config "$config")" "model.name=$out/student" "out=$out/eval" "$threads"
}

if [[ $# -gt 0 ]]; then
  config="$1"
  shift
  trial="${ATTNCORE_TRIAL_DIR:-}"
  if [[ -z "$trial" && -n "${WANDB_SWEEP_ID:-}" && -n "${WANDB_RUN_ID:-}" ]]; then
    trial="runs/sweeps/$WANDB_SWEEP_ID/$WANDB_RUN_ID"  # the folder attncore.sweeps.trial gives an agent's run
  fi
  if [[ -z "$trial" ]]; then
    name="$(basename "$config" .yaml)"
    seed=0
    for arg in "$@"; do [[ "$arg" == optim.seed=* ]] && seed="${arg#optim.seed=}"; done
    train_and_eval "$config" "$runs/${name#train_}-seed$seed" "$@"
  else
    uv run cotattn train --config "$here/$config" "out=$trial/train" tracking.mode=disabled "$threads" "$@"
    uv run attncore eval --config "$(eval_config "$config")" "model.name=$trial/train/student" "out=$trial" "$threads"
  fi
  exit 0
fi

uv run cotattn rationales --config "$here/rationales.yaml" "$threads"
uv run cotattn teacher-targets --config "$here/teacher.yaml" "$threads"
uv run attncore eval --config "$here/eval_teacher.yaml" "$threads"
for seed in ${SEEDS:-0 1 2}; do
  "$here/launch.sh" train_dss.yaml "optim.seed=$seed"
  "$here/launch.sh" train_molsaki.yaml "optim.seed=$seed"
done
"$here/launch.sh" train_vanilla.yaml optim.seed=0
"$here/launch.sh" train_sl.yaml optim.seed=0
evals=("$runs/teacher-eval" "$runs/vanilla-seed0/eval")
for seed in ${SEEDS:-0 1 2}; do evals+=("$runs/dss-seed$seed/eval" "$runs/molsaki-seed$seed/eval"); done
evals+=("$runs/sl-seed0/eval")
uv run attncore eval compare "${evals[@]}" --baseline "$runs/dss-seed0/eval" --out "$runs/compare"
