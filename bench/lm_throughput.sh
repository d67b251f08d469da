#!/usr/bin/env bash
# Training and generation tokens/s of the LibTorch runtime against the same
# model in PyTorch eager (Debian's python3-torch: the same 1.13 build, the
# same OpenBLAS, the same thread count), side by side in one run, with the
# machine's float32 GEMM peak measured in the same run (docs/benchmarks.md).
# Usage: bench/lm_throughput.sh [BUILD_DIR]
#   THREADS="1 2"  intra-op thread counts to measure (OMP_NUM_THREADS and the
#                  runtime's `threads` / torch.set_num_threads)
#   REPS=3         runs of each side per case, alternating which goes first;
#                  the table shows each side's best run and the median of
#                  the shammie / PyTorch ratios of back-to-back pairs
#   RESULTS=FILE   keep every run's JSON line there
#   PEER_CORE=same PyTorch runs on the OpenBLAS kernels the runtime picked
#                  (default); "default": on OpenBLAS's own detection
#   SHAMMIE_FUSED=0  the runtime without its fused CPU kernels (to compare)
# Needs: python3-torch and libopenblas0-openmp (Debian); builds the
# lm_throughput target (which pulls in shammie_lm) in BUILD_DIR if needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
threads_list=${THREADS:-1 2}
reps=${REPS:-3}
py=/usr/bin/python3
cmake --build "$build" --target lm_throughput >/dev/null
bin=$build/bench/lm_throughput
peer=$root/bench/lm_throughput_torch.py
results=${RESULTS:-$(mktemp /tmp/shammie-lm-throughput.XXXXXX)}
[ -n "${RESULTS:-}" ] || trap 'rm -f "$results"' EXIT
: > "$results"
# Passive OpenMP waiting: spinning threads fight OpenBLAS and other processes
# on a small shared machine. Same for both sides.
export OMP_WAIT_POLICY=passive

# The runtime names OpenBLAS's kernels from the CPU's instruction sets
# (common/blas_core.hpp); Debian's OpenBLAS may fall back to SSE3 kernels on
# CPUs newer than it. PEER_CORE=same (the default) gives PyTorch the same
# kernels, so the comparison is of the runtimes; PEER_CORE=default leaves
# PyTorch with OpenBLAS's own detection, as a PyTorch user gets it.
shammie_core=$("$bin" blas-core)
if [ "${PEER_CORE:-same}" = same ] && [ -n "$shammie_core" ]; then
  peer_env=(env "OPENBLAS_CORETYPE=$shammie_core")
else
  peer_env=(env)
fi
echo "OpenBLAS kernels: shammie $shammie_core; PyTorch ${PEER_CORE:-same} (each run's JSON has its blas_core)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "torch: $("$py" -c 'import torch; print(torch.__version__)'), BLAS: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)"

# name | mode | model flags | workload flags
cases=(
  "small-b32|train|--d 128 --layers 5 --heads 4|--length 31 --batch 32 --steps 8"
  "small-b2|train|--d 128 --layers 5 --heads 4|--length 31 --batch 2 --steps 40"
  "medium-b8|train|--d 512 --layers 6 --heads 8|--length 31 --batch 8 --steps 4 --warmup 1"
  "small-gen-b8|sample|--d 128 --layers 5 --heads 4|--length 31 --batch 8 --rows 24 --new 64"
  "small-gen-b1|sample|--d 128 --layers 5 --heads 4|--length 31 --batch 1 --rows 3 --new 64"
  "medium-gen-b8|sample|--d 512 --layers 6 --heads 8|--length 31 --batch 8 --rows 16 --new 64"
  # The shape of pav.rollouts (docs/experiments/pav.md): a 2-layer d = 64
  # policy, short prompts, 1024 rows decoded together.
  "rollout-gen-b1024|sample|--d 64 --layers 2 --heads 4|--length 7 --batch 1024 --rows 2048 --new 16"
)

runs=
for t in $threads_list; do
  export OMP_NUM_THREADS=$t
  for c in "${cases[@]}"; do
    IFS='|' read -r name mode model work <<< "$c"
    # The GEMM peak before every case: the table uses the best of all of them.
    echo "{\"case\": \"peak\", \"result\": $("${peer_env[@]}" "$py" "$peer" peak --n 2048 --threads "$t" --reps 3)}" >> "$results"
    for r in $(seq 1 "$reps"); do
      if [ $((r % 2)) -eq 1 ]; then order="shammie pytorch"; else order="pytorch shammie"; fi
      for side in $order; do
        # shellcheck disable=SC2086  # $model and $work are word lists
        if [ "$side" = shammie ]; then
          out=$("$bin" "$mode" $model $work --threads "$t")
        else
          out=$("${peer_env[@]}" "$py" "$peer" "$mode" $model $work --threads "$t")
        fi
        echo "{\"case\": \"$name\", \"result\": $out}" >> "$results"
        runs="$runs $side $(echo "$out" | sed -n 's/.*"tokens_per_second": \([0-9.]*\).*/\1/p' | cut -d. -f1)"
        runs="$runs/$(echo "$out" | sed -n 's/.*"cpu_tokens_per_second": \([0-9.]*\).*/\1/p' | cut -d. -f1)"
      done
    done
    echo "  $name, $t thread(s), tokens per wall/CPU second of each run:$runs"
    runs=
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

