"""A timeline of who spoke when, as a PNG a person can read.

One row per hypothesis speaker (top), then, when a reference is given, one hatched row per reference
speaker below a divider. Each reference speaker is drawn in the colour of the hypothesis speaker
mapped to them (the one-to-one mapping with the most shared time, as DER uses; grey when none), so
a reference stretch without a bar of its colour above it is a miss or a confusion, at a glance. Drawn with the
Agg canvas directly (as :func:`voxprint.metrics.plots.plot_det`), so no global matplotlib backend is
changed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from voxprint.diarization.segments import Segment
from voxprint.fileio import atomic_write

__all__ = ["plot_timeline"]

_GREY = "0.55"


def _overlap(a: Sequence[Segment], b: Sequence[Segment]) -> float:
    return sum(max(0.0, min(x.end, y.end) - max(x.start, y.start)) for x in a for y in b)


def plot_timeline(path: str | os.PathLike, segments: Sequence[Segment], reference: Sequence[Segment] | None = None,
                  duration: float | None = None, title: str | None = None) -> Path:
    """Draw the segments (and a reference) as one row per speaker and save a PNG.

    Args:
        path: the PNG file (written atomically; folders are created).
        segments: the hypothesis segments.
        reference: reference segments, drawn below the hypothesis.
        duration: the end of the time axis (default: the last segment's end).
        title: the figure title.

    Returns:
        The file written.

    Example:
        >>> import tempfile
        >>> out = plot_timeline(Path(tempfile.mkdtemp()) / "t.png", [Segment(0, 2, "spk1"), Segment(2, 3, "spk2")],
        ...                     reference=[Segment(0, 2.2, "A"), Segment(2.2, 3, "B")], title="call")
        >>> out.suffix
        '.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hyp_speakers = list(dict.fromkeys(s.speaker for s in sorted(segments)))
    ref_speakers = list(dict.fromkeys(s.speaker for s in sorted(reference or [])))
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9"]
    colour = {s: palette[i % len(palette)] for i, s in enumerate(hyp_speakers)}
    ref_colour = dict.fromkeys(ref_speakers, _GREY)
    if ref_speakers and hyp_speakers:
        from scipy.optimize import linear_sum_assignment

        # The one-to-one mapping with the most shared time (the one DER uses) gives each reference speaker a colour.
        shared = np.array([[_overlap([s for s in reference or [] if s.speaker == r],
                                     [s for s in segments if s.speaker == h]) for h in hyp_speakers]
                           for r in ref_speakers])
        for r, h in zip(*linear_sum_assignment(-shared)):
            if shared[r, h] > 0:
                ref_colour[ref_speakers[r]] = colour[hyp_speakers[h]]
    end = duration or max([s.end for s in segments] + [s.end for s in reference or []] + [1.0])
    rows = len(hyp_speakers) + len(ref_speakers)
    fig = Figure(figsize=(min(16.0, max(8.0, end / 6.0)), 1.0 + 0.45 * max(rows, 1)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = []
    for row, speaker in enumerate(hyp_speakers):
        spans = [(s.start, s.duration) for s in segments if s.speaker == speaker]
        ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=colour[speaker])
        labels.append(speaker)
    for offset, speaker in enumerate(ref_speakers):
        row = len(hyp_speakers) + offset
        spans = [(s.start, s.duration) for s in reference or [] if s.speaker == speaker]
        ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=ref_colour[speaker], alpha=0.55, hatch="//",
                       edgecolor="white", linewidth=0)
        labels.append(f"reference: {speaker}")
    if ref_speakers:
        ax.axhline(len(hyp_speakers) - 0.5, color="0.2", linewidth=1.0)
    ax.set_yticks(range(rows), labels)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlim(0, end)
    ax.set_xlabel("time (s)")
    ax.grid(True, axis="x", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))
