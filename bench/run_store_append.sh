#!/usr/bin/env bash
# Runs the metric-streaming benchmark: shammie's ResultStore vs h5py (naive
# and buffered) on the same workload, on this machine, in one run. Prints the
# timings and write-time ratios; record them in docs/benchmarks.md.
# Usage: bench/run_store_append.sh [BUILD_DIR] [RUNS METRICS STEPS BATCH]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
args=("${@:-100 4 10000 50}")
cmake --build "$build" --target store_append >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2068
s=$("$build/bench/store_append" "$tmp/shammie.h5" ${args[@]})
n=$(/usr/bin/python3 "$root/bench/store_append_h5py.py" "$tmp/naive.h5" naive ${args[@]})
b=$(/usr/bin/python3 "$root/bench/store_append_h5py.py" "$tmp/buffered.h5" buffered ${args[@]})
echo "$s"; echo "$n"; echo "$b"
w() { sed -E 's/.*write_s=([0-9.]+).*/\1/' <<<"$1"; }
c() { sed -E 's/.*checksum=([0-9.]+).*/\1/' <<<"$1"; }
/usr/bin/python3 -c "import sys, math; a, b, c = $(c "$s"), $(c "$n"), $(c "$b"); sys.exit(0 if math.isclose(a, b, rel_tol=1e-12) and math.isclose(a, c, rel_tol=1e-12) else 1)" \
  || { echo "checksums differ"; exit 1; }
python3 -c "print(f'write speedup vs h5py naive: {$(w "$n")/$(w "$s"):.1f}x, vs h5py buffered: {$(w "$b")/$(w "$s"):.1f}x')"
echo "sizes: $(du -k "$tmp"/*.h5 | awk '{printf "%s=%sKiB ", $2, $1}' | sed "s|$tmp/||g")"
