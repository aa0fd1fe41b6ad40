"""Running reference peers for the benchmark scripts (run under the package venv, ``.venv``).

:func:`run_peer` runs a reference-peer script from ``bench/peers/`` under the separate benchmark
venv ``.venv-bench`` (see ``bench/peers/README.md``). Tables, the machine description and the
sections of ``docs/benchmarks.md`` come from :mod:`voxprint.report`.

The scripts import this file as ``common`` (``python bench/X.py`` puts ``bench/`` on the path).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO_ROOT / "bench" / "peers"
BENCH_VENV = REPO_ROOT / ".venv-bench"

__all__ = ["BENCH_VENV", "PEERS_DIR", "REPO_ROOT", "bench_python", "run_peer"]


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
