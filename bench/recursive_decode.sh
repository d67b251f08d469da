#!/usr/bin/env bash
# Early-exit decoding of a recursive transformer on this CPU: tokens/s of
# static, continuous sequence-wise and continuous depth-wise batching
# (lm.loop_decode), against the vanilla model it was converted from under
# the same engine and under the runtime's KV-cache generator (lm.sample,
# greedy), in one run with one worker rank so that no other job shares the
# cores (docs/benchmarks.md, "Recursive decoding").
# Usage: bench/recursive_decode.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shammie=$build/orchestrator/shammie
work=$(mktemp -d /tmp/shammie-recursive-decode.XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
task='task = "arith", operations = 3, modulus = 23, d_model = 64, heads = 4, max_len = 48, batch = 32'
cat > "$work/decode.toml" <<TOML
[experiment]
name = "recursive-decode"
seed = 5

[[stage]]
name = "full"
kind = "lm.train"
config = { $task, layers = 6, steps = 400, eval_every = 400 }

[[stage]]
name = "early-exit"
kind = "lm.train"
depends_on = ["full"]
config = { $task, layers = 6, loops = 2, recursive_init = "stepwise", distill = 0.5, exit_loss = 0.1, steps = 150, eval_every = 150, learning_rate = 0.001 }

[[stage]]
name = "generate-full"
kind = "lm.sample"
depends_on = ["full"]
config = { prompts = 256, samples = 1, temperature = 0.0, max_new_tokens = 20 }
sweep = { grid = { batch = [16, 64] } }

[[stage]]
name = "decode-full"
kind = "lm.loop_decode"
depends_on = ["full"]
config = { prompts = 256, repeats = 5, exit_threshold = 2.0 }
sweep = { grid = { batch = [16, 64] } }

[[stage]]
name = "decode-recursive"
kind = "lm.loop_decode"
depends_on = ["early-exit"]
config = { prompts = 256, repeats = 5 }
sweep = { grid = { batch = [16, 64], exit_threshold = [0.8, 0.95, 2.0] } }
TOML
"$shammie" run "$work/decode.toml" --out "$work/run" --ranks 2 --progress none > /dev/null
"$shammie" export "$work/run" --format json -o "$work/run.json"
/usr/bin/python3 - "$work/run.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
last = lambda r, k: r["metrics"][k][-1][1] if k in r["metrics"] else float("nan")
print("%-17s %5s %9s  %s" % ("model", "batch", "threshold",
                             "tokens/s with prefill / decode only (tokens per call) by policy; exit rate; accuracy"))
for r in sorted(runs, key=lambda r: (r["stage"], r["config"].get("batch", 0), r["config"].get("exit_threshold", 0))):
    c = r["config"]
    if r["stage"] == "generate-full":
        print("%-17s %5d %9s  Generate (KV cache, static) %.0f; accuracy %.3f" % (
            "full, lm.sample", c["batch"], "-", last(r, "tokens_per_second"), last(r, "accuracy")))
    elif r["kind"] == "lm.loop_decode":
        cells = ["%s %.0f / %.0f (%.1f)" % (p, last(r, p + "_tokens_per_second"), last(r, p + "_decode_tokens_per_second"),
                                           last(r, p + "_tokens_per_call"))
                 for p in ("static", "sequence", "depth")]
        print("%-17s %5d %9.2f  %s; exit %.2f; accuracy %.3f%s" % (
            r["stage"].replace("decode-", ""), c["batch"], c["exit_threshold"], ", ".join(cells),
            last(r, "exit_rate"), last(r, "depth_accuracy"), "" if last(r, "policies_agree") == 1 else " POLICIES DISAGREE"))
PY
