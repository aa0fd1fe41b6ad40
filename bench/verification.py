#!/usr/bin/env python3
"""Verification benchmark: the bundled default model vs Resemblyzer on speechocean762 dev, same run.

    make bench            # or: .venv/bin/python bench/verification.py [--model default] [--speed-seconds 120]

Prints a table and writes it to docs/benchmarks.md (section "Verification: speechocean762 dev").
Accuracy: EER and minDCF (p_target 0.01, 0.001) on all 114,960 dev trials, cosine scoring.
Speed: seconds of audio embedded per second of wall-clock, waveforms already decoded in memory
(features included), one utterance at a time, over the same ~120 s subset for both systems,
with 1 thread and with all threads. Scoring speed: 1,000,000 random trials scored from embeddings.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from common import run_peer  # bench/common.py: `python bench/verification.py` puts bench/ on the path

from voxprint.backends.scoring import cosine_score_trials
from voxprint.data import read_data_folder
from voxprint.data.trials import Trials, read_trials
from voxprint.inference import load_model
from voxprint.metrics import evaluate_scores
from voxprint.paths import data_root
from voxprint.report import format_table, machine_description, write_markdown_section

SECTION = "Verification: speechocean762 dev"


def speed_subset(folder, seconds: float) -> list[str]:
    """Deterministic subset totalling about ``seconds`` of audio (the rule the peer script uses)."""
    ids = np.array(sorted(folder.wav))
    np.random.default_rng(0).shuffle(ids)
    chosen, total = [], 0.0
    for utt in ids:
        if total >= seconds:
            break
        chosen.append(str(utt))
        total += soundfile.info(str(folder.wav[utt])).duration
    return chosen


def decode(folder, utterances: list[str]) -> tuple[list[np.ndarray], int]:
    """Waveforms decoded in memory (so timings exclude file decoding) and their common rate."""
    decoded = [soundfile.read(str(folder.wav[u]), dtype="float32") for u in utterances]
    return [w for w, _ in decoded], decoded[0][1]


def optimized(name: str, threads: int):
    """A fresh model traced under the thread count it will be timed with (what bulk extraction uses;
    one-off CLI calls skip the ~2 s trace)."""
    torch.set_num_threads(threads)
    return load_model(name).optimize()


def time_extraction(model, waves: list[np.ndarray], rate: int, threads: int, repeats: int = 5) -> float:
    """Audio seconds per wall second; fastest of ``repeats`` passes after a warm-up."""
    torch.set_num_threads(threads)
    model.extract_embedding(waves[0], sample_rate=rate)
    audio = sum(len(w) for w in waves) / rate
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for wave in waves:
            model.extract_embedding(wave, sample_rate=rate)
        best = min(best, time.perf_counter() - start)
    return audio / best


def time_scoring(dim: int, n_trials: int = 1_000_000) -> float:
    rng = np.random.default_rng(0)
    ids = [f"u{i}" for i in range(2000)]
    emb = rng.normal(size=(len(ids), dim)).astype(np.float32)
    pick = rng.integers(0, len(ids), size=(2, n_trials))
    trials = Trials(labels=None, enroll=np.array(ids)[pick[0]], test=np.array(ids)[pick[1]])
    start = time.perf_counter()
    cosine_score_trials(ids, emb, trials)
    return time.perf_counter() - start


def measure_resemblyzer(dev: Path, subset: list[str], trials: Trials) -> dict:
    """Resemblyzer (in .venv-bench) on the same data: its result, speeds (1 thread, all) and version."""
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "speed_ids.txt"
        ids_file.write_text("\n".join(subset) + "\n")
        peer_file = run_peer("resemblyzer_embed.py", ["--data", dev, "--out", Path(tmp) / "resemblyzer.npz",
                                                      "--speed-ids", ids_file, "--speed-repeats", "2"])
        peer = np.load(peer_file, allow_pickle=False)
        ids = [str(i) for i in peer["ids"]]
        scores = cosine_score_trials(ids, peer["embeddings"], trials)
        return {"result": evaluate_scores(scores, trials.labels), "scores": scores,
                "speed": {1: float(peer["speed_1_thread"]), "all": float(peer["speed_all_threads"])},
                "version": str(peer["resemblyzer_version"]), "params": int(peer["params"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--speed-seconds", type=float, default=120.0)
    parser.add_argument("--doc", default=None, help="markdown file to update (default docs/benchmarks.md)")
    args = parser.parse_args()

    dev = data_root() / "speechocean762" / "dev"
    trials = read_trials(dev / "trials.txt")
    folder = read_data_folder(dev)
    all_threads = os.cpu_count() or 1

    model = load_model(args.model)
    torch.set_num_threads(all_threads)
    embedded = model.embed_folder(dev, progress=True)
    ids, matrix = embedded.ids, embedded.embeddings
    ours = evaluate_scores(model.backend.score_trials(ids, matrix, trials), trials.labels)

    subset = speed_subset(folder, args.speed_seconds)
    waves, rate = decode(folder, subset)
    our_speed = {t: time_extraction(optimized(args.model, t), waves, rate, t) for t in (1, all_threads)}
    scoring_seconds = time_scoring(matrix.shape[1])

    peer = measure_resemblyzer(dev, subset, trials)
    theirs, peer_speed, peer_version = peer["result"], peer["speed"], peer["version"]
    peer_speed = {1: peer_speed[1], all_threads: peer_speed["all"]}

    speech_seconds = sum(len(w) for w in waves) / rate
    rows = []
    system = f"voxprint `{args.model}` ({model.config['model']['name']}, {model.backend.name})"
    for name, res, speed in ((system, ours, our_speed),
                             (f"Resemblyzer {peer_version} (pretrained GE2E)", theirs, peer_speed)):
        rows.append([name, f"{100 * res.eer:.2f}", f"{res.min_dcf_01:.3f}", f"{res.min_dcf_001:.3f}",
                     f"{speed[1]:.0f}", f"{speed[all_threads]:.0f}"])
    rows.append(["ratio voxprint / Resemblyzer", f"{ours.eer / theirs.eer:.2f}",
                 f"{ours.min_dcf_01 / theirs.min_dcf_01:.2f}", f"{ours.min_dcf_001 / theirs.min_dcf_001:.2f}",
                 f"{our_speed[1] / peer_speed[1]:.2f}", f"{our_speed[all_threads] / peer_speed[all_threads]:.2f}"])
    table = format_table(["system", "EER %", "minDCF 0.01", "minDCF 0.001", "x real time, 1 thread",
                          f"x real time, {all_threads} threads"], rows)
    threshold = model.threshold
    body = "\n".join([
        f"Command: `.venv/bin/python bench/verification.py --model {args.model}` (or `make bench`).",
        f"Machine: {machine_description()}.",
        "",
        f"{len(trials)} trials ({int(trials.labels.sum())} targets) between {len(folder)} utterances of "
        f"{len(folder.speakers)} speakers unseen in training; voxprint scores with the model's own back-end, "
        "Resemblyzer with cosine (its standard use); lower ratios are better for EER/minDCF, higher for speed.",
        "",
        table,
        "",
        f"Speed: {len(subset)} utterances, {speech_seconds:.0f} s of audio decoded in memory, embedded one at a "
        "time, features included (Resemblyzer: its preprocess_wav resampling/normalisation/VAD + mel), "
        "fastest of 5 passes (Resemblyzer: 2) after a warm-up; voxprint after `model.optimize()` (frozen TorchScript encoder, as bulk "
        "extraction uses).",
        f"Scoring 1,000,000 trials from {matrix.shape[1]}-d embeddings: {scoring_seconds:.2f} s.",
        f"Accept threshold stored with the model: {threshold:.4f} ({model.meta.get('threshold_rule', 'no rule recorded')})."
        if threshold is not None else "",
    ])
    print(table)
    print(f"scoring 1e6 trials: {scoring_seconds:.2f} s")
    doc = write_markdown_section(args.doc, SECTION, body)
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
