#!/usr/bin/python3
"""PyTorch eager peer for bench/lm_throughput.cpp: the runtime's transformer,
loss and optimizer step (workers/lm_model.cpp, workers/lm.cpp) written the way a PyTorch user would,
on batches of the same shape. Run with Debian's python3-torch (same 1.13 build
and BLAS as libtorch-dev).

Usage:
  lm_throughput_torch.py train --d D --layers N --heads H --length L --batch B --steps S --threads T [--warmup W] [--exact 1]
  lm_throughput_torch.py sample --d D --layers N --heads H --length L --batch B --rows R --new K --threads T
  lm_throughput_torch.py peak --n 2048 --threads T
Prints one line of JSON.

What is the same as the runtime: the model (pre-norm blocks, RMSNorm eps 1e-6,
rotate-half RoPE with base 10000, causal softmax attention with masked_fill
-inf, SwiGLU with hidden 8/3 d rounded up to 8, no biases, tied embedding, an
unused scalar score head), N(0, 0.02) weights, the masked cross-entropy on
answer positions normalised by the batch's answer tokens, linear warmup then
cosine learning rate, zero_grad, backward, global grad-norm clip 1.0, AdamW
(betas 0.9/0.95, weight decay 0.01, eps 1e-8, the 1.13 default single-tensor
loop, as in LibTorch), one optimizer step per batch, loss.item() per step.
What differs: batches of the copy task are drawn with torch.randint on the
whole [B, L] at once (the runtime draws each example through the task library,
keeps only train-split prompts, and fills the batch tensors element by
element); the runtime also computes per-example exact match (an argmax over
the logits) every step and evaluates 1 example at the end of its run; this
side does neither.

Generation (sample) mirrors lm::Generate (workers/lm_model.cpp) step for step:
prefill of the [B, L+2] prompts through the KV cache, then one token per
step with the cache grown by torch.cat, the padding-aware attention mask and
the rotary tables rebuilt from per-row positions (float64) at every step, and
float64 log-softmax for the tokens' log-probabilities. Greedy: the runtime
takes each row's argmax in a C++ loop, this side with one argmax over the
batch; both check for EOS every step.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, BOS, EOS = 0, 1, 2
CHARS = " 0123456789abcdefghijklmnopqrstuvwxyz+-*=>|,.()"
VOCAB = 3 + len(CHARS)
LETTER_A = 3 + CHARS.index("a")
ARROW = 3 + CHARS.index(">")


def parse(argv):
    mode, args = argv[1], {}
    for k, v in zip(argv[2::2], argv[3::2]):
        args[k.lstrip("-")] = int(v)
    return mode, args


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


def rope(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def linear(i, o):
    return nn.Linear(i, o, bias=False)


class Block(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.attn_norm = RMSNorm(d)
        self.wq, self.wk, self.wv, self.wo = linear(d, d), linear(d, d), linear(d, d), linear(d, d)
        self.mlp_norm = RMSNorm(d)
        self.w1, self.w3, self.w2 = linear(d, ff), linear(d, ff), linear(ff, d)

    def split(self, y, b, t):
        return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, cos, sin, mask, cache=None):
        b, t, d = x.shape
        h = self.attn_norm(x)
        q = rope(self.split(self.wq(h), b, t), cos, sin)
        k = rope(self.split(self.wk(h), b, t), cos, sin)
        v = self.split(self.wv(h), b, t)
        if cache is not None:  # generation: [k, v] of the positions so far
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[0], cache[1] = k, v
        att = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        if mask is not None:
            att = att.masked_fill(mask, float("-inf"))
        att = torch.softmax(att, -1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        out = x + self.wo(y)
        m = self.mlp_norm(out)
        return out + self.w2(F.silu(self.w1(m)) * self.w3(m))


class Transformer(nn.Module):
    def __init__(self, d, layers, heads, max_len, seed):
        super().__init__()
        ff = (8 * d // 3 + 7) // 8 * 8
        self.embed = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(Block(d, heads, ff) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.score_head = nn.Linear(d, 1)  # unused by LM training, as in the runtime
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "norm" in name:
                    continue
                if "bias" in name:
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02, generator=gen)
        half = d // heads // 2
        inv = 1.0 / torch.pow(10000.0, torch.arange(0, half, dtype=torch.float64) / half)
        self.inv_freq = inv

    def forward(self, tokens):
        t = tokens.size(1)
        mask = torch.ones(t, t, dtype=torch.bool).triu(1)
        angles = torch.arange(t).unsqueeze(0).double().unsqueeze(-1) * self.inv_freq  # as the runtime: per call
        cos, sin = angles.cos().float().unsqueeze(1), angles.sin().float().unsqueeze(1)
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        return self.norm(x)

    def forward_cached(self, tokens, positions, pad, cache):
        """lm::TransformerImpl::ForwardCached: cache = {"k": [...], "v": [...], "key_pad": tensor}."""
        b, t = tokens.shape
        past = 0 if cache["layers"][0][0] is None else cache["layers"][0][0].size(2)
        cache["key_pad"] = pad if past == 0 else torch.cat([cache["key_pad"], pad], 1)
        s = past + t
        causal = torch.ones(t, s, dtype=torch.bool).triu(past + 1).view(1, 1, t, s)
        key_pad = cache["key_pad"].view(b, 1, 1, s)
        query_real = pad.logical_not().view(b, 1, t, 1)
        mask = causal.logical_or(key_pad.logical_and(query_real))
        angles = positions.double().unsqueeze(-1) * self.inv_freq
        cos, sin = angles.cos().float().unsqueeze(1), angles.sin().float().unsqueeze(1)
        x = self.embed(tokens)
        for blk, layer_cache in zip(self.blocks, cache["layers"]):
            x = blk(x, cos, sin, mask, layer_cache)
        return self.norm(x)

    def logits(self, hidden):
        return torch.matmul(hidden, self.embed.weight.t())


def copy_batch(b, length, alphabet=8):
    """[B, 2L+2] input, target and answer mask of the copy task: BOS s > s EOS."""
    s = torch.randint(0, alphabet, (b, length)) + LETTER_A
    seq = torch.cat([torch.full((b, 1), BOS), s, torch.full((b, 1), ARROW), s, torch.full((b, 1), EOS)], 1)
    inp, tgt = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    mask = torch.zeros(inp.shape)
    mask[:, length + 1:] = 1
    return inp, tgt, mask


def learning_rate(step, steps, peak=3e-3, warmup=2, min_ratio=0.1):
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = peak * min_ratio
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def train(a):
    length, b, steps, warmup = a.get("length", 31), a.get("batch", 32), a.get("steps", 20), a.get("warmup", 2)
    exact = a.get("exact", 0)
    t = 2 * length + 2
    torch.manual_seed(1)

    def fresh():  # like the runtime: the warm-up and the timed run train models of their own
        model = Transformer(a.get("d", 128), a.get("layers", 5), a.get("heads", 4), t + 1, seed=1)
        params = list(model.parameters())
        return model, params, torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01)

    model, params, opt = fresh()

    def step(i, total):
        inp, tgt, mask = copy_batch(b, length)
        answer_tokens = int(mask.sum().item())
        for g in opt.param_groups:
            g["lr"] = learning_rate(i, total)
        opt.zero_grad()
        logits = model.logits(model(inp))
        ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), reduction="none")
        loss = (ce * mask.reshape(-1)).sum() / answer_tokens
        if exact:  # the runtime's per-step exact match (diagnostic: --exact 1)
            wrong = (logits.argmax(-1) != tgt).float() * mask
            (wrong.sum(-1) == 0)
        loss.backward()
        value = loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return value, inp.numel()

    for i in range(warmup):
        step(i, warmup)
    model, params, opt = fresh()
    t0, c0 = time.perf_counter(), time.process_time()
    tokens, loss_sum = 0, 0.0
    for i in range(steps):
        loss, n = step(i, steps)
        tokens += n
        loss_sum += loss
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"side": "pytorch", "mode": "train", "parameters": sum(p.numel() for p in params), "batch": b,
            "seq": t, "steps": steps, "threads": torch.get_num_threads(), "tokens_per_second": tokens / wall,
            "cpu_tokens_per_second": tokens / cpu,
            "wall_s": wall, "loss": loss_sum / steps, "exact": exact}


@torch.no_grad()
def generate(model, prompts, max_new):
    """lm::Generate with temperature 0 on equal-length prompts [B, P]: tokens and log-probs."""
    model.eval()
    b, p = prompts.shape
    pad = torch.zeros(b, p, dtype=torch.bool)
    positions = torch.arange(p).unsqueeze(0).expand(b, p)
    cache = {"layers": [[None, None] for _ in model.blocks], "key_pad": None}
    hidden = model.forward_cached(prompts, positions, pad, cache)
    logits = model.logits(hidden.select(1, p - 1)).float().contiguous()
    next_pos = torch.full((b, 1), p)
    done = torch.zeros(b, dtype=torch.bool)
    tokens, logprobs, alive = [], [], []
    for step in range(max_new):
        logp = torch.log_softmax(logits.double(), -1)
        nxt = logits.argmax(-1, keepdim=True)
        nxt = torch.where(done.unsqueeze(1), torch.zeros_like(nxt), nxt)
        alive.append(done.logical_not())
        tokens.append(nxt)
        logprobs.append(logp.gather(1, nxt))
        done = done | (nxt.squeeze(1) == EOS)
        if bool(done.all()) or step + 1 == max_new:
            break
        hidden = model.forward_cached(nxt, next_pos, torch.zeros(b, 1, dtype=torch.bool), cache)
        next_pos = next_pos + 1
        logits = model.logits(hidden.select(1, 0)).float().contiguous()
    return torch.cat(tokens, 1), torch.cat(logprobs, 1), int(torch.stack(alive).sum())


def sample(a):
    length, b, rows, new = a.get("length", 31), a.get("batch", 8), a.get("rows", 32), a.get("new", 64)
    torch.manual_seed(1)
    model = Transformer(a.get("d", 128), a.get("layers", 5), a.get("heads", 4), length + 2 + new, seed=1)

    def prompts(n):
        s = torch.randint(0, 8, (n, length)) + LETTER_A
        return torch.cat([torch.full((n, 1), BOS), s, torch.full((n, 1), ARROW)], 1)

    generate(model, prompts(b), new)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    generated = 0
    for i in range(0, rows, b):
        out, logprobs, n = generate(model, prompts(min(b, rows - i)), new)
        generated += n
        out.tolist(), logprobs.tolist()  # the runtime hands back per-row vectors
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"side": "pytorch", "mode": "sample", "parameters": sum(p.numel() for p in model.parameters()),
            "batch": b, "rows": rows, "prompt": length + 2, "new": new, "threads": torch.get_num_threads(),
            "generated": generated, "tokens_per_second": generated / wall, "cpu_tokens_per_second": generated / cpu,
            "wall_s": wall}


def peak(a):
    n = a.get("n", 2048)
    x, y = torch.randn(n, n), torch.randn(n, n)
    torch.mm(x, y)
    best, best_cpu = math.inf, math.inf
    for _ in range(a.get("reps", 5)):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(x, y)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return {"side": "pytorch", "mode": "peak", "n": n, "threads": torch.get_num_threads(), "best_s": best,
            "gflops": 2 * n**3 / best / 1e9, "cpu_gflops": 2 * n**3 / best_cpu / 1e9}


def blas_libraries():
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "blas" in line.lower() and "/" in line})


def blas_core():
    """OpenBLAS's kernel family in this process (the library torch loaded)."""
    import ctypes
    for lib in blas_libraries():
        if "openblas" in lib:
            f = ctypes.CDLL(lib).openblas_get_corename
            f.restype = ctypes.c_char_p
            return f().decode()
    return "not OpenBLAS"


def main():
    mode, a = parse(sys.argv)
    torch.set_num_threads(a.get("threads", 1))
    out = {"train": train, "sample": sample, "peak": peak}[mode](a)
    out["blas"] = blas_libraries()
    out["blas_core"] = blas_core()
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
