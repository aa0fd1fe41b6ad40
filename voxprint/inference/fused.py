"""A fusion of models as one model: every window is embedded by each part, and each part's back-end scores
its own slice (:class:`~voxprint.backends.fused.FusedBackend`).

A fusion folder holds ``fusion.json`` (a :class:`~voxprint.backends.fusion.LinearFusion` whose system
names are the parts: built-in model names, or folders relative to the fusion folder) and a ``meta.json``
(threshold, identification calibration), and no weights of its own. :func:`voxprint.load_model` loads it
as a :class:`FusedEmbedder`, which the speaker store, ``verify``, ``eval``, ``eval-id``, ``identify`` and
``embed`` use like any model; its identity (what a speaker store records) hashes the parts' identities and
the fusion weights.

How a recording is read: decoded as the first part reads it (rate, duration limits, VAD); the first
part's sliding windows set the windows; every other part embeds each window's samples as it would embed a
recording (its own voice activity detection, then its own windows), so an utterance shorter than the
first part's window gets from each part exactly that part's embedding of the recording. This module imports
no torch (the parts may).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from voxprint.backends.verifier import WindowedEmbedder
from voxprint.errors import DataError, ModelError
from voxprint.windowing import WindowEmbeddings

__all__ = ["FUSION_FILE", "FusedEmbedder", "FusedWindows", "is_fusion", "load_fused"]

#: The file that makes a folder a fusion of models.
FUSION_FILE = "fusion.json"
#: The most parts a fusion may name: each is a whole model in memory, so a folder naming thousands would
#: exhaust it.
MAX_PARTS = 8
#: Windows whose features a second part computes in one call (bounds memory on long recordings).
SEGMENTS_PER_CALL = 32


def is_fusion(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is a fusion of models (it holds :data:`FUSION_FILE`)."""
    return (Path(folder) / FUSION_FILE).is_file()


class _FusedFeatures:
    """One recording for :class:`FusedWindows`: the first part's frames (their count is ``len``) and the
    waveform the other parts cut windows from."""

    def __init__(self, frames: Any, wave: np.ndarray):
        self.frames = frames
        self.wave = wave

    def __len__(self) -> int:
        return len(self.frames)


class FusedWindows:
    """The sliding-window embedder of a :class:`FusedEmbedder` (``features``, ``embed_features``, call)."""

    def __init__(self, model: "FusedEmbedder"):
        first, *others = model.parts
        self.first = first.with_inference(model.window_frames, model.overlap).windows
        self.others = others
        self.sample_rate = model.sample_rate

    def features(self, wave: np.ndarray) -> _FusedFeatures:
        """The first part's frames of ``wave``, with the waveform kept for the other parts."""
        return _FusedFeatures(self.first.features(wave), wave)

    def embed_features(self, features: Sequence[_FusedFeatures]) -> list[WindowEmbeddings]:
        """Fused window embeddings of each recording (:func:`~voxprint.backends.fused.join_parts` of the
        parts' unit rows)."""
        from voxprint.backends.fused import join_parts

        firsts = self.first.embed_features([f.frames for f in features])
        segments = [segment for f, windows in zip(features, firsts) for segment in self._segments(f.wave, windows)]
        columns = [self._part_rows(part, segments) for part in self.others]
        results, row = [], 0
        for windows in firsts:
            rows = slice(row, row + len(windows))
            row = rows.stop
            results.append(WindowEmbeddings(join_parts([windows.embeddings, *(c[rows] for c in columns)]),
                                            windows.starts, windows.ends))
        return results

    def _segments(self, wave: np.ndarray, windows: WindowEmbeddings) -> list[np.ndarray]:
        """The samples of each window; the last runs to the end of the recording (the samples after the last
        whole frame are the recording's too), so a recording of one window is given to the parts whole."""
        bounds = [int(round(t * self.sample_rate)) for t in windows.starts]
        ends = [int(round(t * self.sample_rate)) for t in windows.ends[:-1]] + [len(wave)]
        return [wave[a:b] for a, b in zip(bounds, ends)]

    @staticmethod
    def _part_rows(part: WindowedEmbedder, segments: list[np.ndarray]) -> np.ndarray:
        """``part``'s embedding of each segment, read as the part reads a recording (its VAD, its windows)."""
        from voxprint.audio.vad import remove_silence

        embedder, rows = part.windows, []
        # A few segments' features at a time: a 4-hour recording has a thousand 30 s windows.
        for start in range(0, len(segments), SEGMENTS_PER_CALL):
            chunk = segments[start:start + SEGMENTS_PER_CALL]
            if part.vad_threshold_db is not None:
                chunk = [remove_silence(s, part.sample_rate, threshold_db=part.vad_threshold_db) for s in chunk]
            rows += [r.utterance_embedding() for r in embedder.embed_features([embedder.features(s) for s in chunk])]
        return np.stack(rows)

    def embed_many(self, waves: Sequence[np.ndarray]) -> list[WindowEmbeddings]:
        """The window embeddings of each waveform, batched across them."""
        return self.embed_features([self.features(wave) for wave in waves])

    def __call__(self, wave: np.ndarray) -> WindowEmbeddings:
        return self.embed_many([wave])[0]


