#!/usr/bin/env bash
# Dispatch speed of `shammie run` against Dask distributed, GNU parallel and
# a bare MPI ping-pong, on this machine, in one run (docs/benchmarks.md).
# Usage: bench/run_dispatch.sh [BUILD_DIR] [N_NOOP_JOBS]
# Needs: python3-distributed and parallel (Debian), a built tree.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
n=${2:-100000}
shammie=$build/orchestrator/shammie
work=$(mktemp -d /tmp/shammie-dispatch.XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
py=/usr/bin/python3
cores=$(nproc)
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

noop_spec() {  # name jobs
  printf '[experiment]\nname = "%s"\n[[stage]]\nname = "noop"\nkind = "bench.noop"\nsweep = { seeds = %d }\n' "$1" "$2"
}
field() { sed -n "s/.*$1 \([0-9.e+-]*\).*/\1/p" | head -1; }

# shammie: N no-op jobs on the default ranks (cores + 1), end to end and the jobs phase.
noop_spec noop "$n" > "$work/noop.toml"
start=$(date +%s.%N)
out=$("$shammie" run "$work/noop.toml" --out "$work/noop" --progress none)
end=$(date +%s.%N)
jobs_s=$(echo "$out" | sed -n 's/.*timing: jobs \([0-9.]*\) s.*/\1/p')
results_s=$(echo "$out" | sed -n 's/.*results.h5 \([0-9.]*\) s.*/\1/p')
shammie_tp=$(echo "$n / $jobs_s" | bc -l)
wall=$(echo "$end - $start" | bc -l)
printf 'shammie: %d no-op jobs, %d ranks: jobs phase %.3f s (%.0f jobs/s), results.h5 %.3f s, whole command %.2f s (%.0f jobs/s)\n' \
  "$n" "$((cores + 1))" "$jobs_s" "$shammie_tp" "$results_s" "$wall" "$(echo "$n / $wall" | bc -l)"

# Controller cost per job at 1, 2 and 4 workers.
m=$((n / 5))
noop_spec noop-small "$m" > "$work/small.toml"
for w in 1 2 4; do
  out=$("$shammie" run "$work/small.toml" --out "$work/small-$w" --ranks $((w + 1)) --progress none)
  js=$(echo "$out" | sed -n 's/.*timing: jobs \([0-9.]*\) s.*/\1/p')
  cpu=$(echo "$out" | sed -n 's/.*controller CPU while jobs ran \([0-9.e+-]*\) s.*/\1/p')
  printf 'shammie: %d workers: %.2f us wall per job (%.0f jobs/s), controller CPU %.2f us per job\n' \
    "$w" "$(echo "$js * 1000000 / $m" | bc -l)" "$(echo "$m / $js" | bc -l)" "$(echo "$cpu * 1000000 / $m" | bc -l)"
done

# Latency: a chain of dependent no-op jobs (no batching can help).
chain=300
{
  printf '[experiment]\nname = "chain"\n'
  for i in $(seq 1 $chain); do
    printf '[[stage]]\nname = "s%d"\nkind = "bench.noop"\n' "$i"
    [ "$i" -gt 1 ] && printf 'depends_on = ["s%d"]\n' $((i - 1))
  done
} > "$work/chain.toml"
out=$("$shammie" run "$work/chain.toml" --out "$work/chain" --progress none)
cs=$(echo "$out" | sed -n 's/.*timing: jobs \([0-9.]*\) s.*/\1/p')
chain_us=$(echo "$cs * 1000000 / $chain" | bc -l)
printf 'shammie: chain of %d dependent jobs: %.1f us per job\n' "$chain" "$chain_us"

# Ingest: metric points into the journal and into results.h5.
printf '[experiment]\nname = "ingest"\n[[stage]]\nname = "q"\nkind = "toy.quadratic"\nconfig = { steps = 1000000, eval_every = 1 }\nsweep = { seeds = 8 }\n' > "$work/ingest.toml"
out=$("$shammie" run "$work/ingest.toml" --out "$work/ingest" --progress none)
pts=$(echo "$out" | sed -n 's/.*; \([0-9]*\) metric points.*/\1/p')
ijs=$(echo "$out" | sed -n 's/.*timing: jobs \([0-9.]*\) s.*/\1/p')
irs=$(echo "$out" | sed -n 's/.*results.h5 \([0-9.]*\) s.*/\1/p')
printf 'shammie: %d metric points: received and journaled while jobs ran %.3f s; results.h5 written in %.3f s (%.2f M points/s)\n' \
  "$pts" "$ijs" "$irs" "$(echo "$pts / $irs / 1000000" | bc -l)"

# The floor: a bare MPI round trip between two ranks.
rtt=$(mpirun -np 2 --oversubscribe --bind-to none "$build/bench/mpi_pingpong" 200000 64 | field round_trip_us)
printf 'MPI ping-pong (64 B): %.3f us per round trip\n' "$rtt"

# Dask distributed: same number of worker processes.
dask_m=$((n / 5))
dask=$("$py" "$root/bench/dask_noop.py" "$dask_m" "$cores" "$chain" 2>/dev/null)
dask_tp=$(echo "$dask" | field dask_throughput_jobs_per_s)
dask_chain=$(echo "$dask" | field dask_chain_us_per_job)
printf 'Dask distributed: %d no-op tasks on %d worker processes: %.0f tasks/s; chain: %.1f us per task\n' \
  "$dask_m" "$cores" "$dask_tp" "$dask_chain"

# GNU parallel: one process per job.
pm=3000
start=$(date +%s.%N)
seq $pm | parallel -j "$cores" true
end=$(date +%s.%N)
par_tp=$(echo "$pm / ($end - $start)" | bc -l)
printf 'GNU parallel: %d `true` jobs with -j %d: %.0f jobs/s\n' "$pm" "$cores" "$par_tp"

echo
printf 'ratios: shammie throughput / Dask = %.0fx; / GNU parallel = %.0fx; shammie time per job / MPI round trip = %.1fx (throughput), %.1fx (chain latency); Dask chain / shammie chain = %.0fx\n' \
  "$(echo "$shammie_tp / $dask_tp" | bc -l)" "$(echo "$shammie_tp / $par_tp" | bc -l)" \
  "$(echo "1000000 / $shammie_tp / $rtt" | bc -l)" "$(echo "$chain_us / $rtt" | bc -l)" \
  "$(echo "$dask_chain / $chain_us" | bc -l)"
