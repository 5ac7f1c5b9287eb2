#!/usr/bin/env bash
# Discover key-focus heads (attnpo find-heads).
#   experiments/attnpo/heads/launch.sh                                   # testbed model, oracle labels
#   experiments/attnpo/heads/launch.sh deepseek-r1-distill-qwen-1.5b.yaml # GPU node
#   experiments/attnpo/heads/launch.sh testbed.yaml model.name=testbed-v2 out=runs/attnpo/heads/v2
# Extra arguments are dotted config overrides. An interrupted run resumes where it stopped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${1:-testbed.yaml}"
shift || true
cd "$here/../../.."
exec uv run attnpo find-heads --config "$here/$config" "$@"
