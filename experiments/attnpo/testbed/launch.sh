#!/usr/bin/env bash
# AttnPO on the testbed model (README.md): evaluate the starting model, train and evaluate each arm, report.
#   experiments/attnpo/testbed/launch.sh start        # the starting model on the 300 held-out problems, first
#   experiments/attnpo/testbed/launch.sh a1           # A1 traineff only (gamma = 1)
#   experiments/attnpo/testbed/launch.sh a2 heads=runs/attnpo/heads/testbed/heads.yaml   # A2 AttnPO
#   experiments/attnpo/testbed/launch.sh a3 heads=... # ablations: a3 Pos-only, a4 Neg-only, a5 no difficulty
#                                                     # awareness, a6 gamma variant, a7 random heads,
#                                                     # a8 the thinking baseline (ours, not the release's)
#   experiments/attnpo/testbed/launch.sh report       # table + curves of every arm -> runs/attnpo/testbed/report
# An arm is a1..a8 (its config a<n>_*.yaml) or a config's file name; the rest are dotted overrides of `attnpo train`, with
# `heads=PATH` short for method.heads.path=PATH (the heads file `attnpo find-heads` wrote). Training then
# the held-out evaluation of the final model, both into runs/attnpo/testbed/<config name>; a rerun resumes
# from the last checkpoint and evaluates only what is not evaluated yet.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
arm="${1:?usage: launch.sh <start | a1..a8 | report> [key=value ...]}"
shift
cd "$here/../../.."
runs=runs/attnpo/testbed
case "$arm" in
  report) exec uv run attnpo report "$runs" "$@" ;;
  start)
    # the arms' evaluation section: the testbed evaluation (seed 10007) extended to 300 problems
    if [[ ! -f "$runs/start/evaluation.json" ]]; then
      mkdir -p "$runs/start"
      uv run attncore synth evaluate -m testbed-mini data.count=300 "$@" \
        --out "$runs/start/evaluation.json.tmp" --rollouts "$runs/start/evaluation.rollouts.jsonl"
      mv "$runs/start/evaluation.json.tmp" "$runs/start/evaluation.json"
    fi
    exit 0 ;;
esac
configs=("$here/$arm"_*.yaml)
[[ -f "$here/$arm" ]] && configs=("$here/$arm")   # a config's file name works too (the sweep passes one)
[[ -f "${configs[0]}" ]] || { echo "error: no arm '$arm' in $here (start, a1..a8, report)" >&2; exit 2; }
args=()
for a in "$@"; do
  case "$a" in
    heads=*) args+=("method.heads.path=${a#heads=}") ;;
    *) args+=("$a") ;;
  esac
done
exec uv run attnpo train --config "${configs[0]}" "${args[@]}"
