"""Who spoke when: voice activity detection, window embeddings, clustering, segments.

1. **VAD** (:func:`~voxprint.diarization.vad.speech_regions`): Silero VAD, or the energy VAD as a
   fallback, with minimum speech and silence durations.
2. **Window embeddings**: each speech region is cut into windows of ``window_seconds`` starting every
   ``hop_seconds`` (WeSpeaker's 1.5 s / 0.75 s by default; the last window of a region ends with it, a
   region shorter than a window is one shorter window) and embedded by the model's sliding-window
   embedder (:meth:`~voxprint.inference.SpeakerModel.with_inference`).
3. **Clustering** (:mod:`voxprint.diarization.clustering`): spectral clustering of a nearest-neighbour
   graph with the eigengap count (default), Wang et al.'s refinement, Google's ``spectralcluster``, or
   agglomerative clustering with a threshold. With a **second model** (``fuse_with``; the bundled default
   names the bundled i-vector extractor in its ``meta.json``, ``diarization.fuse_with``), each window is
   also embedded by it, mapped by that model's LDA + whitening + length normalisation (its PLDA
   back-end's front half), and the clustering compares windows by the weighted mean of the two models'
   cosines (:data:`FUSION_WEIGHT`): a neural and a classical embedding err on different speaker pairs, as
   in score fusion for verification (docs/benchmarks.md, "Diarization", has the benchmark with and
   without it). Windows
   shorter than half a window carry too little voice to place reliably: they are left out of the
   clustering and join the speaker whose centroid they are closest to.
4. **Segments**: every 10 ms frame of speech takes the speaker of the window whose centre is closest
   (so a speaker change falls midway between the centres of two windows that disagree); then, when a
   UBM is at hand (the bundled i-vector's), **re-segmentation** re-labels the speech frames with each
   speaker's GMM adapted to this recording (:mod:`voxprint.diarization.resegment`); runs of frames
   become segments. When the count was estimated, the same frame models then check it for a missed
   speaker (two voices alike to the embedder fall into one cluster): the windows are clustered into one
   speaker more and re-segmented, and the larger count is kept when no two of its speakers' GMMs explain
   each other's frames better than the UBM (every cross likelihood ratio below 0). This step was
   designed after the evaluation half's count errors turned out to be all under-counts; it has no
   fitted constant (0 is the point of no evidence either way) and changes nothing on the calibration
   half (docs/benchmarks.md, "Diarization").

**Overlapped speech** gets a single speaker: every speech frame belongs to exactly one speaker, so
where two people talk at once one of them is missed. ``voxprint eval-diarization`` reports the error
both with overlap scored (the missed second speaker counts) and with ``--skip-overlap``.

**Named speakers**: with a speaker store, each cluster's speech is embedded as one recording (the
model's own inference settings, as the store's enrollments were) and identified with the store's
open-set decision; a match gets the enrolled id, the others ``unknown-1``, ``unknown-2``... in order
of first appearance. Two clusters that match the same enrolled speaker become one speaker.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxprint.audio import load_audio
from voxprint.backends.rows import unit_rows
from voxprint.diarization.clustering import ClusterMethod, cluster_embeddings
from voxprint.diarization.resegment import (MIN_FRAMES, FrameAlignment, cross_likelihood_ratios, frame_model,
                                            has_speech_to_resegment, resegment as resegment_frames)
from voxprint.diarization.segments import Segment, format_rttm, labels_to_segments
from voxprint.diarization.vad import VadMethod, speech_regions
from voxprint.errors import VoxprintError

__all__ = ["FRAME_SECONDS", "FUSION_WEIGHT", "Diarization", "SpeechWindows", "cluster_windows", "clustering_models",
           "diarization_partner", "diarize", "embed_speech", "frame_labels", "partner_space"]

AudioInput = str | os.PathLike | np.ndarray

#: Resolution of the output segments.
FRAME_SECONDS = 0.01
#: Windows shorter than this fraction of ``window_seconds`` are placed after clustering, not clustered.
SHORT_WINDOW_FRACTION = 0.5
#: Weight of the second model's cosine when two windows are compared (chosen with the clustering constants
#: on the calibration half of the simulated conversations, ``bench/diarization.py --calibrate``).
FUSION_WEIGHT = 0.5


@dataclass(frozen=True)
class SpeechWindows:
    """The embedded windows of a recording's speech.

    Attributes:
        regions: ``(N, 2)`` speech regions (start, end seconds) from the VAD.
        embeddings: ``(W, D)`` unit embeddings of the windows, in time order.
        starts: ``(W,)`` window start times in seconds.
        ends: ``(W,)`` window end times in seconds.
        region: ``(W,)`` the region each window belongs to.
        duration: the recording's duration in seconds.
    """

    regions: np.ndarray
    embeddings: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    region: np.ndarray
    duration: float
    partner: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.embeddings)

    def clustering_vectors(self, weight: float = FUSION_WEIGHT) -> np.ndarray:
        """What the clustering compares: the unit embeddings, or with a second model's ``partner`` rows, both
        scaled so that the cosine of two rows is ``(1 - weight) * cos_model + weight * cos_partner``.

        Example:
            >>> w = SpeechWindows(np.zeros((0, 2)), np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2), np.ones(2),
            ...                   np.zeros(2, int), 1.0, partner=np.array([[1.0, 0.0], [1.0, 0.0]]))
            >>> v = w.clustering_vectors(0.5)
            >>> round(float(v[0] @ v[1]), 3)  # cosines 0 (model) and 1 (partner)
            0.5
        """
        own = unit_rows(self.embeddings.astype(np.float64), "window embeddings")
        if self.partner is None:
            return own
        other = unit_rows(self.partner.astype(np.float64), "second-model window embeddings")
        return np.hstack([np.sqrt(1.0 - weight) * own, np.sqrt(weight) * other])


def _window_embeddings(model: Any, pieces: list[np.ndarray], window_seconds: float, hop_seconds: float) -> list:
    """The sliding-window embeddings of each piece of speech with the model's window embedder."""
    frames_per_second = model.sample_rate / int(model.model.frontend.frame_shift)
    window_frames = max(1, int(round(window_seconds * frames_per_second)))
    overlap = 1.0 - hop_seconds / window_seconds
    embedder = model.with_inference(window_frames=window_frames, overlap=min(overlap, 0.999)).windows
    return embedder.embed_many(pieces) if pieces else []


