#!/usr/bin/env bash
# Run an evaluation suite of this folder.
#   experiments/eval/launch.sh                         # cpu_suite.yaml -> runs/eval/cpu
#   experiments/eval/launch.sh attnpo_suite.yaml out=runs/eval/base-1.5b
#   experiments/eval/launch.sh cpu_suite.yaml sampling.temperature=0.6 out=runs/eval/cpu-t0.6
# Extra arguments are dotted config overrides. A rerun reuses finished rollouts and continues a killed run.
# Inside a sweep trial (sweep.yaml) the suite's `out` is the trial's folder.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${1:-cpu_suite.yaml}"
shift || true
cd "$here/../.."
exec uv run attncore eval --config "$here/$config" "$@"
