#!/usr/bin/env bash
# AttnPO on DeepSeek-R1-Distill-Qwen-7B, the paper recipe, one node of 8 GPUs (README.md; not run here).
# No 7B key-focus heads were released: the first stage discovers them (heads/deepseek-r1-distill-qwen-7b.yaml,
# resumable) unless train.yaml's heads file already exists.
#   experiments/attnpo/ds-r1-distill-qwen-7b/launch.sh [key=value training overrides ...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
heads="$here/../../../$(sed -n 's/^  heads: {kind: file, path: \(.*\)}$/\1/p' "$here/train.yaml")"
if [ ! -f "$heads" ]; then
  "$here/../heads/launch.sh" deepseek-r1-distill-qwen-7b.yaml
fi
exec "$here/../gpu-recipe.sh" "$here" "$@"