def partner_space(partner: Any) -> Any:
    """The map a second model's window embeddings go through before fusion: its PLDA back-end's LDA, whitening
    and length normalisation when it has one (the space its speakers separate in), else the identity."""
    backend = partner.backend
    return backend.plda.transform if getattr(backend, "plda", None) is not None else (lambda x: x)


def embed_speech(model: Any, wave: np.ndarray, window_seconds: float = 1.5, hop_seconds: float = 0.75,
                 vad: VadMethod = "auto", vad_threshold: float = 0.5, min_speech: float = 0.25,
                 min_silence: float = 0.3, fuse_with: Any = None) -> SpeechWindows:
    """VAD, then window embeddings of each speech region (steps 1 and 2 of the module docstring).

    Args:
        model: a :class:`~voxprint.inference.SpeakerModel`.
        wave: the waveform at the model's sample rate.
        window_seconds: window length.
        hop_seconds: time between window starts (at most ``window_seconds``).
        vad: ``auto`` (Silero when installed), ``silero`` or ``energy``.
        vad_threshold: Silero's speech probability threshold.
        min_speech: shortest speech region kept (seconds).
        min_silence: shortest pause that splits speech (seconds).
        fuse_with: a second model whose embeddings of the same windows (mapped by :func:`partner_space`) become
            the windows' ``partner`` rows; it must cut frames at the same rate as ``model``.

    Returns:
        The regions and their windows (no windows when the VAD finds no speech).

    Raises:
        VoxprintError: window or hop lengths out of range, or a second model whose windows differ.
    """
    if not 0 < hop_seconds <= window_seconds:
        raise VoxprintError(f"need 0 < hop <= window, got window {window_seconds} s and hop {hop_seconds} s")
    rate = model.sample_rate
    regions = speech_regions(wave, rate, method=vad, threshold=vad_threshold, min_speech=min_speech,
                             min_silence=min_silence)
    pieces = [wave[int(round(s * rate)):int(round(e * rate))] for s, e in regions]
    results = _window_embeddings(model, pieces, window_seconds, hop_seconds)
    partner = None
    if fuse_with is not None and results:
        if fuse_with.sample_rate != rate:
            raise VoxprintError(f"the second diarization model runs at {fuse_with.sample_rate} Hz, the model at "
                                f"{rate} Hz; fuse models of the same sample rate")
        others = _window_embeddings(fuse_with, pieces, window_seconds, hop_seconds)
        if [len(r) for r in others] != [len(r) for r in results]:
            raise VoxprintError("the second diarization model cuts other windows than the model (its frame shift "
                                "differs); fuse models with the same frame shift")
        partner = partner_space(fuse_with)(np.concatenate([r.embeddings for r in others]))
    dim = model.embedding_dim
    embeddings = np.concatenate([r.embeddings for r in results]) if results else np.zeros((0, dim), np.float32)
    starts = np.concatenate([r.starts + s for r, (s, _) in zip(results, regions)]) if results else np.zeros(0)
    ends = np.concatenate([r.ends + s for r, (s, _) in zip(results, regions)]) if results else np.zeros(0)
    region = np.concatenate([np.full(len(r), i) for i, r in enumerate(results)]) if results else np.zeros(0, int)
    return SpeechWindows(regions, embeddings, starts, np.minimum(ends, regions[region, 1] if len(region) else ends),
                         region.astype(np.int64), len(wave) / rate, partner)


