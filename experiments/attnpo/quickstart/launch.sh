#!/usr/bin/env bash
# The AttnPO pipeline in miniature, on the embedded SmolLM2-135M-Instruct from a clean cache (README.md):
#   1. build  the micro testbed model (experiments/testbed/micro.yaml; evaluated on its 32 held-out problems)
#   2. heads  its key-focus heads, from the oracle's step labels on a small probe (heads.yaml)
#   3. train  a few AttnPO steps with those heads, then the same held-out evaluation (train.yaml)
#   4. report the before/after table (accuracy, thinking tokens, redundant share) -> report/report.md
#   5. view   one training rollout's attenuated steps -> attenuated.html
#     experiments/attnpo/quickstart/launch.sh
# Outputs in runs/attnpo/quickstart. A rerun skips the built model and resumes or reuses every other stage.
# QUICKSTART_RECIPE, QUICKSTART_CONFIGS (a folder with heads.yaml and train.yaml), QUICKSTART_MODEL (the
# name the recipe builds) and QUICKSTART_OUT run the same pipeline on other settings (the test's tiny one).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipe="${QUICKSTART_RECIPE:-$here/../../testbed/micro.yaml}"
configs="${QUICKSTART_CONFIGS:-$here}"
model="${QUICKSTART_MODEL:-testbed-micro}"
out="${QUICKSTART_OUT:-runs/attnpo/quickstart}"
cd "$here/../../.."

stage() {  # <name> <command...>: run it, then print its wall time and the machine's load
  local name="$1" began=$SECONDS
  shift
  echo "== $name: $*"
  "$@"
  echo "== $name: $((SECONDS - began)) s (load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a))"
}

began=$SECONDS
stage build uv run attncore synth train-model --config "$recipe" --if-missing
stage heads uv run attnpo find-heads --config "$configs/heads.yaml" "out=$out/heads"
stage train uv run attnpo train --config "$configs/train.yaml" "method.heads.path=$out/heads/heads.yaml" \
  "evaluation.baseline=$model" "out=$out/attnpo"
stage report uv run attnpo report "$out" --start "$model" --out "$out/report"
# a run where no correct response was rescaled has nothing to show; the report above still stands
stage view uv run attnpo view "$out/attnpo" --out "$out/attenuated.html" || echo "== view: nothing to show"
echo "== quickstart: $((SECONDS - began)) s in all; open $out/report/report.md and $out/attenuated.html"
