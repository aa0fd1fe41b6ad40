#!/usr/bin/env python3
"""Reference peer: embed a data folder with Resemblyzer (pretrained GE2E encoder) and time it.

Runs under the *benchmark* virtualenv (``.venv-bench/bin/python``), never under the package
venv: it must not import ``voxprint``. See ``bench/peers/README.md``.

Usage::

    .venv-bench/bin/python bench/peers/resemblyzer_embed.py \
        --data /work/shared/data/speechocean762/dev --out /tmp/resemblyzer_dev.npz \
        --speed-seconds 120

Embeddings use Resemblyzer's standard usage, one utterance at a time::

    wav = preprocess_wav(path)             # librosa.load(sr=None) -> resample to 16 kHz,
                                           # volume normalisation, webrtcvad silence trimming
    emb = VoiceEncoder("cpu").embed_utterance(wav)   # 40-band mel, 1.6 s partials, 3-layer LSTM,
                                                     # mean of partial embeddings, L2-normalised

Speed is seconds of (raw, untrimmed) input audio per second of wall-clock for
``preprocess_wav(wav, source_sr=sr)`` + ``embed_utterance(wav)`` on waveforms already decoded in
memory (file decoding excluded; Resemblyzer's resample / normalisation / VAD and mel features
included). It is measured over a fixed subset of the folder's utterances totalling about
``--speed-seconds`` of audio, after one warm-up utterance, once with 1 thread and once with
``os.cpu_count()`` threads (``--speed-repeats R`` times each pass R times and keeps the fastest;
default 1). "Threads" sets ``torch.set_num_threads`` and, when threadpoolctl is
installed, also caps numpy's BLAS pool to the same number (librosa's mel projection is a BLAS
matmul) so the 1-thread figure really is single-threaded.

Speed subset (deterministic): utterance ids sorted, shuffled with ``numpy.random.default_rng(0)``,
taken in that order until their total duration reaches ``--speed-seconds``. Its ids are saved
(``speed_ids``) so another system can be timed on exactly the same audio; ``--speed-ids FILE``
(one utt id per line) overrides the rule.

Output: a single ``.npz`` (no sibling JSON), all arrays loadable with ``allow_pickle=False``:

=====================  ==========  ===========================================================
key                    dtype       meaning
=====================  ==========  ===========================================================
ids                    <U (N,)     utterance ids, in ``wav.scp`` order
embeddings             float32     (N, 256) L2-normalised utterance embeddings (row i = ids[i])
seconds                float64     (N,) duration of each input file in seconds
speed_1_thread         float64 ()  audio-seconds per wall-second, 1 thread
speed_all_threads      float64 ()  audio-seconds per wall-second, ``threads_all`` threads
threads_all            int64 ()    ``os.cpu_count()`` used for the all-threads run
speed_wall_1_thread    float64 ()  wall-clock seconds of the 1-thread timed pass
speed_wall_all_threads float64 ()  wall-clock seconds of the all-threads timed pass
speed_audio_seconds    float64 ()  total audio seconds in the speed subset
speed_ids              <U (M,)     utterance ids of the speed subset
speed_repeats          int64 ()    timed passes per setting (fastest kept; ``--speed-repeats``)
blas_threads_limited   bool ()     whether threadpoolctl capped BLAS threads during timing
speed_busy_cores       float64 ()  CPU cores kept busy by *other* processes during 1 s just before
                                   timing (from /proc/stat; NaN if unavailable). Well above 0
                                   means the timings were contended and should be re-run.
params                 int64 ()    parameters of the encoder
resemblyzer_version    <U ()       package versions (0-d unicode arrays; ``str(z[key])``)
torch_version          <U ()
numpy_version          <U ()
librosa_version        <U ()
python_version         <U ()
data_dir               <U ()       absolute path of ``--data``
=====================  ==========  ===========================================================
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch  # noqa: E402
from resemblyzer import VoiceEncoder, preprocess_wav  # noqa: E402

from cpu_load import other_busy_cores  # noqa: E402  (bench/peers/cpu_load.py, beside this script)

try:  # optional: lets the 1-thread run also cap numpy's BLAS pool
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def read_scp(path: Path) -> list[tuple[str, str]]:
    """Kaldi-style ``utt rel/path`` lines -> list of (utt, path) in file order."""
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            utt, rel = line.split(maxsplit=1)
            items.append((utt, rel))
    return items


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode like ``librosa.load(path, sr=None)``: float32, channels averaged to mono."""
    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def pick_speed_subset(ids: list[str], seconds: dict[str, float], target: float) -> list[str]:
    order = sorted(ids)
    perm = np.random.default_rng(0).permutation(len(order))
    subset, total = [], 0.0
    for i in perm:
        if total >= target:
            break
        subset.append(order[i])
        total += seconds[order[i]]
    return subset


