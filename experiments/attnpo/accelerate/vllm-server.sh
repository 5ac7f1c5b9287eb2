#!/usr/bin/env bash
# TRL's vLLM server for multi-node AttnPO runs: one node of 8 GPUs serves the rollouts of every training
# process (rollout.engine=vllm rollout.vllm.mode=server rollout.vllm.server_host=<this node>).
#   experiments/attnpo/accelerate/vllm-server.sh deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
#   experiments/attnpo/accelerate/vllm-server.sh deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --tensor-parallel-size 2 --data-parallel-size 4
# Defaults: 8 data-parallel engines of one GPU each, 1024 prompt + 16384 response tokens (attnpo-spec §8),
# port 8000 (rollout.vllm.server_port). Extra arguments go to `trl vllm-serve` and override these.
set -euo pipefail
model="${1:?usage: vllm-server.sh <model> [trl vllm-serve flags]}"
shift
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
exec uv run --extra vllm trl vllm-serve --model "$model" \
  --data-parallel-size 8 --tensor-parallel-size 1 --gpu-memory-utilization 0.9 \
  --max-model-len 17408 --port 8000 "$@"
