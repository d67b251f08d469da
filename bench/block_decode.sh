#!/usr/bin/env bash
# Block Transformer decoding on this CPU: tokens/s of KV-cached greedy
# decoding (lm.block_decode) of a Block Transformer (L_B = 4; 2-layer token
# decoder d 128, 2-layer block decoder d 128, prefix 2; 833 K parameters)
# against the vanilla model it matches in loss in the study (2 layers,
# d 128; 402 K parameters), through the same runtime, whose generator
# bench/lm_throughput.sh measures against PyTorch eager. One worker rank so
# that no other job shares the cores; short training on the prose corpus
# (throughput does not depend on what the models learned). docs/benchmarks.md,
# "Block Transformer decoding".
# Usage: bench/block_decode.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shammie=$build/orchestrator/shammie
work=$(mktemp -d /tmp/shammie-block-decode.XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cat > "$work/decode.toml" <<TOML
[experiment]
name = "block-decode"
seed = 5

[[stage]]
name = "train"
kind = "lm.train"
config = { task = "text", packed = true, window = 256, d_model = 128, layers = 2, heads = 4, max_len = 2048, steps = 50, batch = 8, eval_every = 50, eval_examples = 32, learning_rate = 0.001 }
sweep = { zip = { block_length = [0, 4], block_d_model = [128, 128], block_layers = [2, 2] } }

[[stage]]
name = "decode"
kind = "lm.block_decode"
depends_on = ["train"]
config = { new_tokens = 128, repeats = 2, split = "validation" }
sweep = { over = ["train"], grid = { batch = [1, 16, 64], prompt_length = [128, 512, 1024, 1920] } }
TOML
"$shammie" run "$work/decode.toml" --out "$work/run" --ranks 2 --progress none > /dev/null
"$shammie" export "$work/run" --format json -o "$work/run.json"
/usr/bin/python3 - "$work/run.json" <<'PY'
import json, sys
runs = [r for r in json.load(open(sys.argv[1]))["runs"] if r["stage"] == "decode"]
last = lambda r, k: r["metrics"][k][-1][1]
cells = {}
for r in runs:
    c = r["config"]
    cells[(c["batch"], c["prompt_length"], int(last(r, "block_length")))] = r
print("%5s %6s  %s" % ("batch", "prompt", "decode tokens/s vanilla / block (ratio); with prefill (ratio); "
                                         "KV KB per sample vanilla / block; KV reads per token vanilla / block"))
for (batch, prompt) in sorted({(b, p) for (b, p, _) in cells}):
    v, b = cells[(batch, prompt, 0)], cells[(batch, prompt, 4)]
    d = lambda r: last(r, "decode_tokens_per_second")
    t = lambda r: last(r, "tokens_per_second")
    print("%5d %6d  %.0f / %.0f (%.1fx); %.0f / %.0f (%.1fx); %.0f / %.0f; %.0f / %.0f" % (
        batch, prompt, d(v), d(b), d(b) / d(v), t(v), t(b), t(b) / t(v),
        last(v, "kv_bytes_per_sample") / 1024, last(b, "kv_bytes_per_sample") / 1024,
        last(v, "kv_reads_per_token"), last(b, "kv_reads_per_token")))
PY