def extract(encoder: VoiceEncoder, wav: np.ndarray, sr: int) -> np.ndarray:
    """Resemblyzer's full extraction from an in-memory waveform (what the speed test times)."""
    return encoder.embed_utterance(preprocess_wav(wav, source_sr=sr))


def time_extraction(encoder, waves, threads: int, repeats: int = 1) -> tuple[float, bool]:
    """Wall-clock seconds to extract all ``waves`` with ``threads`` threads, after one warm-up.

    With ``repeats`` > 1 the timed pass is repeated and the fastest is returned."""
    torch.set_num_threads(threads)
    limiter = threadpool_limits(limits=threads, user_api="blas") if threadpool_limits else None
    walls = []
    with limiter if limiter is not None else contextlib.nullcontext():
        extract(encoder, *waves[0])  # warm-up (not timed)
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            for wav, sr in waves:
                extract(encoder, wav, sr)
            walls.append(time.perf_counter() - t0)
    return min(walls), limiter is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder with wav.scp (paths relative to it)")
    ap.add_argument("--out", required=True, type=Path, help="output .npz (suffix added if missing)")
    ap.add_argument("--speed-seconds", type=float, default=120.0,
                    help="audio seconds in the timing subset (default 120); 0 skips timing")
    ap.add_argument("--speed-repeats", type=int, default=1,
                    help="timed passes per thread setting, fastest kept (default 1)")
    ap.add_argument("--speed-ids", type=Path, default=None,
                    help="optional file of utt ids (one per line) to time instead of the default subset")
    args = ap.parse_args(argv)

    data = args.data.expanduser().resolve()
    scp = data / "wav.scp"
    if not scp.is_file():
        ap.error(f"no wav.scp in {data}")
    items = read_scp(scp)
    ids = [u for u, _ in items]
    paths = {u: data / rel for u, rel in items}

    encoder = VoiceEncoder("cpu", verbose=False)
    encoder.eval()

    # 1) Embeddings, standard usage: preprocess_wav on the file path, then embed_utterance.
    torch.set_num_threads(os.cpu_count() or 1)
    embeddings = np.zeros((len(ids), 256), dtype=np.float32)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    for i, utt in enumerate(ids):
        info = sf.info(str(paths[utt]))
        seconds[utt] = info.frames / info.samplerate
        embeddings[i] = encoder.embed_utterance(preprocess_wav(paths[utt]))
        if (i + 1) % 100 == 0 or i + 1 == len(ids):
            print(f"embedded {i + 1}/{len(ids)} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    # 2) Speed: decoded waveforms in memory, decode excluded.
    out = {}
    if args.speed_seconds > 0 or args.speed_ids is not None:
        if args.speed_ids is not None:
            speed_ids = [l.split()[0] for l in args.speed_ids.read_text().splitlines() if l.strip()]
            missing = [u for u in speed_ids if u not in paths]
            if missing:
                ap.error(f"{len(missing)} --speed-ids not in wav.scp, e.g. {missing[0]}")
        else:
            speed_ids = pick_speed_subset(ids, seconds, args.speed_seconds)
        waves = [decode(paths[u]) for u in speed_ids]
        audio_s = float(sum(len(w) / sr for w, sr in waves))
        n_all = os.cpu_count() or 1
        busy = other_busy_cores()
        wall_1, limited = time_extraction(encoder, waves, 1, args.speed_repeats)
        wall_all, _ = time_extraction(encoder, waves, n_all, args.speed_repeats)
        out.update(
            speed_1_thread=np.float64(audio_s / wall_1),
            speed_all_threads=np.float64(audio_s / wall_all),
            threads_all=np.int64(n_all),
            speed_wall_1_thread=np.float64(wall_1),
            speed_wall_all_threads=np.float64(wall_all),
            speed_audio_seconds=np.float64(audio_s),
            speed_ids=np.array(speed_ids, dtype=str),
            speed_repeats=np.int64(max(1, args.speed_repeats)),
            blas_threads_limited=np.bool_(limited),
            speed_busy_cores=np.float64(busy),
        )
        print(f"speed over {len(waves)} utts / {audio_s:.1f} s audio: "
              f"1 thread {audio_s / wall_1:.1f} s/s, {n_all} threads {audio_s / wall_all:.1f} s/s",
              file=sys.stderr)

    out_path = args.out if args.out.suffix == ".npz" else args.out.with_name(args.out.name + ".npz")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out_path,
        ids=np.array(ids, dtype=str),
        embeddings=embeddings,
        seconds=np.array([seconds[u] for u in ids], dtype=np.float64),
        params=np.array(sum(p.numel() for p in encoder.parameters())),
        resemblyzer_version=np.array(version("Resemblyzer")),
        torch_version=np.array(torch.__version__),
        numpy_version=np.array(np.__version__),
        librosa_version=np.array(version("librosa")),
        python_version=np.array(platform.python_version()),
        data_dir=np.array(str(data)),
        **out,
    )
    print(f"wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
