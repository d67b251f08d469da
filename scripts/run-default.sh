#!/usr/bin/env bash
# Sets up, builds, and runs the default experiment locally: a toy.quadratic
# sweep (learning rate x curvature x 3 seeds) on MPI ranks, results in
# runs/quadratic-sweep/results.h5, then prints what is stored.
# Usage: scripts/run-default.sh [EXPERIMENT.toml] [extra `shammie run` options]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exp=${1:-experiments/configs/quadratic-sweep.toml}
shift || true
scripts/setup.sh
scripts/build.sh "$root/build"
shammie=build/orchestrator/shammie
echo
"$shammie" run "$exp" "$@"
name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$exp" | head -1)
echo
"$shammie" status "runs/$name"
