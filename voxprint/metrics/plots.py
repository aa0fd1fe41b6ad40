"""DET-curve plots on normal-deviate (probit) axes, as in NIST speaker-recognition evaluations.

matplotlib is imported inside :func:`plot_det` (and drawn with the Agg canvas directly, not
through ``pyplot``), so importing voxprint stays light and no global backend is changed in
the caller's process.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from voxprint.errors import DataError
from voxprint.fileio import atomic_write
from voxprint.metrics.verification import _det_points, _eer_from_det, _validate

__all__ = ["plot_det"]

# Axis range and ticks in probability; the range covers the usual operating region of
# speaker verification (0.1 % to 40 %) and the ticks are the conventional NIST ones.
_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_LIMITS = (0.001, 0.4)
# Clip before the probit so the end points (p = 0 or 1) map to finite coordinates far
# outside the visible range instead of +-inf, which matplotlib would drop with the segment.
_EPS = 1e-9

# Coefficients of Acklam's rational approximation of the inverse normal CDF (relative
# error < 1.2e-9), which avoids a scipy dependency and vectorises over the whole curve.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
      1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
      6.680131188771972e01, -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
      -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
      3.754408661907416e00)
_P_LOW = 0.02425


def _probit(p: ArrayLike) -> np.ndarray:
    """Inverse standard-normal CDF of probabilities in (0, 1), element-wise."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    out = np.empty_like(p)
    low = p < _P_LOW
    high = p > 1.0 - _P_LOW
    mid = ~(low | high)

    q = p[mid] - 0.5
    r = q * q
    num = ((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]
    den = ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0
    out[mid] = num * q / den

    def tail(x: np.ndarray) -> np.ndarray:
        q = np.sqrt(-2.0 * np.log(x))
        num = ((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]
        den = (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1.0
        return num / den

    out[low] = tail(p[low])
    out[high] = -tail(1.0 - p[high])
    return out


def _drop_collinear(p_miss: np.ndarray, p_fa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop DET points inside horizontal or vertical runs (the drawn line is unchanged).

    A DET curve over n trials has up to n + 1 points but is a staircase, so only the corners
    matter; drawing 100k+ collinear points would make rendering slow for nothing.
    """
    if p_miss.size <= 2:
        return p_miss, p_fa
    same_miss = (p_miss[1:-1] == p_miss[:-2]) & (p_miss[1:-1] == p_miss[2:])
    same_fa = (p_fa[1:-1] == p_fa[:-2]) & (p_fa[1:-1] == p_fa[2:])
    keep = np.concatenate(([True], ~(same_miss | same_fa), [True]))
    return p_miss[keep], p_fa[keep]


def _percent_label(p: float) -> str:
    return f"{100 * p:g}"


def plot_det(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Draw the DET curves of one or more systems and save them as a PNG.

    Both axes are normal deviates (probit) labelled in percent from 0.1 % to 40 %. Each
    system's EER point is marked on its curve and its EER is given in the legend. The file is
    written to a temporary name in the same folder and then renamed, so an existing plot is
    never left half-written.

    Args:
        curves: System name -> ``(scores, labels)`` (see :func:`voxprint.metrics.det_curve`).
        path: Output PNG file; parent folders are created.
        title: Figure title.

    Returns:
        The written file.

    Raises:
        DataError: If ``curves`` is empty or a system's scores/labels are invalid (the message names the
            system).

    Example:
        >>> import numpy as np, tempfile, os
        >>> rng = np.random.default_rng(0)
        >>> labels = np.r_[np.ones(100), np.zeros(1000)]
        >>> scores = rng.normal(size=1100) + 2 * labels
        >>> out = plot_det({"toy": (scores, labels)}, os.path.join(tempfile.mkdtemp(), "det.png"))
        >>> out.suffix
        '.png'
    """
    if not curves:
        raise DataError("plot_det needs at least one system (name -> (scores, labels)); got none")
    prepared = []
    for name, pair in curves.items():
        try:
            scores, labels = pair
            s, is_target = _validate(scores, labels)
        except DataError as exc:
            raise DataError(f"system {name!r}: {exc}") from None
        except (TypeError, ValueError):
            raise DataError(
                f"system {name!r}: expected a (scores, labels) pair, got {type(pair).__name__}"
            ) from None
        p_miss, p_fa, thr = _det_points(s, is_target)
        eer, _ = _eer_from_det(p_miss, p_fa, thr)
        p_miss, p_fa = _drop_collinear(p_miss, p_fa)
        prepared.append((name, p_miss, p_fa, eer))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, p_miss, p_fa, eer in prepared:
        (line,) = ax.plot(_probit(p_fa), _probit(p_miss), linewidth=1.5,
                          label=f"{name} (EER {100 * eer:.2f} %)")
        # The EER lies on the diagonal by definition, so it is marked there.
        ax.plot(_probit(eer), _probit(eer), marker="o", markersize=6, color=line.get_color(),
                linestyle="none")
    lo, hi = _probit(np.array(_LIMITS))
    ax.plot([lo, hi], [lo, hi], color="0.6", linewidth=0.8, linestyle=":")
    ticks = _probit(np.array(_TICKS))
    labels = [_percent_label(t) for t in _TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("False alarm probability (%)")
    ax.set_ylabel("Miss probability (%)")
    ax.grid(True, color="0.85", linewidth=0.6)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()

    return atomic_write(path, lambda handle: fig.savefig(handle, format="png"))
