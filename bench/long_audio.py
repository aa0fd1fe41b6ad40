#!/usr/bin/env python3
"""Peak memory of embedding long recordings with the bundled model: bounded windows vs all at once.

    .venv/bin/python bench/long_audio.py [--minutes 10 60 180]

Builds a 16 kHz 16-bit WAV of each duration from real speechocean762 training speech (utterances
repeated end to end), then, in a fresh process per measurement on one torch thread, loads the default
model and embeds the file with ``extract_embedding``. Reports the process's peak resident memory
(``ru_maxrss``), its resident memory after loading the model (the floor), the waveform's own size and
the speed. The "all windows at once" row reproduces the behaviour before windows were batched (every
window in one encoder call, features in one front-end call) on the shortest duration only: at one
hour it needed about 10 GB. Writes docs/benchmarks.md, section "Long recordings: peak memory".
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from voxprint.audio import load_audio
from voxprint.data import read_data_folder
from voxprint.paths import data_root
from voxprint.report import format_table, publish_benchmark

SECTION = "Long recordings: peak memory"
RATE = 16000

# Runs in a fresh interpreter so each peak is its own; prints one JSON line.
CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
import voxprint
from voxprint.inference import SlidingWindowEmbedder
path, unbounded = sys.argv[1], sys.argv[2] == "1"
model = voxprint.load_model("default")
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if unbounded:
    wave = model.load_waveform(path)
    SlidingWindowEmbedder(model.model, model.window_frames, model.overlap, batch_frames=10**12,
                          chunk_seconds=1e9)(wave).utterance_embedding()
else:
    model.extract_embedding(path)
seconds = time.perf_counter() - start
print(json.dumps({"floor_kib": floor, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": seconds}))
"""


def build_recording(minutes: float, path: Path) -> None:
    """Real speech repeated to ``minutes``, written block by block (never whole in memory)."""
    folder = read_data_folder(data_root() / "speechocean762" / "train")
    speech = np.concatenate([load_audio(folder.wav[u]) for u in folder.utterances[:200]])
    total = int(minutes * 60 * RATE)
    with soundfile.SoundFile(path, "w", samplerate=RATE, channels=1, subtype="PCM_16") as out:
        written = 0
        while written < total:
            piece = speech[: total - written]
            out.write(piece)
            written += len(piece)


def measure(path: Path, unbounded: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if unbounded else "0"],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 180])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, minutes in enumerate(sorted(args.minutes)):
            path = Path(tmp) / f"{minutes:g}min.wav"
            build_recording(minutes, path)
            runs = [("bounded (16,384 frames per encoder call, features 60 s at a time)", False)]
            if index == 0:
                runs.append(("all windows at once (before)", True))
            for label, unbounded in runs:
                result = measure(path, unbounded)
                peak, floor = result["peak_kib"] / 1024, result["floor_kib"] / 1024
                wave_mib = minutes * 60 * RATE * 4 / 2**20
                rows.append([f"{minutes:g} min", label, f"{peak:.0f}", f"{floor:.0f}", f"{peak - floor:.0f}",
                             f"{wave_mib:.0f}", f"{minutes * 60 / result['seconds']:.0f}x"])
                print(rows[-1], flush=True)
            path.unlink()
    table = format_table(["recording", "extraction", "peak RSS (MiB)", "after loading the model (MiB)",
                          "growth (MiB)", "float32 waveform (MiB)", "speed (real time)"], rows)
    publish_benchmark(SECTION, ".venv/bin/python bench/long_audio.py", "One torch thread.", [
        "Each row is a fresh process that loads the bundled model and embeds one WAV file built from real",
        "speechocean762 training speech. Memory beyond the model grows with the waveform only (decoded at",
        "16 kHz float32): features are computed 60 s at a time as the windows need them, and the encoder",
        "sees at most 16,384 frames per call (the bundled model's windows are 30 s, 3,000 frames), a",
        "constant few hundred MiB. Longer inputs are refused above `--max-seconds` (default 4 hours) from",
        "the file header, before decoding.",
    ], table)


if __name__ == "__main__":
    main()
