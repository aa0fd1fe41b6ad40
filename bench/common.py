"""Helpers shared by the benchmark scripts (run under the package venv, ``.venv``).

* :func:`machine_description` - one-line description of the machine for reports.
* :func:`run_peer` - run a reference-peer script from ``bench/peers/`` under the separate
  benchmark venv ``.venv-bench`` (see ``bench/peers/README.md``).
* :func:`write_markdown_section` - replace / append a ``## title`` section of
  ``docs/benchmarks.md`` without touching the other sections.
* :func:`format_table` - markdown table formatter.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO_ROOT / "bench" / "peers"
BENCH_VENV = REPO_ROOT / ".venv-bench"
BENCHMARKS_DOC = REPO_ROOT / "docs" / "benchmarks.md"

__all__ = [
    "REPO_ROOT", "PEERS_DIR", "BENCH_VENV", "BENCHMARKS_DOC",
    "machine_description", "bench_python", "run_peer", "write_markdown_section", "format_table",
]


# --------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}".strip()


def machine_description() -> str:
    """E.g. ``"Intel(R) Xeon(R) ... ; 2 cores; 23.5 GiB RAM; Ubuntu 22.04 (Linux 6.1, x86_64);
    Python 3.11.9; torch 2.13.0"``.

    Cores are ``os.cpu_count()`` (logical CPUs); when the process is pinned to fewer CPUs the
    usable count is added. torch is imported lazily and reported as "not installed" if absent.
    """
    cores = os.cpu_count() or 0
    cores_txt = f"{cores} cores"
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
        if usable != cores:
            cores_txt += f" ({usable} usable)"
    ram = _ram_gib()
    ram_txt = f"{ram:.1f} GiB RAM" if ram is not None else "RAM unknown"
    os_txt = f"{_os_name()} ({platform.system()} {platform.release()}, {platform.machine()})"
    try:
        import torch

        torch_txt = f"torch {torch.__version__}"
    except ImportError:
        torch_txt = "torch not installed"
    return "; ".join(
        [_cpu_model(), cores_txt, ram_txt, os_txt, f"Python {platform.python_version()}", torch_txt]
    )


# --------------------------------------------------------------------------- peers

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


# --------------------------------------------------------------------------- markdown

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of ATX headings outside fenced code blocks."""
    found, fence = [], None
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if m:
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None:
            h = _HEADING.match(line)
            if h:
                found.append((i, len(h.group(1)), h.group(2).strip()))
    return found


def write_markdown_section(doc_path: str | os.PathLike | None, section_title: str, markdown: str) -> Path:
    """Replace the ``## section_title`` section of ``doc_path`` with ``markdown`` (or append it).

    The section runs from its ``## `` heading to the next heading of level 1 or 2 (sub-headings
    ``###`` belong to it; headings inside fenced code are ignored). Everything else is kept
    byte for byte. ``markdown`` is the section body; a leading ``## section_title`` line in it
    is tolerated and not duplicated. A missing document is created with a ``# Benchmarks``
    title. ``doc_path=None`` means ``docs/benchmarks.md``. Returns the document path.
    """
    doc = Path(doc_path) if doc_path is not None else BENCHMARKS_DOC
    title = section_title.strip()
    body = markdown.strip("\n")
    first, _, rest = body.partition("\n")
    h = _HEADING.match(first)
    if h and len(h.group(1)) == 2 and h.group(2).strip() == title:
        body = rest.strip("\n")
    section = [f"## {title}", "", *(body.splitlines() if body else [])]

    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    heads = _headings(lines)
    start = next((i for i, lvl, t in heads if lvl == 2 and t == title), None)
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        new = lines + ([""] if lines else []) + section
    else:
        end = next((i for i, lvl, _ in heads if i > start and lvl <= 2), len(lines))
        tail = lines[end:]
        new = lines[:start] + section + ([""] + tail if tail else [])
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text("\n".join(new).rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, doc)
    return doc


def _fmt_float(x: float, floatfmt: str | None) -> str:
    if floatfmt is not None:
        return format(x, floatfmt)
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e9:  # 3 significant digits, never scientific
        import math

        decimals = max(0, 2 - math.floor(math.log10(abs(x)))) if x else 0
        return f"{x:,.{decimals}f}" if abs(x) >= 1e4 else f"{x:.{decimals}f}"
    return f"{x:.3g}"


def _cell(value: Any, floatfmt: str | None) -> str:
    import numbers

    if value is None:
        text = ""
    elif isinstance(value, bool) or isinstance(value, numbers.Integral):
        text = str(value)
    elif isinstance(value, numbers.Real):  # float, numpy floats
        text = _fmt_float(float(value), floatfmt)
    else:
        text = str(value)
    return text.replace("|", r"\|").replace("\n", " ")


def _is_number(text: str) -> bool:
    t = text.strip().rstrip("%×x").replace(",", "").replace("−", "-")
    try:
        float(t)
        return True
    except ValueError:
        return False


def format_table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], floatfmt: str | None = None) -> str:
    """GitHub-flavoured markdown table. Columns whose cells are all numbers are right-aligned;
    floats get 3 significant digits without exponent (``0.592``, ``123``, ``12,345``) unless
    ``floatfmt`` (a format spec such as ``".2f"``) is given; ints and strings pass through
    untouched, so pre-format values like ``"6.85%"`` yourself; ``None`` renders empty; ``|`` is escaped.
    Rows shorter than ``headers`` are padded; longer rows raise ValueError."""
    head = [_cell(h, floatfmt) for h in headers]
    n = len(head)
    body = []
    for r in rows:
        r = list(r)
        if len(r) > n:
            raise ValueError(f"row has {len(r)} cells, table has {n} columns: {r!r}")
        body.append([_cell(v, floatfmt) for v in r] + [""] * (n - len(r)))
    numeric = [bool(body) and all(_is_number(row[j]) or row[j] == "" for row in body)
               and any(row[j] for row in body) for j in range(n)]
    widths = [max([3, len(head[j])] + [len(row[j]) for row in body]) for j in range(n)]

    def line(cells):
        return "| " + " | ".join(
            c.rjust(widths[j]) if numeric[j] else c.ljust(widths[j]) for j, c in enumerate(cells)
        ) + " |"

    sep = "| " + " | ".join(("-" * (widths[j] - 1) + ":") if numeric[j] else "-" * widths[j]
                            for j in range(n)) + " |"
    return "\n".join([line(head), sep, *(line(r) for r in body)]) + "\n"