class FusedEmbedder(WindowedEmbedder):
    """Two or more models used as one (see the module docstring).

    Args:
        parts: the loaded models, the first setting the windows; all at one sample rate.
        fusion: how the parts' scores add up (one weight per part, in order).
        meta: the fusion folder's ``meta.json``.
        model_dir: the fusion folder (None for one built in memory).

    Raises:
        ModelError: fewer than two parts, a part that cannot store embeddings, or parts at different rates.
    """

    def __init__(self, parts: Sequence[WindowedEmbedder], fusion: Any, meta: dict[str, Any] | None = None,
                 model_dir: str | os.PathLike | None = None):
        from voxprint.backends.fused import FusedBackend

        self.parts = list(parts)
        where = f"fusion {model_dir}" if model_dir is not None else "a fusion"
        if len(self.parts) < 2 or len(self.parts) != fusion.n_systems:
            raise ModelError(f"{where} needs two or more parts and one weight each; got {len(self.parts)} parts "
                             f"and {fusion.n_systems} weights")
        for name, part in zip(fusion.systems, self.parts):
            if not part.stores_embeddings:
                raise ModelError(f"{where}: part {name!r} scores frames, not embeddings, and cannot be fused")
            if part.sample_rate != self.parts[0].sample_rate:
                raise ModelError(f"{where}: part {name!r} reads {part.sample_rate} Hz, the first part "
                                 f"{self.parts[0].sample_rate} Hz; fuse models of one sample rate")
        first = self.parts[0]
        self.fusion = fusion
        self.meta = meta or {}
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.config = first.config
        self.sample_rate = first.sample_rate
        self.window_frames, self.overlap = first.window_frames, first.overlap
        self.vad_threshold_db = first.vad_threshold_db
        self.min_seconds = max(p.min_seconds for p in self.parts)
        limits = [p.max_seconds for p in self.parts if p.max_seconds is not None]
        self.max_seconds = min(limits) if limits else None
        identities = [p.identity for p in self.parts]
        self.identity = None if None in identities else "vp1-" + hashlib.sha256(json.dumps(
            {"parts": identities, "fusion": fusion.to_dict()}, sort_keys=True).encode()).hexdigest()[:24]
        self._backend = FusedBackend(tuple(p.backend for p in self.parts), tuple(p.embedding_dim for p in self.parts),
                                     fusion)

    @property
    def embedding_dim(self) -> int:
        return sum(p.embedding_dim for p in self.parts)

    @property
    def windows(self) -> FusedWindows:
        return FusedWindows(self)

    @property
    def backend(self) -> Any:
        """The :class:`~voxprint.backends.fused.FusedBackend` of the parts' own back-ends."""
        return self._backend

    def scoring_backend(self, options: dict[str, Any]) -> Any:
        """The fused back-end; other back-end options are refused (each part uses the one in its own folder).

        Raises:
            ModelError: ``options`` ask for a back-end.
        """
        if options:
            raise ModelError("a fusion of models scores with each part's own back-end; --backend, --norm and "
                             "--calibrated do not apply to it")
        return self._backend

    def require_embedding_backend(self, what: str) -> None:
        if what == "fit-backend":
            raise ModelError("a fusion of models has no back-end of its own to fit: fit each part's "
                             f"({', '.join(self.fusion.systems)}), then write the fusion again")

    def diarize(self, audio: Any, sample_rate: int | None = None, **options: Any) -> Any:
        """Who spoke when (:func:`voxprint.diarization.diarize`): the first part's windows fused with the
        second's (:func:`~voxprint.diarization.pipeline.clustering_models`), speakers named by the fusion."""
        from voxprint.diarization import diarize

        return diarize(self, audio, sample_rate=sample_rate, **options)

    def optimize(self) -> "FusedEmbedder":
        for part in self.parts:
            part.optimize()
        return self


def _part_location(folder: Path, name: str) -> str | Path:
    """A part's model: a built-in name as it is, otherwise a folder relative to the fusion folder."""
    from voxprint.runs import is_builtin

    return name if is_builtin(name) else (folder / name).resolve()


def load_fused(folder: str | os.PathLike, loader: Callable[[str | Path], WindowedEmbedder]) -> FusedEmbedder:
    """Load the fusion in ``folder``, each part with ``loader`` (e.g. :func:`voxprint.load_model`).

    Raises:
        ModelError: an unreadable ``fusion.json``, more than :data:`MAX_PARTS` parts, a part that is itself a
            fusion, or unusable parts.

    Example:
        >>> from voxprint import load_model
        >>> model = load_model("fused")
        >>> model.fusion.systems, model.embedding_dim, model.backend.name
        (('default', 'ivector'), 256, 'fusion(plda+calibrated, plda+calibrated)')
    """
    from voxprint.backends.fusion import LinearFusion
    from voxprint.runs import read_meta, resolve_model_dir

    folder = Path(folder)
    path = folder / FUSION_FILE
    try:
        fusion = LinearFusion.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, DataError) as exc:
        raise ModelError(f"{path} is not a readable fusion of models ({str(exc).splitlines()[0] if str(exc) else exc})"
                         ) from None
    if fusion.n_systems > MAX_PARTS:
        raise ModelError(f"{path} names {fusion.n_systems} models; a fusion holds at most {MAX_PARTS}")
    parts = []
    for name in fusion.systems:
        location = _part_location(folder, name)
        if is_fusion(resolve_model_dir(location)):
            raise ModelError(f"{path}: part {name!r} is itself a fusion; fuse its parts directly")
        parts.append(loader(location))
    return FusedEmbedder(parts, fusion, read_meta(folder), folder)
