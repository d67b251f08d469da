#!/usr/bin/env bash
# Sets up, builds, and runs the default experiment locally.
#
# Today shammie validates and plans experiments; the engine that executes the
# plan (`shammie run`, MPI controller + workers) is the next piece of work, so
# this script stops after `validate` and `plan` and says so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exp=${1:-experiments/configs/quadratic-sweep.toml}
scripts/setup.sh
scripts/build.sh "$root/build"
shammie=build/orchestrator/shammie
echo
"$shammie" validate "$exp"
echo
"$shammie" plan "$exp"
echo
echo "Not yet: \`shammie run\` (the engine that executes these jobs and writes results.h5) is not built yet."
