#!/usr/bin/env python3
"""Bulk extraction with one and two processes: ``voxprint embed --data`` alone, with a decode worker, under
two ranks, and on two threads.

    .venv/bin/python bench/bulk_embedding.py [--utterances 400]

Embeds the first ``--utterances`` utterances of speechocean762 dev with the bundled model, once as one
process and once as two ranks (``RANK``/``WORLD_SIZE`` as torchrun sets them, each embedding half, rank 0
merging), each process on one torch thread, and once as one process on two threads; reports utterances/s,
wall time included process start and model loading. Writes docs/benchmarks.md, section "Bulk extraction".
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
from voxprint.inference.windows import CPU_PADDED_FRAMES, PAD_FRACTION
from voxprint.paths import data_root
from voxprint.report import format_table, publish_benchmark

SECTION = "Bulk extraction"


def run(data: Path, out: Path, world_size: int, decode_workers: int = 0, threads: int = 1) -> float:
    """Wall seconds of one `voxprint embed --data` run split over ``world_size`` processes, each decoding
    its audio in ``decode_workers`` worker processes (0: in the process itself) and running the model on
    ``threads`` torch threads."""
    start = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-m", "voxprint", "embed", "--data", str(data), "--out", str(out),
                                   "--quiet", "--threads", str(threads), "--decode-workers", str(decode_workers)],
                                  env={**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size),
                                       "OMP_NUM_THREADS": str(threads)}) for rank in range(world_size)]
    if any(p.wait() != 0 for p in processes):
        raise SystemExit("an extraction process failed")
    return time.perf_counter() - start


def encoder_calls(files: list[str], repeats: int = 5) -> list[list[str]]:
    """x real time of the bundled model's windows in this process (audio decoded beforehand): one encoder
    call per recording on one and two threads, and shared padded calls on two. The ways take turns, run
    after run (this machine's speed drifts with other jobs), and each reports its median run."""
    import statistics

    import torch

    import voxprint
    from voxprint.audio import load_audio

    waves = [load_audio(f) for f in files]
    seconds = sum(len(w) for w in waves) / 16000
    model = voxprint.load_model("default").optimize()  # the traces `embed --data` runs
    ways = [(1, 0.0, "one call per recording"), (2, 0.0, "one call per recording"),
            (2, None, "shared padded calls (the default on several threads)")]
    embedder = model.windows
    default_fraction = embedder.pad_fraction
    speeds: dict[int, list[float]] = {index: [] for index in range(len(ways))}
    for run in range(repeats + 1):  # the first run of each way warms it up (and makes the padded trace)
        for index, (threads, pad_fraction, _) in enumerate(ways):
            torch.set_num_threads(threads)
            embedder.pad_fraction = default_fraction if pad_fraction is None else pad_fraction
            start = time.perf_counter()
            embedder.embed_many(waves)
            if run:
                speeds[index].append(seconds / (time.perf_counter() - start))
    torch.set_num_threads(1)
    return [[str(threads), label, f"{statistics.median(speeds[index]):.0f}x"]
            for index, (threads, _, label) in enumerate(ways)]


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
        seconds = {(world, workers, threads): run(data, Path(tmp) / f"emb{world}_{workers}_{threads}.npz", world,
                                                  workers, threads)
                   for world, workers, threads in ((1, 0, 1), (1, 1, 1), (2, 0, 1), (1, 0, 2))}
    for (world, workers, threads), wall in seconds.items():
        rows.append([str(world), str(workers), str(threads), f"{wall:.1f}", f"{len(chosen) / wall:.1f}",
                     f"{seconds[1, 0, 1] / wall:.2f}x"])
    table = format_table(["processes (ranks)", "decode workers per rank", "torch threads per rank", "wall time (s)",
                          "utterances/s", "speed vs 1 process"], rows)
    calls = format_table(["torch threads", "encoder calls", "x real time"],
                         encoder_calls([dev.wav[u] for u in chosen[:96]]))
    publish_benchmark(SECTION, ".venv/bin/python bench/bulk_embedding.py", "Torch threads per process as the table says.", [
        f"{len(chosen)} speechocean762 dev utterances embedded with the bundled model; wall time includes each",
        "process's start and model loading. Two processes are ranks as `torchrun --nproc_per_node 2 -m voxprint",
        "embed --data DIR --out FILE` starts them: each embeds every second utterance, rank 0 merges.",
        "A decode worker (`--decode-workers 1`) decodes, resamples and trims the audio in a spawned process",
        f"while the rank's own thread runs the model. The machine has {os.cpu_count()} cores; 2 ranks, 1 rank",
        "and its worker, or 1 rank on 2 threads use two of them. On several threads, recordings of different",
        f"lengths share encoder calls, zero-padded (at most {100 * PAD_FRACTION:.0f} % padding, "
        f"{CPU_PADDED_FRAMES:,} frames a call; ECAPA-TDNN",
        "leaves the padding out of every convolution and mean, so each embedding is its unpadded one), since",
        "larger calls spread better over threads (on one thread they do not pay). The second table times the model alone",
        "(features, windows, encoder; 96 recordings decoded beforehand; the ways take turns, median of 5 runs)",
        "with each way of calling it.",
    ], table + "\n" + calls)


if __name__ == "__main__":
    main()
