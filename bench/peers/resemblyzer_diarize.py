#!/usr/bin/env python3
"""Reference peer: diarization assembled from public parts, Resemblyzer + webrtcvad + spectralcluster.

Runs under the *benchmark* virtualenv (``.venv-bench/bin/python``), never under the package venv: it
must not import ``voxprint``. See ``bench/peers/README.md``. Needs ``spectralcluster`` in that venv
(``.venv-bench/bin/pip install spectralcluster``).

Usage::

    .venv-bench/bin/python bench/peers/resemblyzer_diarize.py --data SIM_DIR --out /tmp/peer.json

The pipeline a user would build from the three packages' documentation, with the same segment
rule as voxprint so that only the parts differ:

1. speech: webrtcvad (mode 3, 30 ms frames) smoothed and dilated exactly as Resemblyzer's own
   ``trim_long_silences`` does (moving average of 8 frames, dilation by 6), but kept as time regions
   instead of cutting the audio;
2. embeddings: ``VoiceEncoder.embed_utterance(region, return_partials=True, rate=4/3)`` on each
   speech region after Resemblyzer's volume normalisation: 1.6 s partials every 0.75 s (the
   hop voxprint uses);
3. clustering: ``spectralcluster``'s ``icassp2018_clusterer`` (Wang et al.'s refinement, eigengap
   count, 2 to 7 speakers, as the package ships it);
4. segments: every 10 ms of speech takes the speaker of the closest partial's centre.

Output (``--out``, JSON): ``files`` (id -> list of ``[start, end, speaker]``), ``audio_seconds``,
``wall_seconds`` (1 torch thread, BLAS capped to 1 thread, decoding excluded), ``speed_busy_cores``
(other processes' CPU load just before timing), and the package versions.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import webrtcvad  # noqa: E402
from resemblyzer import VoiceEncoder, hparams  # noqa: E402
from resemblyzer.audio import normalize_volume  # noqa: E402
from scipy.ndimage import binary_dilation  # noqa: E402
from spectralcluster import configs  # noqa: E402

from cpu_load import other_busy_cores  # noqa: E402  (bench/peers/cpu_load.py, beside this script)

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

RATE = 16000
FRAME = 0.01


def read_scp(path: Path) -> list[tuple[str, Path]]:
    """``utt path`` lines (paths relative to the folder)."""
    items = []
    for line in path.read_text().splitlines():
        if line.strip():
            utt, rel = line.split(maxsplit=1)
            items.append((utt, (path.parent / rel) if not Path(rel).is_absolute() else Path(rel)))
    return items


def decode(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz (the simulated conversations and the sample are 16 kHz)."""
    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != RATE:
        raise SystemExit(f"{path}: {sr} Hz; this peer expects 16 kHz audio")
    return wav.mean(axis=1)


def speech_regions(wav: np.ndarray) -> list[tuple[float, float]]:
    """Resemblyzer's VAD decisions (see the module docstring) as (start, end) seconds."""
    step = hparams.vad_window_length * RATE // 1000
    usable = len(wav) - len(wav) % step
    pcm = (np.round(np.clip(wav[:usable], -1, 1) * 32767)).astype(np.int16).tobytes()
    vad = webrtcvad.Vad(mode=3)
    flags = np.array([vad.is_speech(pcm[i * 2:(i + step) * 2], sample_rate=RATE) for i in range(0, usable, step)])
    width = hparams.vad_moving_average_width
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    total = np.cumsum(padded, dtype=float)
    total[width:] = total[width:] - total[:-width]
    mask = np.round(total[width - 1:] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(hparams.vad_max_silence_length + 1))
    edges = np.diff(np.concatenate(([0], mask.astype(int), [0])))
    seconds = step / RATE
    return [(s * seconds, e * seconds) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


def diarize(encoder: VoiceEncoder, wav: np.ndarray) -> list[list]:
    """Segments ``[start, end, label]`` of one recording."""
    wav = normalize_volume(wav, hparams.audio_norm_target_dBFS, increase_only=True)
    regions = speech_regions(wav)
    embeds, centres, owner = [], [], []
    for index, (start, end) in enumerate(regions):
        piece = wav[int(start * RATE):int(end * RATE)]
        if len(piece) < int(0.1 * RATE):
            continue
        _, partials, slices = encoder.embed_utterance(piece, return_partials=True, rate=4 / 3)
        for emb, sl in zip(partials, slices):
            embeds.append(emb)
            centres.append(start + (sl.start + min(sl.stop, len(piece))) / 2 / RATE)
            owner.append(index)
    if not embeds:
        return []
    embeds = np.asarray(embeds)
    labels = configs.icassp2018_clusterer.predict(embeds) if len(embeds) > 2 else np.zeros(len(embeds), int)
    centres, owner = np.asarray(centres), np.asarray(owner)
    segments: list[list] = []
    for index, (start, end) in enumerate(regions):
        mine = np.flatnonzero(owner == index)
        if not len(mine):
            continue
        times = np.arange(int(round(start / FRAME)), int(round(end / FRAME))) * FRAME + FRAME / 2
        closest = mine[np.abs(times[:, None] - centres[mine][None, :]).argmin(axis=1)]
        frame_labels = labels[closest]
        change = np.flatnonzero(np.diff(frame_labels)) + 1
        for a, b in zip(np.concatenate(([0], change)), np.concatenate((change, [len(times)]))):
            segments.append([round(times[a] - FRAME / 2, 3), round(times[b - 1] + FRAME / 2, 3),
                             f"spk{int(frame_labels[a]) + 1}"])
    return segments


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, action="append",
                    help="folder with wav.scp (repeatable; ids must be unique across folders)")
    ap.add_argument("--out", required=True, type=Path, help="output JSON")
    args = ap.parse_args(argv)
    items = [item for folder in args.data for item in read_scp(folder / "wav.scp")]
    waves = {utt: decode(path) for utt, path in items}
    torch.set_num_threads(1)
    encoder = VoiceEncoder("cpu", verbose=False)
    busy = other_busy_cores()
    limiter = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
    files = {}
    try:
        diarize(encoder, next(iter(waves.values()))[:RATE * 5])  # warm-up (not timed)
        start = time.perf_counter()
        for utt, wav in waves.items():
            files[utt] = diarize(encoder, wav)
        wall = time.perf_counter() - start
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    audio = sum(len(w) for w in waves.values()) / RATE
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "files": files, "audio_seconds": audio, "wall_seconds": wall, "speed_busy_cores": busy,
        "blas_threads_limited": limiter is not None, "resemblyzer_version": version("Resemblyzer"),
        "spectralcluster_version": version("spectralcluster"), "webrtcvad_version": version("webrtcvad"),
        "torch_version": torch.__version__, "python_version": platform.python_version()}))
    print(f"peer: {len(files)} recordings, {audio:.0f} s of audio in {wall:.1f} s ({audio / wall:.0f}x real time, "
          "1 thread)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
