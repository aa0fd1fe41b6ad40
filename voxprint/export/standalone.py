"""Embedding with an ONNX export and no torch: kaldi-native-fbank frames, numpy windows, onnxruntime.

:func:`voxprint.load_model` runs an export inside voxprint's torch pipeline; importing torch alone takes
seconds. This module imports only numpy, soundfile/soxr (through :mod:`voxprint.audio`), onnxruntime
and kaldi-native-fbank, and computes the embedding from ``export.json`` alone, as a deployment in
another language would:

1. decode, mix down and resample (:func:`voxprint.audio.load_audio`; VAD when the model uses it);
2. Kaldi filterbanks with the recorded options (:func:`~voxprint.export.metadata.kaldi_fbank_options`)
   on the waveform times the recorded sample scale;
3. the recorded inference windows (every hop, the last aligned to the end), each mean-normalised
   when the recorded normalisation is ``segment``;
4. the graph on each batch of windows, each embedding L2-normalised, the utterance embedding the
   normalised mean of the window embeddings.

It covers the ``fbank`` front-end with ``segment`` or ``none`` normalisation (the bundled model's
kind); other front-ends need voxprint's loader.

The windows start where :func:`voxprint.windowing.window_starts` puts them for every runtime.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from voxprint.backends.verifier import BackendVerification
from voxprint.errors import ModelError
from voxprint.windowing import window_starts

__all__ = ["StandaloneEmbedder", "onnxruntime_session"]

#: What to tell a user whose environment lacks onnxruntime.
INSTALL_HINT = "install it with: pip install 'voxprint[onnx]'"


def onnxruntime_session(path: str | os.PathLike, threads: int = 1) -> Any:
    """An onnxruntime CPU session for the graph at ``path``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads.

    Returns:
        The ``onnxruntime.InferenceSession``.

    Raises:
        ModelError: onnxruntime is not installed, or it cannot load the graph.
    """
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(f"{path} is an ONNX model but onnxruntime is not installed; {INSTALL_HINT}") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path}: onnxruntime cannot load this graph ({detail[:300]})") from None


class StandaloneEmbedder(BackendVerification):
    """Embeds recordings with an exported ONNX model folder, without torch (see the module docstring); it
    verifies with the folder's back-end and threshold like a loaded model
    (:class:`~voxprint.backends.verifier.BackendVerification`).

    Args:
        folder: the exported model folder.
        threads: onnxruntime intra-op threads.
        max_seconds: longest recording accepted (None: no limit).
        batch_frames: the most frames one graph call receives (whole windows, at least one).

    Raises:
        ModelError: the folder is not a usable export, or its front-end or normalisation is not
            supported here.
    """

    def __init__(self, folder: str | os.PathLike, threads: int = 1, max_seconds: float | None = 4 * 3600.0,
                 batch_frames: int = 16384):
        from voxprint.export.metadata import kaldi_fbank_options, read_export_record
        from voxprint.runs.layout import read_meta

        self.folder = Path(folder)
        record = read_export_record(self.folder)
        if record["format"] != "onnx":
            raise ModelError(f"{self.folder} is not an ONNX export")
        frontend = record["frontend"]
        self.normalize = frontend["normalization"]["mode"]
        if not self.supports(record):
            raise ModelError(f"{self.folder}: {self.normalize} normalisation needs voxprint's loader (load_model)")
        self.options = kaldi_fbank_options(frontend)
        self.scale = float(frontend["sample_scale"])
        self.sample_rate = int(frontend["sample_rate"])
        inference = record["inference"]
        self.window, self.overlap = int(inference["window_frames"]), float(inference["overlap"])
        self.min_seconds = float(inference["min_seconds"])
        vad = inference["vad"]
        self.vad_threshold_db = vad["threshold_db"] if vad["enabled"] else None
        self.max_seconds = max_seconds
        self.batch_frames = int(batch_frames)
        self.session = onnxruntime_session(self.folder / record["file"], threads)
        self.input_name = self.session.get_inputs()[0].name
        self.record = record
        self.meta = read_meta(self.folder)
        self.model_dir = self.folder
        self._backend = None

    @staticmethod
    def supports(record: dict[str, Any]) -> bool:
        """Whether this embedder runs the export described by ``record`` (its ``export.json``): an
        ONNX graph with a ``segment`` or ``none`` mean normalisation."""
        return record["format"] == "onnx" and record["frontend"]["normalization"]["mode"] in ("segment", "none")

    def features(self, wave: np.ndarray) -> np.ndarray:
        """Kaldi filterbank frames (F, D) of a waveform at the model's rate (before normalisation).

        Raises:
            AudioError: the waveform is shorter than one frame.
        """
        import kaldi_native_fbank as knf

        from voxprint.errors import AudioError

        fbank = knf.OnlineFbank(self.options)
        fbank.accept_waveform(self.sample_rate, np.asarray(wave, dtype=np.float32) * self.scale)
        fbank.input_finished()
        if fbank.num_frames_ready == 0:
            raise AudioError(f"audio of {len(wave)} samples is shorter than one analysis window")
        return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).astype(np.float32)

    def window_embeddings(self, wave: np.ndarray) -> np.ndarray:
        """Unit embeddings (W, E) of a waveform's inference windows."""
        frames = self.features(wave)
        length = min(self.window, len(frames))
        windows = np.stack([frames[s:s + length] for s in window_starts(len(frames), self.window, self.overlap)])
        if self.normalize == "segment":
            windows = windows - windows.mean(axis=1, keepdims=True)
        per_call = max(1, self.batch_frames // length)
        outputs = [self.session.run(None, {self.input_name: np.ascontiguousarray(windows[i:i + per_call])})[0]
                   for i in range(0, len(windows), per_call)]
        embeddings = np.concatenate(outputs)
        return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)

    def extract_embedding(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """Embedding (unit vector, float32) of a file path or a waveform array (``sample_rate`` required).

        Raises:
            AudioError: the recording cannot be used (as :func:`voxprint.audio.load_audio` says).
        """
        from voxprint.audio import load_audio, remove_silence

        wave = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate,
                          min_seconds=self.min_seconds, max_seconds=self.max_seconds)
        if self.vad_threshold_db is not None:
            wave = remove_silence(wave, self.sample_rate, threshold_db=self.vad_threshold_db)
        mean = self.window_embeddings(wave).mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def extract_embeddings(self, audios: list[str | os.PathLike | np.ndarray]) -> np.ndarray:
        """Embeddings (n, E) of several recordings (file paths; arrays must be at the model's rate)."""
        return np.stack([self.extract_embedding(a, self.sample_rate if isinstance(a, np.ndarray) else None)
                         for a in audios])

    def compute_similarity(self, a: str | os.PathLike | np.ndarray, b: str | os.PathLike | np.ndarray) -> float:
        """Cosine similarity of two recordings' embeddings (in [-1, 1]; not calibrated)."""
        return float(self.extract_embedding(a) @ self.extract_embedding(b))
