"""Reports for people: markdown tables, a one-line machine description, and sections of a markdown
document (``docs/benchmarks.md``) rewritten in place.

The benchmark scripts (``bench/``) and the study runners (``recipes/``) write their results with these.

Example:
    >>> print(format_table(["system", "EER %"], [["ecapa", 2.5], ["lstm", 10.25]]), end="")
    | system | EER % |
    | ------ | ----: |
    | ecapa  |  2.50 |
    | lstm   |  10.2 |
"""
from __future__ import annotations

import math
import numbers
import os
import platform
import re
from pathlib import Path
from typing import Any, Sequence

from voxprint.fileio import atomic_write_text
from voxprint.paths import PACKAGE_DIR

__all__ = ["BENCHMARKS_DOC", "format_table", "machine_description", "write_markdown_section"]

#: The benchmark document of a checkout (the package is installed from it in editable mode).
BENCHMARKS_DOC = PACKAGE_DIR.parent / "docs" / "benchmarks.md"


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
    """One line describing this machine, for the reader of a benchmark or study result.

    Cores are ``os.cpu_count()`` (logical CPUs); when the process is pinned to fewer CPUs the
    usable count is added. torch is imported lazily and reported as "not installed" if absent.

    Returns:
        E.g. ``"Intel(R) Xeon(R) ...; 2 cores; 23.5 GiB RAM; Ubuntu 22.04 (Linux 6.1, x86_64);
        Python 3.11.9; torch 2.13.0"``.

    Example:
        >>> "; Python " in machine_description()
        True
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
    """Replace the ``## section_title`` section of a markdown document with ``markdown`` (or append it).

    The section runs from its ``## `` heading to the next heading of level 1 or 2 (sub-headings
    ``###`` belong to it; headings inside fenced code are ignored). Everything else is kept
    byte for byte. The document is rewritten atomically.

    Args:
        doc_path: the document; None means the checkout's ``docs/benchmarks.md``
            (:data:`BENCHMARKS_DOC`). A missing one is created with a ``# Benchmarks`` title.
        section_title: the section's heading, without ``## ``.
        markdown: the section body; a leading ``## section_title`` line in it is tolerated and not
            duplicated.

    Returns:
        The document's path.

    Example:
        >>> import tempfile
        >>> doc = Path(tempfile.mkdtemp()) / "benchmarks.md"
        >>> _ = write_markdown_section(doc, "Speed", "fast")
        >>> _ = write_markdown_section(doc, "Speed", "faster")
        >>> print(doc.read_text(), end="")
        # Benchmarks
        <BLANKLINE>
        ## Speed
        <BLANKLINE>
        faster
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
    return atomic_write_text(doc, "\n".join(new).rstrip("\n") + "\n")


def _fmt_float(x: float, floatfmt: str | None) -> str:
    if floatfmt is not None:
        return format(x, floatfmt)
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if x == 0 or 1e-3 <= abs(x) < 1e9:  # 3 significant digits, never scientific
        decimals = max(0, 2 - math.floor(math.log10(abs(x)))) if x else 0
        return f"{x:,.{decimals}f}" if abs(x) >= 1e4 else f"{x:.{decimals}f}"
    return f"{x:.3g}"


def _cell(value: Any, floatfmt: str | None) -> str:
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
    """A GitHub-flavoured markdown table.

    Columns whose cells are all numbers are right-aligned. Floats get 3 significant digits without
    exponent (``0.592``, ``123``, ``12,345``) unless ``floatfmt`` is given; ints and strings pass
    through untouched, so pre-format values like ``"6.85%"`` yourself; ``None`` renders empty and
    ``|`` is escaped.

    Args:
        headers: the column headings.
        rows: the cells, row by row; a row shorter than ``headers`` is padded with empty cells.
        floatfmt: a format spec for every float (e.g. ``".2f"``).

    Returns:
        The table, one line per row plus the heading and separator lines, ending in a newline.

    Raises:
        ValueError: a row has more cells than there are headers.
    """
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

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(
            c.rjust(widths[j]) if numeric[j] else c.ljust(widths[j]) for j, c in enumerate(cells)
        ) + " |"

    sep = "| " + " | ".join(("-" * (widths[j] - 1) + ":") if numeric[j] else "-" * widths[j]
                            for j in range(n)) + " |"
    return "\n".join([line(head), sep, *(line(r) for r in body)]) + "\n"


def publish_benchmark(section: str, command: str, conditions: str, notes: Sequence[str], table: str,
                      doc_path: str | os.PathLike | None = None) -> Path:
    """Write a benchmark's section of ``docs/benchmarks.md``: machine, conditions, command, notes and table.

    Every benchmark names the machine and the exact command, so its figures can be reproduced; the
    table is printed too.

    Args:
        section: the ``##`` heading.
        command: the command that produced the table.
        conditions: e.g. ``"One torch thread."``.
        notes: lines of prose between the header and the table.
        table: a markdown table (:func:`format_table`).
        doc_path: the document (default ``docs/benchmarks.md``).

    Returns:
        The document's path.
    """
    header = " ".join(part for part in (f"Machine: {machine_description()}.", conditions, f"Command: `{command}`.")
                      if part)
    body = "\n".join([header, "", *notes, "", table])
    print(table)
    return write_markdown_section(doc_path, section, body)