"$py" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
peak = {}
for r in rows:
    if r["case"] == "peak":
        x, t = r["result"], r["result"]["threads"]
        p = peak.setdefault(t, {"gflops": 0, "cpu_gflops": 0})
        p["gflops"], p["cpu_gflops"] = max(p["gflops"], x["gflops"]), max(p["cpu_gflops"], x["cpu_gflops"])
order = list(dict.fromkeys(r["case"] for r in rows if r["case"] != "peak"))
best, best_cpu = {}, {}  # each side's best run, by wall and by CPU time
runs = {}  # (case, threads) -> results in run order: pairs of back-to-back shammie/PyTorch runs
for r in rows:
    if r["case"] == "peak":
        continue
    x = r["result"]
    key = (r["case"], x["threads"], x["side"])
    runs.setdefault((r["case"], x["threads"]), []).append(x)
    if key not in best or x["tokens_per_second"] > best[key]["tokens_per_second"]:
        best[key] = x
    if key not in best_cpu or x["cpu_tokens_per_second"] > best_cpu[key]["cpu_tokens_per_second"]:
        best_cpu[key] = x

def paired(case, t, field):
    """Median and range of shammie / PyTorch over back-to-back pairs: robust to
    a quiet or busy spell that only one side's best run happened to get."""
    ratios = []
    rs = runs[(case, t)]
    for a, b in zip(rs[0::2], rs[1::2]):
        s, p = (a, b) if a["side"] == "shammie" else (b, a)
        ratios.append(s[field] / p[field])
    return statistics.median(ratios), sorted(ratios)

VOCAB = 51
def shape(case):  # d, layers, ff
    d, layers = (512, 6) if case.startswith("medium") else (128, 5)
    return d, layers, (8 * d // 3 + 7) // 8 * 8

def train_flops_per_token(case, seq):
    """6 x (matmul weights, the tied embedding counted once as the LM head)
    + attention scores and mixing over the full T x T (computed, then masked):
    12 x layers x T x d (forward 4 T d, backward twice that)."""
    d, layers, ff = shape(case)
    matmul = layers * (4 * d * d + 3 * d * ff) + VOCAB * d
    return 6 * matmul + 12 * layers * seq * d

print()
print("float32 GEMM 2048^3 (torch.mm, OpenBLAS), best of 3 before each case: " +
      ", ".join(f"{p['gflops']:.1f} GFLOP/s per wall second, {p['cpu_gflops']:.1f} per CPU second at {t} thread(s)"
                for t, p in sorted(peak.items())))
print()
print("tok/s: each side's best run (per wall second, as the runtime reports it). Ratios: median (and range) of "
      "shammie / PyTorch over back-to-back pairs of runs, per wall second and per CPU second of the process (which "
      "discounts time the scheduler gave to other processes; meaningful at 1 thread).")
print("Training GFLOP/s = tokens/s x FLOP/token (6 x matmul parameters + 12 x layers x T x d); % of the GEMM peak "
      "per wall second (per CPU second in brackets, 1 thread).")
print()
print("| case | threads | parameters | shammie tok/s | PyTorch tok/s | shammie / PyTorch (wall) | (CPU) | "
      "shammie training GFLOP/s, % of peak | PyTorch, % of peak |")
print("|---|---|---|---|---|---|---|---|---|")
for (case, t, side), x in sorted(best.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))):
    if side != "shammie" or (case, t, "pytorch") not in best:
        continue
    y = best[(case, t, "pytorch")]
    xc, yc = best_cpu[(case, t, "shammie")], best_cpu[(case, t, "pytorch")]
    ratio, rw = paired(case, t, "tokens_per_second")
    ratio_cpu, rc = paired(case, t, "cpu_tokens_per_second")
    flops = " – | – |"
    if x["mode"] == "train":
        f = train_flops_per_token(case, x["seq"]) / 1e9
        def cell(w, c):
            s = f"{f * w:.1f}, {100 * f * w / peak[t]['gflops']:.0f}%"
            if t == 1:
                s += f" ({f * c:.1f}, {100 * f * c / peak[t]['cpu_gflops']:.0f}%)"
            return s
        flops = (f" {cell(x['tokens_per_second'], xc['cpu_tokens_per_second'])} |"
                 f" {cell(y['tokens_per_second'], yc['cpu_tokens_per_second'])} |")
    print(f"| {case} | {t} | {x['parameters']:,} | {x['tokens_per_second']:.0f} | {y['tokens_per_second']:.0f} | "
          f"**{ratio:.2f}×** ({rw[0]:.2f}–{rw[-1]:.2f}) | **{ratio_cpu:.2f}×** ({rc[0]:.2f}–{rc[-1]:.2f}) |{flops}")
print()
print("training losses (mean over the timed steps; same task, different random draws): " +
      ", ".join(f"{c}@{t} shammie {best[(c, t, 'shammie')]['loss']:.2f} / PyTorch {best[(c, t, 'pytorch')]['loss']:.2f}"
                for (c, t, s) in sorted(best) if s == "shammie" and best[(c, t, s)]["mode"] == "train"
                and (c, t, "pytorch") in best))
blas = {lib for r in rows for lib in r["result"].get("blas", [])}
print("BLAS mapped by both sides: " + ", ".join(sorted(blas)))
PY
