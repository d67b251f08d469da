#!/usr/bin/env bash
# Runs shammie's statistics and the numpy/scipy peer on the same data in one
# run; checks the results agree (1e-9 relative) and prints the speed ratios.
# Usage: bench/run_stats_bench.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
cmake --build "$build" --target stats_bench >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
s=$("$build/bench/stats_bench" "$tmp")
p=$(/usr/bin/python3 "$root/bench/stats_bench_numpy.py" "$tmp")
echo "shammie: $s"; echo "numpy:   $p"
/usr/bin/python3 - "$s" "$p" <<'PY'
import json, math, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
close = lambda x, y: math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
ok = all(close(x, y) for k in ("ppi", "strat") for x, y in zip(a[k], b[k]))
for k in ("ltt", "ltt_bits"):
    ok &= a[k + "_valid"] == b[k + "_valid"] and close(a[k + "_p_sum"], b[k + "_p_sum"])
print("results agree (1e-9 relative)" if ok else "RESULTS DIFFER")
for k in ("ppi", "strat", "ltt", "ltt_bits"):
    print(f"{k}: shammie {a[k + '_s'] * 1e3:.2f} ms, numpy {b[k + '_s'] * 1e3:.2f} ms, ratio {b[k + '_s'] / a[k + '_s']:.1f}x")
sys.exit(0 if ok else 1)
PY
