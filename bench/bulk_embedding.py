#!/usr/bin/env python3
"""Bulk extraction with one and two processes: ``voxprint embed --data`` alone, with a decode worker, and
under two ranks.

    .venv/bin/python bench/bulk_embedding.py [--utterances 400]

Embeds the first ``--utterances`` utterances of speechocean762 dev with the bundled model, once as one
process and once as two ranks (``RANK``/``WORLD_SIZE`` as torchrun sets them, each embedding half, rank 0
merging), each process on one torch thread; reports utterances/s, wall time included process start and
model loading. Writes docs/benchmarks.md, section "Bulk extraction".
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voxprint.data import read_data_folder
from voxprint.paths import data_root
from voxprint.report import format_table, publish_benchmark

SECTION = "Bulk extraction"


def run(data: Path, out: Path, world_size: int, decode_workers: int = 0) -> float:
    """Wall seconds of one `voxprint embed --data` run split over ``world_size`` processes, each decoding
    its audio in ``decode_workers`` worker processes (0: in the process itself)."""
    start = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-m", "voxprint", "embed", "--data", str(data), "--out", str(out),
                                   "--quiet", "--threads", "1", "--decode-workers", str(decode_workers)],
                                  env={**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size),
                                       "OMP_NUM_THREADS": "1"}) for rank in range(world_size)]
    if any(p.wait() != 0 for p in processes):
        raise SystemExit("an extraction process failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=400)
    args = parser.parse_args()
    dev = read_data_folder(data_root() / "speechocean762" / "dev")
    chosen = dev.utterances[:args.utterances]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "wav.scp").write_text("".join(f"{u} {dev.wav[u]}\n" for u in chosen))
        seconds = {(world, workers): run(data, Path(tmp) / f"emb{world}_{workers}.npz", world, workers)
                   for world, workers in ((1, 0), (1, 1), (2, 0))}
    for (world, workers), wall in seconds.items():
        rows.append([str(world), str(workers), f"{wall:.1f}", f"{len(chosen) / wall:.1f}",
                     f"{seconds[1, 0] / wall:.2f}x"])
    table = format_table(["processes (ranks)", "decode workers per rank", "wall time (s)", "utterances/s",
                          "speed vs 1 process"], rows)
    publish_benchmark(SECTION, ".venv/bin/python bench/bulk_embedding.py", "One torch thread per process.", [
        f"{len(chosen)} speechocean762 dev utterances embedded with the bundled model; wall time includes each",
        "process's start and model loading. Two processes are ranks as `torchrun --nproc_per_node 2 -m voxprint",
        "embed --data DIR --out FILE` starts them: each embeds every second utterance, rank 0 merges.",
        "A decode worker (`--decode-workers 1`) decodes, resamples and trims the audio in a spawned process",
        f"while the rank's own thread runs the model. The machine has {os.cpu_count()} cores; 2 ranks, or 1 rank",
        "and its worker, use two of them.",
    ], table)


if __name__ == "__main__":
    main()
