#!/usr/bin/env bash
# End-to-end check of the real binary: every invalid corpus file exits 2 and
# prints each declared error line; every shipped config exits 0; `plan` is
# deterministic. Usage: validate_files.sh SHAMMIE_BINARY SOURCE_DIR
set -u
shammie=$1
cd "$2" || exit 1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for f in tests/data/invalid/*.toml; do
  err=$("$shammie" validate "$f" 2>&1 >/dev/null)
  rc=$?
  [ "$rc" -eq 2 ] || fail "$f: exit $rc, expected 2"
  while IFS= read -r line; do
    want=${line#\# expect: }
    if [[ $want == @* ]]; then want="tests/data/invalid/${want#@}"; else want="$f:$want"; fi
    grep -qxF -- "$want" <<<"$err" || fail "$f: missing line: $want"$'\n'"got:"$'\n'"$err"
  done < <(grep '^# expect: ' "$f")
done

for f in experiments/configs/*.toml; do
  out=$("$shammie" validate "$f" 2>&1)
  [ $? -eq 0 ] || fail "$f: validate failed: $out"
  a=$("$shammie" plan --json "$f") || fail "$f: plan failed"
  b=$("$shammie" plan --json "$f")
  [ "$a" == "$b" ] || fail "$f: plan differs between two runs"
done

echo "$(ls tests/data/invalid/*.toml | wc -l) invalid files, $(ls experiments/configs/*.toml | wc -l) configs checked, $failures failure(s)"
[ "$failures" -eq 0 ]