def frame_labels(windows: SpeechWindows, labels: np.ndarray, frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """The speaker of every frame: that of the closest window centre within its speech region, -1 outside speech.

    Args:
        windows: the embedded windows.
        labels: ``(W,)`` speaker of each window.
        frame_seconds: frame duration.

    Returns:
        ``(ceil(duration / frame_seconds),)`` int64 labels.

    Example:
        >>> w = SpeechWindows(np.array([[0.0, 0.3]]), np.eye(2), np.array([0.0, 0.1]), np.array([0.2, 0.3]),
        ...                   np.array([0, 0]), 0.4)
        >>> frame_labels(w, np.array([0, 1]), 0.05).tolist()
        [0, 0, 0, 1, 1, 1, -1, -1]
    """
    count = int(np.ceil(round(windows.duration / frame_seconds, 6)))
    out = np.full(count, -1, dtype=np.int64)
    centres = (windows.starts + windows.ends) / 2.0
    for index, (start, end) in enumerate(windows.regions):
        members = np.flatnonzero(windows.region == index)
        if not len(members):
            continue
        first, last = int(round(start / frame_seconds)), min(count, int(round(end / frame_seconds)))
        times = (np.arange(first, last) + 0.5) * frame_seconds
        # Window centres are sorted within a region: the closest one is a neighbour of the insertion point.
        mine = centres[members]
        right = np.clip(np.searchsorted(mine, times), 0, len(mine) - 1)
        left = np.clip(right - 1, 0, len(mine) - 1)
        closest = np.where(np.abs(times - mine[left]) <= np.abs(mine[right] - times), left, right)
        out[first:last] = labels[members[closest]]
    return out


@dataclass(frozen=True)
class Diarization:
    """The result of :func:`diarize`.

    Attributes:
        segments: who spoke when, in time order (one speaker per moment: overlap is not split).
        speakers: the speaker labels, in order of first appearance.
        embeddings: speaker label -> its unit embedding (normalised mean of its windows' embeddings).
        duration: the recording's duration in seconds.
        identities: with a store, speaker label -> the identification of its speech (JSON-ready data).
    """

    segments: list[Segment]
    speakers: list[str]
    embeddings: dict[str, np.ndarray]
    duration: float
    identities: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def num_speakers(self) -> int:
        """How many speakers were found."""
        return len(self.speakers)

    def speaker_seconds(self) -> dict[str, float]:
        """Speech seconds of each speaker.

        Example:
            >>> Diarization([Segment(0, 1, "a"), Segment(1, 3, "b"), Segment(3, 4, "a")], ["a", "b"], {}, 4.0
            ...             ).speaker_seconds()
            {'a': 2.0, 'b': 2.0}
        """
        totals = {s: 0.0 for s in self.speakers}
        for seg in self.segments:
            totals[seg.speaker] += seg.duration
        return totals

    def to_rttm(self, file_id: str) -> str:
        """The segments as RTTM lines for ``file_id``.

        Example:
            >>> print(Diarization([Segment(0.5, 2.0, "spk1")], ["spk1"], {}, 3.0).to_rttm("call"), end="")
            SPEAKER call 1 0.500 1.500 <NA> <NA> spk1 <NA> <NA>
        """
        return format_rttm(self.segments, file_id)

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (without the embeddings)."""
        seconds = self.speaker_seconds()
        record: dict[str, Any] = {
            "duration": round(self.duration, 3), "num_speakers": self.num_speakers,
            "speakers": [{"speaker": s, "seconds": round(seconds[s], 3), **({"identification": self.identities[s]}
                                                                           if s in self.identities else {})}
                         for s in self.speakers],
            "segments": [seg.to_dict() for seg in self.segments]}
        return record


def _centroids(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """``(count, D)`` normalised mean embedding of each label."""
    sums = np.zeros((count, embeddings.shape[1]))
    np.add.at(sums, labels, embeddings)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def cluster_windows(windows: SpeechWindows, window_seconds: float, fusion_weight: float = FUSION_WEIGHT,
                    **options: Any) -> np.ndarray:
    """Speaker labels of the windows: the long-enough ones clustered, each short one given the closest centroid's.

    Args:
        windows: the embedded windows.
        window_seconds: the window length they were cut with (windows under half of it are short).
        fusion_weight: the weight of a second model's cosine (:meth:`SpeechWindows.clustering_vectors`).
        **options: options of :func:`~voxprint.diarization.clustering.cluster_embeddings` (``method``,
            ``num_speakers``...).

    Returns:
        ``(W,)`` labels ``0 .. k-1``.
    """
    long = (windows.ends - windows.starts) >= SHORT_WINDOW_FRACTION * window_seconds
    if long.sum() < 2:
        long = np.ones(len(windows), dtype=bool)
    vectors = windows.clustering_vectors(fusion_weight)
    labels = np.empty(len(windows), dtype=np.int64)
    labels[long] = cluster_embeddings(vectors[long], starts=windows.starts[long], ends=windows.ends[long], **options)
    if (~long).any():
        centroids = _centroids(vectors[long], labels[long], int(labels[long].max()) + 1)
        labels[~long] = (vectors[~long] @ centroids.T).argmax(axis=1)
    return labels


def _name_speakers(model: Any, wave: np.ndarray, frames: np.ndarray, count: int, store: Any,
                   ) -> tuple[list[str], dict[int, dict[str, Any]]]:
    """A name for each cluster: the enrolled speaker its speech is identified as, else ``unknown-N``."""
    names: list[str] = []
    found: dict[int, dict[str, Any]] = {}
    step = int(round(FRAME_SECONDS * model.sample_rate))
    unknown = 0
    for label in range(count):
        mask = np.repeat(frames == label, step)[:len(wave)]
        speech = wave[:len(mask)][mask]
        # The store's calibration is for whole recordings embedded with the model's own settings.
        embedding = model.windows(speech).utterance_embedding()
        result = store.identify_embedding(embedding, top_k=3, test_seconds=len(speech) / model.sample_rate)
        found[label] = result.to_dict()
        if result.speaker is not None:
            names.append(result.speaker)
        else:
            unknown += 1
            names.append(f"unknown-{unknown}")
    return names, found


def _grow_count(windows: SpeechWindows, window_seconds: float, labels: np.ndarray, frames: np.ndarray,
                ubm_frames: np.ndarray, ubm: Any, max_speakers: int, alignment: FrameAlignment | None = None,
                **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """One more speaker while the frame models say every speaker of the larger count is a voice of its own.

    The eigengap under-counts when two voices are alike to the embedder: their windows form one community. GMMs
    adapted to this recording's own frames separate such voices better, so the windows are clustered into one
    speaker more, re-segmented, and the larger count is kept when no two of its speakers' GMMs explain each other's
    frames better than the UBM does (every cross likelihood ratio below 0, the point of no evidence either way;
    :func:`~voxprint.diarization.resegment.cross_likelihood_ratios`), and while every speaker keeps the speech
    re-segmentation needs. Over-counts are the window merge's to catch
    (:mod:`voxprint.diarization.clustering`), so the frame models only ever add a speaker.

    Returns:
        The window labels and frame labels of the count kept.
    """
    count = int(labels.max()) + 1
    while count < max_speakers:
        more = cluster_windows(windows, window_seconds, num_speakers=count + 1, **options)
        candidate = frame_labels(windows, more)
        # The test re-segments whatever the speakers' speech; the kept frames are re-segmented only as diarize()
        # would (each speaker with MIN_SPEAKER_FRAMES).
        refined = resegment_frames(candidate, ubm_frames, ubm, min_speaker_frames=0, alignment=alignment)
        # A speaker the re-segmentation emptied (or nearly) has no model: the larger count is not borne out.
        if np.bincount(refined[refined >= 0], minlength=count + 1).min() < MIN_FRAMES \
                or cross_likelihood_ratios(refined, ubm_frames, ubm, alignment=alignment).max() >= 0:
            break
        labels, frames, count = more, refined if has_speech_to_resegment(candidate) else candidate, count + 1
    return labels, frames


@functools.lru_cache(maxsize=4)
def _load_partner(location: str) -> Any:
    from voxprint.inference import load_model

    return load_model(location)


def _frame_gmm(model: Any, partner: Any) -> Any:
    """The UBM and frames for re-segmentation: the second model's, else the model's own, else None."""
    for candidate in (partner, model):
        found = frame_model(candidate) if candidate is not None else None
        if found is not None:
            return found
    return None


def diarization_partner(model: Any, fuse_with: Any = "auto") -> Any:
    """The second model whose window embeddings the diarization fuses with ``model``'s, or None.

    Args:
        model: the diarization's model.
        fuse_with: ``"auto"`` (the model ``model``'s ``meta.json`` names under ``diarization.fuse_with``: a
            built-in model or a folder relative to the model's; None when it names none), None (no second
            model), or a loaded model.

    Returns:
        The second model (loaded once per process for ``"auto"``), or None.

    Raises:
        ModelError: the named model cannot be loaded.

    Example:
        >>> import voxprint
        >>> diarization_partner(voxprint.load_model("default")).model_dir.name
        'ivector'
    """
    if not isinstance(fuse_with, str):
        return fuse_with
    if fuse_with != "auto":
        raise VoxprintError(f"fuse_with must be 'auto', None or a model, not {fuse_with!r}")
    named = (getattr(model, "meta", None) or {}).get("diarization", {}).get("fuse_with")
    if named is None:
        return None
    from voxprint.runs import is_builtin

    folder = getattr(model, "model_dir", None)
    location = named if is_builtin(named) or folder is None else str((Path(folder) / named).resolve())
    return _load_partner(location)


def clustering_models(model: Any, fuse_with: Any = "auto") -> tuple[Any, Any]:
    """The model whose windows the diarization clusters, and the second model fused with them.

    A fusion of models (:class:`~voxprint.inference.fused.FusedEmbedder`) clusters its first part's windows
    fused with its second part's (``fuse_with="auto"``), the way the default model fuses the partner its
    ``meta.json`` names; the whole fusion still names the speakers against a store of its own. Any other model
    clusters its own windows with :func:`diarization_partner`'s.

    Example:
        >>> import voxprint
        >>> [m.model_dir.name for m in clustering_models(voxprint.load_model("fused"))]
        ['default', 'ivector']
    """
    parts = getattr(model, "parts", None)
    if parts:
        return parts[0], parts[1] if isinstance(fuse_with, str) and fuse_with == "auto" else \
            diarization_partner(parts[0], fuse_with)
    return model, diarization_partner(model, fuse_with)


def diarize(model: Any, audio: AudioInput, sample_rate: int | None = None, *, num_speakers: int | None = None,
            min_speakers: int = 1, max_speakers: int = 8, method: ClusterMethod = "spectral",
            ahc_threshold: float | None = None, window_seconds: float = 1.5, hop_seconds: float = 0.75,
            vad: VadMethod = "auto", vad_threshold: float = 0.5, min_speech: float = 0.25, min_silence: float = 0.3,
            store: Any = None, windows: SpeechWindows | None = None, fuse_with: Any = "auto",
            resegment: bool = True) -> Diarization:
    """Who spoke when in one recording (see the module docstring for each step).

    Args:
        model: a :class:`~voxprint.inference.SpeakerModel`, or a fusion of models (:func:`clustering_models`).
        audio: a file path, or a waveform array (then ``sample_rate`` is required).
        sample_rate: the rate of an array ``audio``.
        num_speakers: the number of speakers, when known.
        min_speakers: the fewest speakers to find.
        max_speakers: the most speakers to find.
        method: ``spectral`` (neighbour graph, eigengap count; the default), ``wang`` (Wang et al.'s
            refinement), ``spectralcluster`` (Google's package, for comparison) or ``ahc`` (average linkage
            with a threshold); see :mod:`voxprint.diarization.clustering`.
        ahc_threshold: the ``ahc`` stopping threshold on cosine scores (default: the calibrated one).
        window_seconds: embedding window length.
        hop_seconds: time between window starts.
        vad: ``auto`` (Silero when installed, else energy), ``silero`` or ``energy``.
        vad_threshold: Silero's speech probability threshold.
        min_speech: shortest speech region kept (seconds).
        min_silence: shortest pause that splits speech (seconds).
        store: a :class:`~voxprint.store.SpeakerStore` of the same model: clusters identified as an enrolled
            speaker get that speaker's id.
        windows: this recording's windows from :func:`embed_speech` (same window, hop and VAD settings), to
            cluster again without embedding again; the audio is then read only for ``store``.
        fuse_with: the second model whose window embeddings are fused with the model's for the clustering
            (:func:`diarization_partner`: ``"auto"`` takes the one the model's ``meta.json`` names; None: none).
        resegment: re-label the speech frames with GMMs of each speaker adapted to this recording
            (:mod:`voxprint.diarization.resegment`), when the second model or the model has a UBM (the bundled
            i-vector has), and, when the count is estimated, let those GMMs add a speaker the clustering missed;
            the audio is then read even when ``windows`` are given.

    Returns:
        The :class:`Diarization`.

    Raises:
        AudioError: the audio cannot be read or is too short or long for the model.
        VoxprintError: inconsistent options.

    Example:
        >>> import voxprint
        >>> from voxprint.paths import data_root
        >>> sample = data_root() / "pyannote-sample" / "sample.wav"
        >>> result = diarize(voxprint.load_model("default"), sample, num_speakers=2)
        >>> result.speakers, result.segments[0].start
        (['spk1', 'spk2'], 6.75)
    """
    window_model, partner = clustering_models(model, fuse_with)
    gmm = _frame_gmm(window_model, partner) if resegment else None
    wave = None
    if windows is None or store is not None or gmm is not None:
        wave = load_audio(audio, sample_rate=sample_rate, target_rate=model.sample_rate,
                          min_seconds=model.min_seconds, max_seconds=model.max_seconds)
    if windows is None:
        windows = embed_speech(window_model, wave, window_seconds, hop_seconds, vad=vad, vad_threshold=vad_threshold,
                               min_speech=min_speech, min_silence=min_silence, fuse_with=partner)
    if not len(windows):
        return Diarization([], [], {}, windows.duration)
    options = {"method": method, "min_speakers": min_speakers, "threshold": ahc_threshold}
    labels = cluster_windows(windows, window_seconds, num_speakers=num_speakers, max_speakers=max_speakers, **options)
    frames = frame_labels(windows, labels)
    if gmm is not None and wave is not None and has_speech_to_resegment(frames):
        ubm, frames_of = gmm
        ubm_frames = frames_of(wave)
        # Every labelling of the windows gives the same speech frames: their UBM alignment is made once.
        alignment = FrameAlignment.of_speech(frames, ubm_frames, ubm)
        frames = resegment_frames(frames, ubm_frames, ubm, alignment=alignment)
        if num_speakers is None:
            labels, frames = _grow_count(windows, window_seconds, labels, frames, ubm_frames, ubm, max_speakers,
                                         alignment, **options)
    # Number the speakers in order of first appearance in time (a short window may come before a long one).
    order = list(dict.fromkeys(frames[frames >= 0].tolist()))
    rank = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    labels, frames = rank[labels], np.where(frames >= 0, rank[np.maximum(frames, 0)], -1)
    keep = labels >= 0
    count = len(order)
    centroids = _centroids(windows.embeddings[keep], labels[keep], count)
    identities: dict[str, dict[str, Any]] = {}
    if store is not None and wave is not None:
        names, found = _name_speakers(model, wave, frames, count, store)
        identities = {names[label]: found[label] for label in range(count)}
    else:
        names = [f"spk{i + 1}" for i in range(count)]
    segments = labels_to_segments(frames, FRAME_SECONDS, names)
    if store is not None and len(set(names)) < count:
        # Two clusters named as the same enrolled speaker are one speaker: join their touching segments.
        from voxprint.diarization.segments import merge_segments

        segments = merge_segments(segments, max_gap=0.0)
    speakers = list(dict.fromkeys(seg.speaker for seg in segments))
    embeddings = {}
    for name in speakers:
        members = [label for label in range(count) if names[label] == name]
        mean = centroids[members].sum(axis=0)
        embeddings[name] = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return Diarization(segments, speakers, embeddings, windows.duration,
                       {s: identities[s] for s in speakers if s in identities})
