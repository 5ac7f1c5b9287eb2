#!/usr/bin/env bash
# Build the testbed's mini reasoning model and evaluate it on held-out problems.
#   experiments/testbed/launch.sh                 # default recipe -> cached model `testbed-mini`
#   experiments/testbed/launch.sh micro.yaml      # 2-minute recipe used by the tests
#   experiments/testbed/launch.sh default.yaml training.learning_rate=3e-4 name=testbed-lr3e-4
# Extra arguments are dotted config overrides. An interrupted run resumes from its last checkpoint.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="${1:-default.yaml}"
shift || true
cd "$here/../.."
exec uv run attncore synth train-model --config "$here/$config" "$@"
