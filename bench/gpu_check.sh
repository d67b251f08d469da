#!/usr/bin/env bash
# The NCCL device collectives on a real GPU: prints the CUDA/NCCL runtime
# summary, makes a one-rank communicator, and runs nccl_collectives_test with
# SHAMMIE_REQUIRE_GPU=1 (a missing device fails instead of skipping; the
# two-device tests run when two devices are visible).
#
# The lent GPU machines cannot reach a package registry, so the binaries are
# built where the dependencies are and carried over (about 12 MB; they need
# only libcudart.so.13 and libnccl.so.2 at run time):
#   bench/gpu_check.sh --stage [DIR]   # here, no GPU needed: build with
#                                      # SHAMMIE_WITH_CUDA=ON, copy to DIR
#                                      # (default build-gpu-check, git-ignored)
#   bench/gpu_check.sh --run [DIR]     # on the GPU machine: run them
#   bench/gpu_check.sh                 # both, on a GPU machine that can build
# BUILD_DIR (default build-gpu) is the CMake build folder --stage uses.
# Exit 0 when every check passed. With $OUT set, the log is also written to
# $OUT/gpu_check.log.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-all}
dir=${2:-build-gpu-check}
build=${BUILD_DIR:-build-gpu}

stage() {
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHAMMIE_WITH_CUDA=ON \
    -DSHAMMIE_WERROR=ON >/dev/null || return 1
  cmake --build "$build" --target nccl_collectives_test cuda_check || return 1
  mkdir -p "$dir" || return 1
  cp "$build/tests/nccl_collectives_test" "$build/bench/cuda_check" "$dir/" || return 1
  echo "staged from commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty) on $(hostname)" \
    >"$dir/STAGED"
  echo "gpu_check: staged $(du -sh "$dir" | cut -f1) in $dir"
}

# Finds libcudart.so.13 and libnccl.so.2 when the loader does not: the CUDA
# toolkit, then a pip wheel's nvidia/*/lib (PyTorch's CUDA wheels bring them).
library_path() {
  local extra=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [ -d "$d" ] && extra="$extra:$d"; done
  local py
  for py in /usr/bin/python3 python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    local site
    site=$("$py" -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null) || continue
    for s in $site; do
      for d in "$s"/*/lib; do [ -d "$d" ] && extra="$extra:$d"; done
    done
    break
  done
  echo "${extra#:}"
}

run_checks() {
  local failed=0
  export LD_LIBRARY_PATH="$(library_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "== host: $(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ), tree at $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  echo "== binaries: $(cat "$dir/STAGED" 2>/dev/null || echo "$dir/STAGED missing")"
  if [ ! -x "$dir/nccl_collectives_test" ] || [ ! -x "$dir/cuda_check" ]; then
    echo "gpu_check: FAIL: no binaries in $dir (run bench/gpu_check.sh --stage first, and carry $dir)"
    return 1
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "== nvidia-smi"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv || true
  else
    echo "== nvidia-smi: not found"
  fi
  echo "== libraries"
  ldd "$dir/nccl_collectives_test" | grep -E 'cudart|nccl' || true
  if ldd "$dir/nccl_collectives_test" | grep -q 'not found'; then
    echo "gpu_check: FAIL: a library is missing (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
    return 1
  fi
  echo "== cuda_check (runtime summary, one-rank communicator)"
  if ! timeout 120 "$dir/cuda_check"; then
    echo "gpu_check: FAIL: cuda_check could not make a one-rank NCCL communicator"
    failed=1
  fi
  echo "== nccl_collectives_test (SHAMMIE_REQUIRE_GPU=1)"
  if ! SHAMMIE_REQUIRE_GPU=1 timeout 300 "$dir/nccl_collectives_test"; then
    echo "gpu_check: FAIL: nccl_collectives_test"
    failed=1
  fi
  [ $failed -eq 0 ] && echo "gpu_check: PASS"
  return $failed
}

case "$mode" in
  --stage) stage || exit 3 ;;
  --run)
    if [ -n "${OUT:-}" ]; then
      run_checks 2>&1 | tee "$OUT/gpu_check.log"
      exit "${PIPESTATUS[0]}"
    fi
    run_checks
    ;;
  all)
    stage || exit 3
    if [ -n "${OUT:-}" ]; then
      run_checks 2>&1 | tee "$OUT/gpu_check.log"
      exit "${PIPESTATUS[0]}"
    fi
    run_checks
    ;;
  *)
    echo "usage: bench/gpu_check.sh [--stage [DIR] | --run [DIR]]" >&2
    exit 2
    ;;
esac
