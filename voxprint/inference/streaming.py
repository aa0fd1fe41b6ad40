"""Streaming embeddings: feed audio chunk by chunk, get the embedding of the last seconds and of the whole stream.

:class:`StreamingEmbedder` keeps the state an offline extraction would need, and no more:

- **frames** are computed once, as their samples arrive: a frame depends only on its own samples
  (Kaldi framing with snip-edges), so the streamed frames are the offline frames. Samples are kept
  only until the frames that need them exist;
- **whole stream**: the offline embedding of a recording of ``n`` frames is the normalised mean of the
  embeddings of the windows :func:`~voxprint.inference.windows.window_starts` places - windows every
  hop, plus one aligned to the end (or one window of everything while ``n`` is shorter than a
  window). Windows on the hop grid never change once complete, so each is embedded once and kept (one
  vector per hop); only the end-aligned window is recomputed as the stream grows. The whole-stream
  embedding after the last chunk is therefore the offline embedding of the same audio;
- **recent**: the embedding of the last ``recent_seconds``, computed as an offline extraction of just
  that audio would compute it.

Frames older than the next grid window and the recent span are dropped, so memory does not grow with
the stream. Each update reports its latency (the time :meth:`StreamingEmbedder.push` took).

Models whose features need the future are refused: ``sliding`` mean normalisation (a centred window of
frames) and VAD (which trims silence using the whole recording).

Example:
    >>> import numpy as np
    >>> from voxprint.inference import load_model
    >>> model = load_model("default")
    >>> stream = StreamingEmbedder(model, recent_seconds=1.0)
    >>> wave = (0.1 * np.sin(np.arange(32000) / 7)).astype(np.float32)
    >>> updates = [stream.push(wave[i:i + 1600]) for i in range(0, len(wave), 1600)]
    >>> updates[1].whole is None, updates[-1].recent.shape, round(updates[-1].seconds, 1)
    (True, (192,), 2.0)
    >>> offline = model.extract_embedding(wave, sample_rate=16000)
    >>> bool(float(stream.finish() @ offline) > 0.9999)
    True
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from voxprint.errors import AudioError, ModelError
from voxprint.inference.windows import WindowEmbeddings, window_starts

__all__ = ["StreamingEmbedder", "StreamingUpdate"]


@dataclass(frozen=True)
class StreamingUpdate:
    """The embeddings after one chunk.

    Attributes:
        seconds: audio received so far.
        recent: unit embedding of the last ``recent_seconds`` (None while less than the model's
            minimum duration has arrived).
        whole: unit embedding of the whole stream so far, as offline extraction would give it (None
            likewise, and on chunks skipped by ``whole_every``).
        latency: seconds :meth:`StreamingEmbedder.push` spent on this chunk.
    """

    seconds: float
    recent: np.ndarray | None
    whole: np.ndarray | None
    latency: float


class StreamingEmbedder:
    """Embeds a stream of audio chunks (see the module docstring).

    Args:
        model: a :class:`~voxprint.inference.SpeakerModel` (PyTorch or an ONNX export); its inference
            windows define the whole-stream embedding.
        recent_seconds: span of the ``recent`` embedding.
        whole_every: update the whole-stream embedding every this many chunks (it re-embeds the
            end-aligned window, up to one inference window of audio; the recent embedding is updated
            on every chunk).

    Raises:
        ModelError: the model's features need future audio (``sliding`` normalisation, VAD), or it is a fusion
            of models.
        ValueError: ``recent_seconds`` or ``whole_every`` is not positive.
    """

    def __init__(self, model: Any, recent_seconds: float = 3.0, whole_every: int = 1):
        if recent_seconds <= 0 or whole_every < 1:
            raise ValueError("recent_seconds must be positive and whole_every at least 1")
        if getattr(model, "model", None) is None:
            raise ModelError("streaming needs one model's front-end and encoder; a fusion of models does not stream "
                             "(stream one of its parts)")
        if model.model.normalize == "sliding":
            raise ModelError("streaming needs features that do not depend on future audio; this model's sliding "
                             "mean normalisation uses frames on both sides")
        if model.vad_threshold_db is not None:
            raise ModelError("streaming cannot apply this model's VAD, which trims silence using the whole recording")
        self.model = model
        self.embedder = model.windows
        self.frontend = model.model.frontend
        self.sample_rate = int(model.sample_rate)
        self.window = int(model.window_frames)
        self.hop = window_starts(2 * self.window, self.window, model.overlap)[1]
        self.recent_frames = max(1, self.frontend.num_frames(int(round(recent_seconds * self.sample_rate))))
        self.whole_every = int(whole_every)
        self.min_samples = max(int(np.ceil(model.min_seconds * self.sample_rate)), int(self.frontend.num_samples(1)))
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next chunk starts a new one."""
        self._samples = np.zeros(0, dtype=np.float32)  # samples from frame self._frames_done on
        self._received = 0
        self._frames_done = 0
        self._first = 0  # index of the first kept frame
        self._frames = torch.zeros(0, 0)
        self._grid: list[np.ndarray] = []  # embeddings of the complete windows on the hop grid
        self._chunks = 0

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self._received / self.sample_rate

    def push(self, chunk: np.ndarray) -> StreamingUpdate:
        """Add a chunk of audio and return the updated embeddings.

        Args:
            chunk: 1-D float waveform in [-1, 1] at the model's sample rate (any length).

        Returns:
            The :class:`StreamingUpdate` after this chunk.

        Raises:
            AudioError: the chunk is not a 1-D finite float waveform.
        """
        start = time.perf_counter()
        chunk = np.asarray(chunk)
        if chunk.ndim != 1 or not np.issubdtype(chunk.dtype, np.floating):
            raise AudioError(f"a stream chunk must be a 1-D float waveform at {self.sample_rate} Hz, "
                             f"got shape {chunk.shape} and dtype {chunk.dtype}")
        if not np.isfinite(chunk).all():
            raise AudioError("a stream chunk holds NaN or infinite samples")
        self._chunks += 1
        self._add_samples(chunk.astype(np.float32, copy=False))
        recent = whole = None
        if self._received >= self.min_samples:
            frames = self._frames_done
            self._complete_grid_windows()
            recent = self._embed([self._slice(max(0, frames - self.recent_frames), frames)])[0].utterance_embedding()
            if self._chunks % self.whole_every == 0:
                whole = self._whole()
            self._drop_old_frames()
        return StreamingUpdate(self.seconds, recent, whole, time.perf_counter() - start)

    def stream(self, chunks: Iterable[np.ndarray]) -> Iterator[StreamingUpdate]:
        """Push every chunk of ``chunks``, yielding each update as it is ready.

        Args:
            chunks: 1-D float waveforms at the model's sample rate, in order.

        Yields:
            One :class:`StreamingUpdate` per chunk.
        """
        for chunk in chunks:
            yield self.push(chunk)

    def finish(self) -> np.ndarray:
        """The whole-stream embedding of everything pushed: the offline embedding of the same audio.

        Returns:
            A unit float32 vector.

        Raises:
            AudioError: less audio than the model's minimum duration was pushed.
        """
        if self._received < self.min_samples:
            raise AudioError(f"the stream holds {self.seconds:.2f} s of audio, shorter than the model's "
                             f"{self.min_samples / self.sample_rate:.2f} s minimum")
        self._complete_grid_windows()
        return self._whole()

    # ------------------------------------------------------------------------------------------ internals

    def _add_samples(self, chunk: np.ndarray) -> None:
        """Append samples and compute every frame they complete."""
        self._samples = np.concatenate([self._samples, chunk])
        self._received += len(chunk)
        total = self.frontend.num_frames(self._received)
        new = total - self._frames_done
        if new <= 0:
            return
        needed = self.frontend.num_samples(new)
        with torch.inference_mode():
            frames = self.frontend(torch.from_numpy(self._samples[:needed]).unsqueeze(0))[0]
            frames = self.model.model.normalize_features(frames.unsqueeze(0))[0]
        self._frames = frames if self._frames.numel() == 0 else torch.cat([self._frames, frames])
        self._frames_done = total
        # The next frame starts new * frame_shift samples further on; earlier samples are never needed again.
        self._samples = self._samples[new * int(self.frontend.frame_shift):]

    def _slice(self, first: int, end: int) -> torch.Tensor:
        return self._frames[first - self._first:end - self._first]

    def _embed(self, segments: list[torch.Tensor]) -> list[WindowEmbeddings]:
        return self.embedder.embed_features(segments)

    def _complete_grid_windows(self) -> None:
        """Embed the windows on the hop grid that the frames so far complete (each exactly once)."""
        # The grid starts that fit, as window_starts lays them out, from the first one not embedded yet.
        starts = list(range(len(self._grid) * self.hop, self._frames_done - self.window + 1, self.hop))
        if starts:
            results = self._embed([self._slice(s, s + self.window) for s in starts])
            self._grid.extend(result.embeddings[0] for result in results)

    def _whole(self) -> np.ndarray:
        """The offline utterance embedding of the frames so far: grid windows kept, the rest computed."""
        total = self._frames_done
        starts = window_starts(total, self.window, self.model.overlap)
        rows = []
        for start in starts:
            on_grid = start % self.hop == 0 and start // self.hop < len(self._grid) and total >= self.window
            rows.append(self._grid[start // self.hop] if on_grid
                        else self._embed([self._slice(start, min(total, start + self.window))])[0].embeddings[0])
        return WindowEmbeddings(np.stack(rows), np.zeros(len(rows)), np.zeros(len(rows))).utterance_embedding()

    def _drop_old_frames(self) -> None:
        """Keep only the frames a later grid window, end-aligned window or recent span can still need."""
        keep_from = min(len(self._grid) * self.hop, self._frames_done - self.window,
                        self._frames_done - self.recent_frames)
        keep_from = max(keep_from, self._first)
        if keep_from > self._first:
            self._frames = self._frames[keep_from - self._first:].clone()  # a view would keep the old storage
            self._first = keep_from
