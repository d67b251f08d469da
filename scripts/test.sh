#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite: the README's test command and
# what CI runs (.ci/run). Two builds: one with -Werror running every test, one
# with AddressSanitizer + UBSan running the unit tests again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh

echo "== build (-Werror) =="
scripts/build.sh "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHAMMIE_WERROR=ON
echo "== tests =="
(cd build && ctest --output-on-failure --timeout 600 -j "$(nproc)")

echo "== build (ASan + UBSan) =="
scripts/build.sh "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DSHAMMIE_WERROR=ON -DSHAMMIE_SANITIZE=ON
echo "== unit tests under ASan + UBSan =="
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure --timeout 600 -L unit -j "$(nproc)")
