#!/usr/bin/env python3
"""How torch's thread count changes speed, on an idle machine and next to a busy process.

    .venv/bin/python bench/threads.py [--utterances 40] [--steps 6]

For 1 thread and for every usable core (torch's own default), each in a fresh process, measures
(a) embedding real speechocean762 dev utterances with the bundled model (its frozen encoder, as
``voxprint embed`` runs it) and (b) training steps of the bundled ECAPA-TDNN configuration
(forward + backward + SGD on a 16 x 2 batch of 2 s crops, features included). Each is run on an idle
machine and with one busy competitor (a pure-Python loop holding a core, as another job would). This
is what sets the CLI's default (`--threads`: half the usable cores). Writes docs/benchmarks.md,
section "Threads".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from voxprint.report import format_table, publish_benchmark

SECTION = "Threads"
REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
import torch
threads, utterances, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
import voxprint
from voxprint.config import load_config
from voxprint.data import read_data_folder
from voxprint.models import build_embedding_model
from voxprint.paths import data_root
from voxprint.training.trainer import build_loss

dev = read_data_folder(data_root() / "speechocean762" / "dev")
paths = [dev.wav[u] for u in dev.utterances[:utterances]]
model = voxprint.load_model("default").optimize()
model.extract_embeddings(paths[:4])
start = time.perf_counter()
model.extract_embeddings(paths)
embed_seconds = time.perf_counter() - start

config = load_config(sys.argv[4])
torch.manual_seed(0)
net = build_embedding_model(config).train()
loss = build_loss(config, net.encoder.embedding_dim, 100)
optimizer = torch.optim.SGD(list(net.parameters()) + list(loss.parameters()), lr=0.01)
waves = torch.randn(32, 32000) * 0.1
labels = torch.arange(16).repeat_interleave(2)

def step():
    optimizer.zero_grad()
    loss(net(waves), n_speakers=16, labels=labels).backward()
    optimizer.step()

step()
start = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"embed_seconds": embed_seconds, "step_seconds": (time.perf_counter() - start) / steps}))
"""

BUSY = "while True: pass"


def measure(threads: int, busy: bool, utterances: int, steps: int) -> dict:
    competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(utterances), str(steps),
                               str(REPO / "configs" / "ecapa_tdnn_c192.yaml")],
                              capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    results = {}
    for busy in (False, True):
        for threads in sorted({1, cores}):
            results[threads, busy] = measure(threads, busy, args.utterances, args.steps)
            print(threads, busy, results[threads, busy], flush=True)
    rows = []
    for (threads, busy), r in results.items():
        base = results[1, busy]
        rows.append([str(threads) + (" (torch default)" if threads == cores else ""),
                     "one busy competitor" if busy else "idle",
                     f"{r['embed_seconds']:.2f}", f"{base['embed_seconds'] / r['embed_seconds']:.2f}x",
                     f"{r['step_seconds']:.2f}", f"{base['step_seconds'] / r['step_seconds']:.2f}x"])
    table = format_table(["torch threads", "machine", f"embed {args.utterances} dev utterances (s)",
                          "speed vs 1 thread", "ECAPA training step (s)", "speed vs 1 thread"], rows)
    publish_benchmark(SECTION, ".venv/bin/python bench/threads.py", "", [
        "Each cell is a fresh process. The busy competitor is a pure-Python loop holding one core, as any",
        "other job would. torch's default uses every core; when one of them is taken, its threads wait for",
        "each other at every operation. The CLI therefore defaults to half the usable cores (`--threads`",
        "or `VOXPRINT_THREADS` override it), and the test suite runs on one thread.",
    ], table)


if __name__ == "__main__":
    main()
