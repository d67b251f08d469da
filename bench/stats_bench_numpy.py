#!/usr/bin/python3
"""numpy/scipy peer for bench/stats_bench.cpp: the same estimators written the
way a researcher would (vectorized numpy, scipy.stats), on the same data.
Usage: stats_bench_numpy.py DATA_DIR  -> JSON on stdout"""
import json
import math
import sys
import time

import numpy as np
from scipy import stats

d = sys.argv[1]
y, f, fu = (np.fromfile(f"{d}/{k}.bin") for k in ("y", "f", "fu"))
s_lab, s_unl = np.fromfile(f"{d}/s_lab.bin"), np.fromfile(f"{d}/s_unl.bin")
losses = np.fromfile(f"{d}/losses.bin").reshape(1000, 10000)
losses_bool = losses != 0  # the binary losses as numpy's compact type (outside the timing)
alpha = 0.1
z = stats.norm.ppf(1 - alpha / 2)


def ppi_pp(y, f, fu):
    n, N = len(y), len(fu)
    vf = np.var(np.concatenate([f, fu]), ddof=1)
    lam = 0.0 if vf <= 0 else np.cov(y, f, ddof=1)[0, 1] / ((1 + n / N) * vf)
    lam = min(max(lam, 0.0), 1.0)
    est = lam * fu.mean() + (y - lam * f).mean()
    v = lam**2 * np.var(fu, ddof=1) / N + np.var(y - lam * f, ddof=1) / n
    return est, v


def run_ppi():
    est, v = ppi_pp(y, f, fu)
    return est, est - z * math.sqrt(v), est + z * math.sqrt(v)


def run_strat():
    est, var = 0.0, 0.0
    total = len(y) + len(fu)
    for s in range(5):
        ml, mu = s_lab == s, s_unl == s
        w = (ml.sum() + mu.sum()) / total
        e, v = ppi_pp(y[ml], f[ml], fu[mu])
        est += w * e
        var += w * w * v
    return est, est - z * math.sqrt(var), est + z * math.sqrt(var)


def h1(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a > 0, a * np.log(a / b), 0.0) + np.where(a < 1, (1 - a) * np.log((1 - a) / (1 - b)), 0.0)
    return out


def run_ltt(losses):
    n = losses.shape[1]
    r = losses.mean(axis=1)
    hoeff = np.exp(-n * h1(np.minimum(r, alpha), alpha))
    bentkus = np.minimum(1.0, np.e * stats.binom.cdf(np.ceil(n * r - 1e-9), n, alpha))
    p = np.minimum(hoeff, bentkus)
    fails = np.nonzero(p > 0.1)[0]
    valid = fails[0] if len(fails) else len(p)
    return int(valid), float(p.sum())


def best(fn, reps=5):
    t = 1e9
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - t0)
    return t, out


t_ppi, ppi = best(run_ppi)
t_strat, strat = best(run_strat)
t_ltt, (valid, psum) = best(lambda: run_ltt(losses))
t_bits, (valid_bits, psum_bits) = best(lambda: run_ltt(losses_bool))
print(json.dumps({"ppi_s": t_ppi, "strat_s": t_strat, "ltt_s": t_ltt, "ltt_bits_s": t_bits,
                  "ppi": list(map(float, ppi)), "strat": list(map(float, strat)), "ltt_valid": valid,
                  "ltt_p_sum": psum, "ltt_bits_valid": valid_bits, "ltt_bits_p_sum": psum_bits}))
