"""Dask distributed's dispatch speed on this machine, for bench/run_dispatch.sh.

A local cluster of worker processes (one thread each), like shammie's ranks:
- throughput: client.map of a no-op over N items, then gather;
- latency: a chain of C tasks, each depending on the previous one.
Run with Debian's /usr/bin/python3 (python3-distributed).
"""
import sys
import time

from dask.distributed import Client, LocalCluster


def noop(i):
    return None


def link(prev, i):
    return i


def main():
    n = int(sys.argv[1])
    workers = int(sys.argv[2])
    chain = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(noop, range(200), pure=False))  # warm-up
        start = time.perf_counter()
        client.gather(client.map(noop, range(n), pure=False))
        seconds = time.perf_counter() - start
        print(f"dask_throughput_jobs_per_s {n / seconds:.1f}")
        start = time.perf_counter()
        x = None
        for i in range(chain):
            x = client.submit(link, x, i, pure=False)
        x.result()
        print(f"dask_chain_us_per_job {(time.perf_counter() - start) / chain * 1e6:.1f}")


if __name__ == "__main__":
    main()
