"""PyTorch CPU reference for fedweave's BenchmarkTrainStep* benchmarks (package models).

Times one training step (forward, cross-entropy loss, backward, Adam step with
lr 0.003) at batch 64, float32, 2 threads, for the three encoders that mirror the
Go models (text, image, tabular), each followed by Linear(32, K).

Run (Debian's python3-torch, not a pyenv python):
    /usr/bin/python3 models/testdata/torch_bench.py [--json FILE] [--seconds 3]
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

B, EMB = 64, 32


class Text(nn.Module):
    def __init__(self, vocab=2048, seq=24, conv=48, att=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, EMB)
        self.conv = nn.Conv1d(EMB, conv, 3, padding=1)
        self.att_u = nn.Linear(conv, att)
        self.att_s = nn.Linear(att, 1, bias=False)
        self.out = nn.Linear(conv, EMB)

    def forward(self, ids):
        h = F.relu(self.conv(self.emb(ids).permute(0, 2, 1))).permute(0, 2, 1)  # [B, T, 48]
        s = self.att_s(torch.tanh(self.att_u(h))).squeeze(-1)  # [B, T]
        s = s + (ids == 0).to(s.dtype) * -30.0
        alpha = torch.softmax(s, dim=1)
        pooled = (alpha.unsqueeze(-1) * h).sum(dim=1)  # [B, 48]
        return F.relu(self.out(pooled))


class Image(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, EMB)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return F.relu(self.fc(x.flatten(1)))


class Tabular(nn.Module):
    def __init__(self, d=6, hidden=64):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("mean", torch.randn(d, generator=g))
        self.register_buffer("std", torch.rand(d, generator=g) + 0.5)
        self.l1 = nn.Linear(d, hidden)
        self.l2 = nn.Linear(hidden, EMB)

    def forward(self, x):
        x = (x - self.mean) / self.std
        return F.relu(self.l2(F.relu(self.l1(x))))


def text_input():
    ids = torch.randint(1, 2048, (B, 24))
    for r, n in enumerate(torch.randint(0, 9, (B,)).tolist()):
        if n:
            ids[r, -n:] = 0
    return ids


MODELS = [  # name, encoder, classes, input
    ("text", Text, 4, text_input),
    ("image", Image, 10, lambda: torch.rand(B, 1, 28, 28)),
    ("tabular", Tabular, 4, lambda: torch.randn(B, 6)),
]


def bench(encoder, k, x, seconds, repeats=5, warmup=20):
    model = nn.Sequential(encoder, nn.Linear(EMB, k))
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    y = torch.randint(0, k, (B,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    rates, per = [], seconds / repeats
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < per:
            step()
            n += 1
        rates.append(n / dt)
    return statistics.median(rates), rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per model")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": B, "models": {}}
    for name, enc, k, make_input in MODELS:
        sps, rates = bench(enc(), k, make_input(), args.seconds)
        r = {"steps_per_sec": sps, "samples_per_sec": sps * B, "ms_per_step": 1000.0 / sps,
             "repeat_steps_per_sec": [round(x, 2) for x in rates]}
        results["models"][name] = r
        print(f"{name} samples_per_sec={r['samples_per_sec']:.0f} ms_per_step={r['ms_per_step']:.3f}", flush=True)
    results["loadavg"] = os.getloadavg()  # other work on the 2 cores skews everything
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
