"""Running reference peers for the benchmark scripts (run under the package venv, ``.venv``).

:func:`run_peer` runs a reference-peer script from ``bench/peers/`` under the separate benchmark
venv ``.venv-bench`` (see ``bench/peers/README.md``). Tables, the machine description and the
sections of ``docs/benchmarks.md`` come from :mod:`voxprint.report`.

The scripts import this file as ``common`` (``python bench/X.py`` puts ``bench/`` on the path).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO_ROOT / "bench" / "peers"
BENCH_VENV = REPO_ROOT / ".venv-bench"

__all__ = ["BENCH_VENV", "PEERS_DIR", "REPO_ROOT", "bench_python", "best_time", "dev_evaluation", "ensure_backend", "mean_se",
           "parameter_count", "run_peer", "training_minutes"]


def best_time(run: Callable[[], Any], repeats: int) -> float:
    """Least wall time of ``repeats`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_python() -> Path:
    """The benchmark venv's interpreter; RuntimeError (with the fix) if it is missing."""
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        raise RuntimeError(
            f"benchmark virtualenv not found ({py} does not exist). Reference peers such as "
            f"Resemblyzer live in a separate venv, not in the package's: run `make bench-env` "
            f"in {REPO_ROOT} (see bench/peers/README.md) and try again."
        )
    return py


def run_peer(script: str | os.PathLike, args: Sequence[Any], *, env: dict | None = None,
             timeout: float | None = None) -> Path:
    """Run a peer script under ``.venv-bench/bin/python`` and return the path of its output.

    ``script`` is a file name inside ``bench/peers/`` (e.g. ``"resemblyzer_embed.py"``) or a
    path. ``args`` are its command-line arguments (stringified); they must contain
    ``--out FILE`` (or ``--out=FILE``), and that file must exist after the run: it is the
    returned path (``.npz`` appended if the script's ``np.savez`` did so). Peer stdout/stderr
    stream to ours. Raises RuntimeError if the venv is missing, the script exits non-zero, or
    the output was not written.
    """
    py = bench_python()
    script = Path(script)
    if not script.is_absolute() and not script.exists():
        script = PEERS_DIR / script
    if not script.is_file():
        raise RuntimeError(f"peer script not found: {script}")
    argv = [str(a) for a in args]

    out: Path | None = None
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            out = Path(argv[i + 1])
        elif a.startswith("--out="):
            out = Path(a.split("=", 1)[1])
    if out is None:
        raise ValueError("run_peer: args must include --out FILE")

    # Do not leak the package venv into the peer's interpreter.
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    if env:
        run_env.update(env)
    proc = subprocess.run([str(py), str(script), *argv], cwd=REPO_ROOT, env=run_env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"peer {script.name} failed with exit code {proc.returncode}")
    if not out.exists() and out.with_name(out.name + ".npz").exists():
        out = out.with_name(out.name + ".npz")
    if not out.exists():
        raise RuntimeError(f"peer {script.name} exited 0 but did not write {out}")
    return out


def ensure_backend(model: Any, run: Path) -> None:
    """Fit an embedding model's back-end on its training data when the run has none yet (as
    ``voxprint fit-backend``, under the run's lock); a model that scores frames has none to fit."""
    from voxprint.backends.backend import PLDA_FILE, fit_backend
    from voxprint.data import read_data_folder
    from voxprint.runs import BACKEND_DIR, RunLock

    if not model.stores_embeddings or (run / BACKEND_DIR / PLDA_FILE).is_file():
        return
    folder = read_data_folder(model.config["data"]["train"])
    with RunLock(run, "fit-backend"):  # no other process writes the run meanwhile
        embedded = model.embed_folder(folder.root, progress=True)
        fit_backend(run, embedded.ids, embedded.embeddings, folder.utt2spk)


def training_minutes(run: Path) -> float:
    """A run's training time: the sum of its history's epoch (or EM-step) seconds, in minutes."""
    import json

    from voxprint.runs import HISTORY_FILE

    return sum(float(record.get("seconds") or 0.0)
               for record in json.loads((run / HISTORY_FILE).read_text())) / 60


def parameter_count(encoder: Any) -> int:
    """An encoder's trained values: its parameters, plus its buffers for the EM-trained models (UBM, T),
    whose buffers are what they learned (a neural model's buffers are batch-norm statistics)."""
    counted = list(encoder.parameters()) + (list(encoder.buffers()) if getattr(encoder, "statistical", False) else [])
    return sum(p.numel() for p in counted)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0


def dev_evaluation(model: Any, dev: Path, trials: Any, reference: np.ndarray | None = None) -> dict[str, Any]:
    """EER, minDCF, false-accept rate at the stored threshold, cosine EER and seconds of embedding on the full
    dev set, the embeddings, and with ``reference`` (embeddings of the same recordings) each one's cosine to it."""
    from voxprint.backends.scoring import cosine_score_trials
    from voxprint.metrics import evaluate_scores

    start = time.perf_counter()
    embedded = model.embed_folder(dev, progress=False)
    seconds = time.perf_counter() - start
    scores = model.backend.score_trials(embedded.ids, embedded.embeddings, trials)
    result = evaluate_scores(scores, trials.labels).to_dict()
    result["far"] = float(np.mean(scores[trials.labels == 0] >= model.threshold))
    result["cosine_eer"] = evaluate_scores(cosine_score_trials(embedded.ids, embedded.embeddings, trials),
                                           trials.labels).eer
    result["seconds"] = seconds
    if reference is not None:
        agreement = (embedded.embeddings * reference).sum(axis=1)
        result["cos_min"], result["cos_mean"] = float(agreement.min()), float(agreement.mean())
    result["embeddings"] = embedded.embeddings
    return result
