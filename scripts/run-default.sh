#!/usr/bin/env bash
# Sets up, builds, and runs the default experiment locally: lm-sweep, a
# learning-rate x seed sweep of small transformers on two synthetic tasks,
# with evaluation and sampling jobs reading their checkpoints (~2 minutes on
# 2 cores), on MPI ranks; results in runs/lm-sweep/results.h5, then prints
# what is stored.
# Usage: scripts/run-default.sh [EXPERIMENT.toml] [extra `shammie run` options]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exp=${1:-experiments/configs/lm-sweep.toml}
shift || true
scripts/setup.sh
scripts/build.sh "$root/build"
shammie=build/orchestrator/shammie
echo
"$shammie" run "$exp" "$@"
name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$exp" | head -1)
echo
"$shammie" status "runs/$name"
