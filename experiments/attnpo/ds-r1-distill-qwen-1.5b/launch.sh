#!/usr/bin/env bash
# AttnPO on DeepSeek-R1-Distill-Qwen-1.5B, the paper recipe, one node of 8 GPUs (README.md; not run here).
#   experiments/attnpo/ds-r1-distill-qwen-1.5b/launch.sh                  # validate, train, validate
#   experiments/attnpo/ds-r1-distill-qwen-1.5b/launch.sh method.rescaling.enabled=false out=runs/attnpo/a1-1.5b
# Extra arguments are dotted overrides of train.yaml. A rerun resumes every stage.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../gpu-recipe.sh" "$here" "$@"
