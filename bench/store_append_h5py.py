#!/usr/bin/python3
"""Peer for bench/store_append.cpp: the same workload written with h5py.

mode 'naive': resize + write on every batch (how one logs to HDF5 by hand).
mode 'buffered': keep points in memory and write whole 4096-point chunks, the
same strategy as shammie's store, so the ratio measures the implementation.
Usage: store_append_h5py.py OUT.h5 MODE [RUNS METRICS STEPS BATCH]"""
import os
import sys
import time

import h5py
import numpy as np

path, mode = sys.argv[1], sys.argv[2]
runs, metrics, steps, batch = (int(x) for x in (sys.argv[3:7] or [100, 4, 10000, 50]))
CHUNK = 4096
dtype = np.dtype([("step", "<i8"), ("value", "<f8")])
if os.path.exists(path):
    os.remove(path)

t0 = time.perf_counter()
f = h5py.File(path, "w")
datasets = {}
buffers = {}
for r in range(runs):
    g = f.create_group(f"runs/run{r}")
    for m in range(metrics):
        datasets[(r, m)] = g.create_dataset(f"metrics/m{m}", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(CHUNK,))
        buffers[(r, m)] = []


def append(ds, arr):
    n = ds.shape[0]
    ds.resize((n + len(arr),))
    ds[n:] = arr


for s0 in range(0, steps, batch):
    for r in range(runs):
        for m in range(metrics):
            arr = np.empty(batch, dtype=dtype)
            arr["step"] = np.arange(s0, s0 + batch)
            arr["value"] = 1.0 / (1 + s0 + np.arange(batch) + r + m)
            if mode == "naive":
                append(datasets[(r, m)], arr)
            else:
                buffers[(r, m)].append(arr)
                if sum(len(a) for a in buffers[(r, m)]) >= CHUNK:
                    append(datasets[(r, m)], np.concatenate(buffers[(r, m)]))
                    buffers[(r, m)] = []
for key, parts in buffers.items():
    if parts:
        append(datasets[key], np.concatenate(parts))
f.close()
t1 = time.perf_counter()

checksum = 0.0
with h5py.File(path, "r") as f:
    for r in range(runs):
        for m in range(metrics):
            checksum += float(np.sum(f[f"runs/run{r}/metrics/m{m}"]["value"]))
t2 = time.perf_counter()
print(f"h5py-{mode} write_s={t1 - t0:.3f} read_s={t2 - t1:.3f} points={runs * metrics * steps} checksum={checksum:.9f}")
