#!/usr/bin/env python3
"""How far apart are the layers a recursive conversion ties together?

Reads a vanilla model's shammie checkpoint (CHECKPOINTS/<job id>.ckpt of an
lm.train job) and, for CYCLE tying into K = layers / loops shared layers,
prints per projection:
  - the cosine between the weights of the layers tied to each shared layer;
  - the residual energy sum_l ||W_l - W_shared(l)||_F^2 / sum_l ||W_l||_F^2
    of Stepwise and Average initialisation (docs/experiments/recursive.md),
    and what is left of it after the rank-r truncated SVD that initialises
    the depth-wise LoRA (Eckart-Young: the tail singular values squared).
Average minimises the residual energy of each tied group, so its rank-0
column never exceeds Stepwise's.

Needs Debian's python3-torch (the checkpoint's model is a LibTorch archive).
  python3 scripts/tied_residuals.py runs/recursive/checkpoints/ID.ckpt --loops 2 --ranks 2,8,32
"""
import argparse
import io
import json
import sys

import torch

MAGIC = b"SHMCKPT1"
PROJECTIONS = ["wq", "wk", "wv", "wo", "w1", "w3", "w2"]


def _varint(b, i):
    v, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def _string(b, i):
    n, i = _varint(b, i)
    return b[i:i + n], i + n


def load(path):
    """(metadata, {parameter name: tensor}) of a checkpoint (workers/lm_model.cpp, SerializeCheckpoint)."""
    b = open(path, "rb").read()
    if b[:len(MAGIC)] != MAGIC:
        raise ValueError(f"{path}: not a shammie checkpoint")
    meta, i = _string(b, len(MAGIC))
    meta = json.loads(meta)
    i += 16  # best_val, window_loss
    n, i = _varint(b, i)
    for _ in range(n):  # metrics: name, step, value
        _, i = _string(b, i)
        i += 16
    model, i = _string(b, i)
    return meta, dict(torch.jit.load(io.BytesIO(model)).state_dict())


def stepwise_sources(layers, k):
    # round(linspace(0, L - 1, K)) with halves to even, as Python rounds.
    return [round(x) for x in torch.linspace(0, layers - 1, k, dtype=torch.float64).tolist()]


def report(meta, params, loops, ranks):
    m = meta["model"]
    if m.get("loops", 1) != 1 or m.get("block_length", 0) != 0:
        raise ValueError("give the checkpoint of a vanilla model (loops = 1)")
    layers = m["layers"]
    if layers % loops:
        raise ValueError(f"loops ({loops}) must divide layers ({layers})")
    k = layers // loops
    src = stepwise_sources(layers, k)
    rows = []
    for name in PROJECTIONS:
        w = [params[f"block{l}.{name}.weight"].double() for l in range(layers)]
        total = sum(float(x.pow(2).sum()) for x in w)
        cos = []
        for g in range(k):
            group = list(range(g, layers, k))  # CYCLE: block g runs at positions g, g + K, ...
            for a in range(len(group)):
                for b in range(a + 1, len(group)):
                    x, y = w[group[a]], w[group[b]]
                    cos.append(float((x * y).sum() / (x.norm() * y.norm())))
        shared = {"stepwise": [w[src[g]] for g in range(k)],
                  "average": [torch.stack(w[g::k]).mean(0) for g in range(k)]}
        left = {}
        for init in ("stepwise", "average"):
            acc = [0.0] * (len(ranks) + 1)
            for l in range(layers):
                s2 = torch.linalg.svdvals(w[l] - shared[init][l % k]).pow(2)
                acc[0] += float(s2.sum())
                for j, r in enumerate(ranks):
                    acc[j + 1] += float(s2[r:].sum())
            left[init] = [a / total for a in acc]
        rows.append({"projection": name, "tied_cosines": cos, "stepwise": left["stepwise"], "average": left["average"]})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--loops", type=int, default=2)
    p.add_argument("--ranks", default="2,8,32", help="LoRA ranks, comma-separated")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = p.parse_args()
    ranks = [int(r) for r in a.ranks.split(",") if r]
    try:
        meta, params = load(a.checkpoint)
        rows = report(meta, params, a.loops, ranks)
    except (OSError, ValueError, KeyError) as e:
        print(f"tied_residuals: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"ranks": ranks, "rows": rows}))
        return 0
    head = "left after rank " + "/".join(str(r) for r in ranks)
    print(f"{'proj':<5} {'tied cosines':<24} {'stepwise':>9} {'average':>9}   {head}: stepwise | average")
    for r in rows:
        cos = " ".join(f"{c:+.2f}" for c in r["tied_cosines"])
        tail = " ".join(f"{x:.2f}" for x in r["stepwise"][1:]) + " | " + " ".join(f"{x:.2f}" for x in r["average"][1:])
        print(f"{r['projection']:<5} {cos:<24} {r['stepwise'][0]:9.2f} {r['average'][0]:9.2f}   {tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
