"""Embedding with an ONNX export and no torch: Kaldi filterbank frames in numpy, numpy windows, onnxruntime.

:func:`voxprint.load_model` runs an export inside voxprint's torch pipeline; importing torch alone takes
seconds. This module imports only numpy, soundfile/soxr (through :mod:`voxprint.audio`), onnxruntime
and kaldi-native-fbank (threadpoolctl too, when installed), and computes the embedding from ``export.json``
alone, as a deployment in another language would:

1. decode, mix down and resample (:func:`voxprint.audio.load_audio`; VAD when the model uses it);
2. Kaldi filterbanks with the recorded options (:func:`~voxprint.export.metadata.kaldi_fbank_options`)
   on the waveform times the recorded sample scale (:class:`KaldiFbank`: kaldi-native-fbank's own mel
   banks and window, the per-frame arithmetic vectorised in numpy);
3. the recorded inference windows (every hop, the last aligned to the end), each mean-normalised
   when the recorded normalisation is ``segment``;
4. the graph on each batch of windows, each embedding L2-normalised, the utterance embedding the
   normalised mean of the window embeddings.

It covers the ``fbank`` front-end with ``segment`` or ``none`` normalisation (the bundled model's
kind); other front-ends need voxprint's loader.

Everything else a model does with recordings (bulk embedding with ``--on-error`` and decode workers, data
folders, trial lists with the folder's back-end, verification, the speaker store's enrollment and
identification) is the torch-free :class:`~voxprint.backends.verifier.WindowedEmbedder`, shared with
:class:`~voxprint.inference.SpeakerModel`: the CLI's ``embed``, ``eval``, ``eval-id``, ``similarity``,
``verify``, ``enroll`` and ``identify`` run an export through this class without importing torch.

The windows start where :func:`voxprint.windowing.window_starts` puts them for every runtime.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from voxprint.backends.verifier import WindowedEmbedder
from voxprint.errors import ModelError
from voxprint.windowing import WindowEmbeddings, window_starts

__all__ = ["KaldiFbank", "StandaloneEmbedder", "StandaloneWindows", "onnxruntime_session"]

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
    # Everything else is onnxruntime's default, which measured best on ECAPA-TDNN (one thread, float32 and
    # int8): all graph optimisations, sequential execution, the memory arena and patterns. Disabling the
    # NHWC layout transformer of the quantized convolutions, turning the arena or the memory patterns off,
    # or flushing denormals (the graph produces none) changed nothing beyond the noise, and loading takes
    # 20-30 ms, so a saved optimised graph (which would also be specific to this CPU) gains nothing.
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path}: onnxruntime cannot load this graph ({detail[:300]})") from None


class KaldiFbank:
    """Kaldi filterbank frames of a waveform (``compute-fbank --dither=0 --snip-edges=true``), vectorised in numpy.

    kaldi-native-fbank's ``OnlineFbank`` computes one frame at a time in plain C++ (about 1.5 ms per
    second of audio here, more than the int8 encoder); this takes its mel banks and analysis window
    from kaldi-native-fbank (``MelBanks``, ``FeatureWindowFunction``: Kaldi's definitions, not ours) and
    does the per-frame arithmetic on all frames at once, in float32 as Kaldi does: DC removal,
    pre-emphasis within each frame (the first sample against itself), windowing, a zero-padded real FFT,
    power, mel weights, log with the recorded floor. Pre-emphasis is one pass over the waveform, not
    over every frame (frames overlap 2.5 times): inside a frame it is the waveform's own pre-emphasis,
    except for the first sample, which is set apart; each frame's mean comes from sums over blocks, and
    removing it shifts every pre-emphasised sample by ``(1 - c)`` times it. The FFT is scipy's, which
    transforms float32 natively (numpy's converts to float64 and back, and was the largest cost here); it
    is imported with the first filterbank (about 0.05 s where scipy is already loaded, as the back-end
    loads it). The frames agree with ``OnlineFbank``'s to float32 rounding (at most ~0.01 in the log of
    near-silent bands), about 4x faster. Frames are computed in blocks of :attr:`BLOCK_FRAMES`, so memory
    stays bounded on long recordings and the work stays in cache. The waveform's scaling (Kaldi's 16-bit
    range) is applied to the mel weights, as its square, instead of to every sample: a power of two, as
    Kaldi's 32768 is, leaves every frame bit for bit the same.

    Args:
        frontend: the ``frontend`` entry of ``export.json`` (an ``fbank`` front-end).
        threads: numpy's BLAS threads for the mel weights (threadpoolctl caps them during a call, when
            installed: an uncapped OpenBLAS pool spinning on a busy machine cost more than the rest).

    Raises:
        ModelError: the front-end is not ``fbank`` or kaldi-native-fbank is not installed.
    """

    #: Frames per block. Every array a block allocates (the zero-padded frames, the spectrum) stays under
    #: glibc's default 128 KiB mmap threshold: larger ones may be fresh pages from the kernel on every block.
    #: In a process that has not imported torch, as the torch-free CLI, blocks of 128 frames spent longer
    #: faulting in their spectra than transforming them (0.37-0.39 ms per second of audio on one thread, against
    #: 0.24 with 48 frames); where the allocator's thresholds have grown, as after torch, both ran at about
    #: 0.22. Blocks of a minute of audio also spilled out of the caches (long recordings ran markedly slower).
    BLOCK_FRAMES = 48

    def __init__(self, frontend: dict[str, Any], threads: int = 1):
        from voxprint.export.metadata import kaldi_fbank_options

        options = kaldi_fbank_options(frontend)  # checks the kind and imports kaldi-native-fbank
        import kaldi_native_fbank as knf

        frame = options.frame_opts
        self.frame_length, self.frame_shift = int(frontend["frame_length"]), int(frontend["frame_shift"])
        self.n_fft = int(frontend["n_fft"])
        self.scale = float(frontend["sample_scale"])
        self.preemphasis = float(frame.preemph_coeff)
        self.remove_dc_offset = bool(frame.remove_dc_offset)
        self.floor = np.float32(options.eps)
        self.window = np.asarray(knf.FeatureWindowFunction(frame).window, dtype=np.float32)
        banks = np.asarray(knf.MelBanks(options.mel_opts, frame, 1.0).get_matrix(), dtype=np.float32)
        self.banks = np.ascontiguousarray(banks.T)  # (n_fft // 2 + 1, n_mels)
        # The power spectrum of scale * x is scale^2 times that of x: one multiplication of the weights.
        self._scaled_banks = (self.banks * np.float32(self.scale) ** 2).astype(np.float32)
        if len(self.window) != self.frame_length or self.banks.shape[0] != self.n_fft // 2 + 1:
            raise ModelError("kaldi-native-fbank's window or mel banks do not match the recorded front-end")
        self.threads = int(threads)
        try:
            from threadpoolctl import ThreadpoolController

            self._blas: Any = ThreadpoolController()
        except ImportError:  # pragma: no cover - installed with scikit-learn
            self._blas = None

    @property
    def dim(self) -> int:
        """Mel bands per frame."""
        return int(self.banks.shape[1])

    def num_frames(self, num_samples: int) -> int:
        """Frames of ``num_samples`` samples (``snip_edges``: whole windows only)."""
        return 0 if num_samples < self.frame_length else 1 + (num_samples - self.frame_length) // self.frame_shift

    def _frame_sums(self, samples: np.ndarray, total: int) -> np.ndarray:
        """Each frame's sum of samples, float64. Frames start every ``frame_shift`` samples and span
        ``frame_length``: both are whole numbers of blocks of their greatest common divisor (80 samples
        at 16 kHz), so the samples are summed block by block (numpy's vectorised, pairwise reduction) and
        only the few block sums go through a running sum; a running sum over every sample cost 4x more.

        Example:
            >>> fbank = KaldiFbank.__new__(KaldiFbank)
            >>> fbank.frame_length, fbank.frame_shift = 4, 2
            >>> fbank._frame_sums(np.arange(8, dtype=np.float32), 3).tolist()
            [6.0, 14.0, 22.0]
        """
        block = math.gcd(self.frame_length, self.frame_shift)
        used = (total - 1) * self.frame_shift + self.frame_length
        blocks = samples[:used].reshape(-1, block).sum(axis=1, dtype=np.float64)
        running = np.concatenate(([0.0], np.cumsum(blocks)))
        first_block = np.arange(total) * (self.frame_shift // block)
        return running[first_block + self.frame_length // block] - running[first_block]

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """Log mel energies (F, n_mels), float32, of a waveform in [-1, 1] (F may be 0)."""
        if self._blas is None:
            return self._compute(wave)
        with self._blas.limit(limits=self.threads, user_api="blas"):
            return self._compute(wave)

    def _compute(self, wave: np.ndarray) -> np.ndarray:
        from scipy import fft  # float32 transforms; imported here so that loading an embedder stays fast

        samples = np.asarray(wave, dtype=np.float32)  # OnlineFbank is fed scale * samples: see _scaled_banks
        total = self.num_frames(len(samples))
        out = np.empty((total, self.dim), dtype=np.float32)
        if total == 0:
            return out
        c = np.float32(self.preemphasis)
        emphasised = np.empty_like(samples)
        np.multiply(samples[:-1], -c, out=emphasised[1:])
        emphasised[1:] += samples[1:]
        emphasised[0] = (1 - c) * samples[0]  # as every frame's first sample is (each is set apart below)
        starts = np.arange(total) * self.frame_shift
        # A frame's first sample is emphasised against itself, (1 - c) x[0], not against the one before it.
        first = (1 - c) * samples[starts]
        if self.remove_dc_offset:
            shift = ((1 - c) * self._frame_sums(samples, total) / self.frame_length).astype(np.float32)
            first -= shift
        frames = np.lib.stride_tricks.sliding_window_view(emphasised, self.frame_length)[::self.frame_shift]
        # One zero-padded buffer for every block: the transform does not write into it, so the padding stays zero.
        buffer = np.zeros((min(total, self.BLOCK_FRAMES), self.n_fft), dtype=np.float32)
        for begin in range(0, total, self.BLOCK_FRAMES):
            rows = slice(begin, min(total, begin + self.BLOCK_FRAMES))
            work = buffer[:rows.stop - rows.start]
            body = work[:, :self.frame_length]
            if self.remove_dc_offset:
                np.subtract(frames[rows], shift[rows, None], out=body)
            else:
                body[:] = frames[rows]
            body[:, 0] = first[rows]
            body *= self.window
            # Squared in place as interleaved (real, imaginary) floats, then summed in pairs: two passes.
            spectrum = fft.rfft(work, workers=1).view(np.float32)
            np.square(spectrum, out=spectrum)
            power = np.add(spectrum[:, 0::2], spectrum[:, 1::2])
            mel = power @ self._scaled_banks
            np.log(np.maximum(mel, self.floor, out=mel), out=out[rows])
        return out


class StandaloneWindows:
    """The sliding windows of a :class:`StandaloneEmbedder`: what
    :class:`~voxprint.inference.windows.SlidingWindowEmbedder` is to a :class:`~voxprint.inference.SpeakerModel`,
    in numpy and onnxruntime.

    Args:
        embedder: the embedder whose front-end and graph run the windows.
        window_frames: window length in frames.
        overlap: fraction of a window shared with the next, in [0, 1).
    """

    def __init__(self, embedder: "StandaloneEmbedder", window_frames: int, overlap: float):
        self.embedder = embedder
        self.window_frames = int(window_frames)
        self.overlap = float(overlap)

    def features(self, wave: np.ndarray) -> np.ndarray:
        """The frames (F, D) of one waveform (the ``segment`` normalisation happens per window).

        Raises:
            AudioError: the waveform is shorter than one frame.
        """
        return self.embedder.features(wave)

    def embed_features(self, features: list[np.ndarray]) -> list[WindowEmbeddings]:
        """Window embeddings from the :meth:`features` of several recordings (each recording's windows go
        through the graph in their own batches of at most ``batch_frames`` frames)."""
        return [self._embed(frames) for frames in features]

    def embed_many(self, waves: list[np.ndarray]) -> list[WindowEmbeddings]:
        """Window embeddings of several waveforms."""
        return self.embed_features([self.features(w) for w in waves])

    def __call__(self, wave: np.ndarray) -> WindowEmbeddings:
        """The window embeddings of one waveform (at the model's sample rate)."""
        return self._embed(self.features(wave))

    def _embed(self, frames: np.ndarray) -> WindowEmbeddings:
        e = self.embedder
        length = min(self.window_frames, len(frames))
        starts = window_starts(len(frames), self.window_frames, self.overlap)
        per_call = max(1, e.batch_frames // length)
        outputs = []
        # One batch of windows at a time: stacking every window of a long recording first would copy its
        # frames 1 / (1 - overlap) times over.
        for i in range(0, len(starts), per_call):
            chosen = starts[i:i + per_call]
            # A lone window is a view of the frames (no copy unless the normalisation makes its own).
            batch = (frames[None, chosen[0]:chosen[0] + length] if len(chosen) == 1
                     else np.stack([frames[s:s + length] for s in chosen]))
            if e.normalize == "segment":
                batch = batch - batch.mean(axis=1, keepdims=True)
            outputs.append(e.session.run(None, {e.input_name: np.ascontiguousarray(batch)})[0])
        embeddings = np.concatenate(outputs).astype(np.float32)
        embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        begin = np.asarray(starts, dtype=np.float64) * e.frame_shift
        end = begin + e.frame_length + (length - 1) * e.frame_shift
        return WindowEmbeddings(embeddings, begin / e.sample_rate, end / e.sample_rate)


class StandaloneEmbedder(WindowedEmbedder):
    """Embeds recordings with an exported ONNX model folder, without torch (see the module docstring).

    It is a :class:`~voxprint.backends.verifier.WindowedEmbedder` like a loaded
    :class:`~voxprint.inference.SpeakerModel`: ``embed_many``, ``embed_folder``, ``score_trial_list``,
    ``verification_score`` with the folder's back-end and threshold, and what a speaker store needs
    (``identity``, ``load_waveform``, ``windows``, ``with_inference``), all without torch.

    Args:
        folder: the exported model folder.
        threads: onnxruntime intra-op threads.
        max_seconds: longest recording accepted (None: no limit).
        batch_frames: the most frames one graph call receives (whole windows, at least one).

    Attributes:
        identity: the identity a speaker store records: that of the exported graph and the back-end, the
            same as :func:`voxprint.load_model` gives the folder, so either may use the other's store.

    Raises:
        ModelError: the folder is not a usable export, or its front-end or normalisation is not
            supported here.
    """

    def __init__(self, folder: str | os.PathLike, threads: int = 1, max_seconds: float | None = 4 * 3600.0,
                 batch_frames: int = 16384):
        from voxprint.config import DEFAULTS, merge
        from voxprint.export.metadata import read_export_record
        from voxprint.runs import BACKEND_DIR, model_identity, read_meta

        self.folder = Path(folder)
        record = read_export_record(self.folder)
        if record["format"] != "onnx":
            raise ModelError(f"{self.folder} is not an ONNX export")
        frontend = record["frontend"]
        self.normalize = frontend["normalization"]["mode"]
        if not self.supports(record):
            raise ModelError(f"{self.folder}: {self.normalize} normalisation needs voxprint's loader (load_model)")
        self.fbank = KaldiFbank(frontend, threads)  # checks the front-end's kind and options
        self.sample_rate = int(frontend["sample_rate"])
        self.frame_length, self.frame_shift = int(frontend["frame_length"]), int(frontend["frame_shift"])
        inference = record["inference"]
        self.window_frames, self.overlap = int(inference["window_frames"]), float(inference["overlap"])
        self.min_seconds = float(inference["min_seconds"])
        vad = inference["vad"]
        self.vad_threshold_db = vad["threshold_db"] if vad["enabled"] else None
        self.max_seconds = max_seconds
        self.batch_frames = int(batch_frames)
        self.session = onnxruntime_session(self.folder / record["file"], threads)
        self.input_name = self.session.get_inputs()[0].name
        self.record = record
        self.config = merge(DEFAULTS, record["config"])  # as load_model reads it
        self.meta = read_meta(self.folder)
        self.model_dir = self.folder
        backend = self.folder / BACKEND_DIR
        self.identity = model_identity(record["sha256"], backend if backend.is_dir() else None)
        self._backend = None

    @staticmethod
    def supports(record: dict[str, Any]) -> bool:
        """Whether this embedder runs the export described by ``record`` (its ``export.json``): an
        ONNX graph with a ``segment`` or ``none`` mean normalisation."""
        return record["format"] == "onnx" and record["frontend"]["normalization"]["mode"] in ("segment", "none")

    @property
    def embedding_dim(self) -> int:
        """The embedding size (from ``export.json``)."""
        return int(self.record["embedding_dim"])

    @property
    def windows(self) -> StandaloneWindows:
        """The sliding-window embedder with this embedder's window settings."""
        return StandaloneWindows(self, self.window_frames, self.overlap)

    def features(self, wave: np.ndarray) -> np.ndarray:
        """Kaldi filterbank frames (F, D) of a waveform at the model's rate (before normalisation).

        Raises:
            AudioError: the waveform is shorter than one frame.
        """
        from voxprint.errors import AudioError

        frames = self.fbank(wave)
        if len(frames) == 0:
            raise AudioError(f"audio of {len(wave)} samples is shorter than one analysis window")
        return frames

    def window_embeddings(self, wave: np.ndarray) -> np.ndarray:
        """Unit embeddings (W, E) of a waveform's inference windows."""
        return self.windows(wave).embeddings
