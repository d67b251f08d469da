#!/usr/bin/python3
"""Independent reference for shammie's statistics, written from the papers'
formulas with numpy/scipy (PAPERS.md §0.1, §3, §6; LTT). Reads a JSON list of
cases on stdin, writes a JSON list of results on stdout. Used by
tests/analysis/reference_test.cpp, which compares to 1e-9 relative."""
import json
import math
import sys

import numpy as np
from scipy import stats


def var(x):
    return float(np.var(np.asarray(x, dtype=float), ddof=1))


def cov(x, y):
    return float(np.cov(np.asarray(x, float), np.asarray(y, float), ddof=1)[0, 1])


def z(alpha):
    return float(stats.norm.ppf(1 - alpha / 2))


def classical(c):
    y = np.asarray(c["y"], float)
    est = float(y.mean())
    se = math.sqrt(var(y) / len(y))
    return {"estimate": est, "lower": est - z(c["alpha"]) * se, "upper": est + z(c["alpha"]) * se}


def tuned_lambda(y, f, fu, clip):
    pooled = np.concatenate([f, fu])
    vf = var(pooled)
    if vf <= 0:
        return 0.0
    lam = cov(y, f) / ((1 + len(y) / len(fu)) * vf)
    return min(max(lam, 0.0), 1.0) if clip else lam


def ppi(c):
    y, f, fu = (np.asarray(c[k], float) for k in ("y", "f", "fu"))
    mode = c["mode"]
    lam = c.get("lambda", 1.0) if mode == "fixed" else tuned_lambda(y, f, fu, mode == "clip")
    est = lam * fu.mean() + (y - lam * f).mean()
    v = lam**2 * var(fu) / len(fu) + var(y - lam * f) / len(y)
    se = math.sqrt(v)
    return {"estimate": float(est), "lower": float(est - z(c["alpha"]) * se), "upper": float(est + z(c["alpha"]) * se),
            "lambda": float(lam), "effective_n": var(y) / v}


def stratppi(c):
    est, v = 0.0, 0.0
    lams = []
    for s in c["strata"]:
        r = ppi({"y": s["y"], "f": s["f"], "fu": s["fu"], "alpha": c["alpha"], "mode": c["mode"]})
        se = (r["upper"] - r["estimate"]) / z(c["alpha"])
        est += s["w"] * r["estimate"]
        v += s["w"] ** 2 * se**2
        lams.append(r["lambda"])
    se = math.sqrt(v)
    return {"estimate": est, "lower": est - z(c["alpha"]) * se, "upper": est + z(c["alpha"]) * se, "lambdas": lams}


def h1(a, b):
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def ltt(c):
    n, alpha = c["n"], c["alpha"]
    out = []
    for r in c["risks"]:
        hoeff = math.exp(-n * h1(min(r, alpha), alpha))
        k = math.ceil(n * r - 1e-9)
        bentkus = min(1.0, math.e * float(stats.binom.cdf(k, n, alpha)))
        out.append({"hoeffding": hoeff, "bentkus": bentkus, "hb": min(hoeff, bentkus)})
    return {"p": out, "binomial": [float(stats.binom.cdf(k, n, alpha)) for k in c["failures"]]}


def chain_rule_mean(c):
    """Exact posterior mean of the chain-rule model with Dirichlet(prior) cells."""
    a_lab, h, a_unl, prior = c["a"], c["h"], c["au"], c["prior"]
    cats = sorted(set(a_lab) | set(a_unl))
    vals = sorted(set(h) | ({0.0, 1.0} if all(v in (0, 1) for v in h) else set()))
    counts = {a: a_lab.count(a) + a_unl.count(a) for a in cats}
    total = sum(counts.values()) + prior * len(cats)
    mean = 0.0
    for a in cats:
        hs = [hv for av, hv in zip(a_lab, h) if av == a]
        row = len(hs) + prior * len(vals)
        cond = sum(v * (hs.count(v) + prior) / row for v in vals)
        mean += (counts[a] + prior) / total * cond
    return {"posterior_mean": mean}


def seeds(c):
    x = np.asarray(c["x"], float)
    m = float(x.mean())
    h = float(stats.t.ppf(1 - c["alpha"] / 2, len(x) - 1)) * math.sqrt(var(x) / len(x))
    return {"mean": m, "lower": m - h, "upper": m + h}


def allocation(c):
    """Largest-remainder split after a minimum per stratum."""
    shares = []
    for s in c["strata"]:
        if c["kind"] == "optimal":
            lam = tuned_lambda(np.asarray(s["y"], float), np.asarray(s["f"], float), np.asarray(s["fu"], float), True)
            shares.append(s["w"] * math.sqrt(var(np.asarray(s["y"]) - lam * np.asarray(s["f"]))))
        else:
            shares.append(s["w"])
    k, m = len(shares), c["min"]
    rest = c["budget"] - k * m
    ideal = [rest * s / sum(shares) for s in shares]
    out = [m + math.floor(i) for i in ideal]
    order = sorted(range(k), key=lambda i: -(ideal[i] - math.floor(ideal[i])))
    for i in range(rest - sum(math.floor(i) for i in ideal)):
        out[order[i % k]] += 1
    return {"allocation": out}


HANDLERS = {"classical": classical, "ppi": ppi, "stratppi": stratppi, "ltt": ltt, "chain_rule": chain_rule_mean,
            "seeds": seeds, "allocation": allocation}

cases = json.load(sys.stdin)
json.dump([HANDLERS[c["type"]](c) for c in cases], sys.stdout)
