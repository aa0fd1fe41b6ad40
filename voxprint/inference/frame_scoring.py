"""Models that verify by scoring frames against adapted speaker models (GMM-UBM), not by comparing embeddings.

:func:`~voxprint.inference.load_model` returns a :class:`FrameScoringModel` for a run folder whose
encoder says ``scores_frames = True``. It is a :class:`~voxprint.inference.SpeakerModel` (so
``embed`` and ``similarity`` give the encoder's fixed-size vectors), with verification replaced: a
speaker is the MAP adaptation of the UBM to the pooled statistics of the enrollment recordings, and a
test scores the top-C log-likelihood ratio of its frames (Reynolds et al. 2000). Its scores are a mean
per-frame log-likelihood ratio, uncalibrated; the embedding back-ends (cosine, PLDA, score
normalisation, calibration) and the speaker store do not apply, and say so.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from voxprint.data.trials import Trials, keep_trials_with
from voxprint.errors import AudioError, ConfigError, ModelError
from voxprint.inference.speaker_model import AudioInput, OnError, SpeakerModel, TrialScores

__all__ = ["FrameLLRBackend", "FrameScoringModel"]


@dataclass(frozen=True)
class FrameLLRBackend:
    """The scoring of a frame-scoring model, described like a :class:`~voxprint.backends.backend.ScoringBackend`."""

    top_c: int

    @property
    def name(self) -> str:
        return f"gmm-llr-top{self.top_c}"

    @property
    def scale(self) -> str:
        return f"mean per-frame log-likelihood ratio, MAP-adapted model vs UBM (top-{self.top_c}), uncalibrated"


class FrameScoringModel(SpeakerModel):
    """A GMM-UBM run folder ready for verification (see the module docstring).

    Attributes:
        stores_embeddings: False: a speaker store keeps one embedding per recording and scores those, which
            is not how this model verifies, so :class:`~voxprint.store.SpeakerStore` refuses it.
    """

    stores_embeddings = False

    @property
    def system_name(self) -> str:
        """The registered model name, for messages (``gmm_ubm``)."""
        return str(self.config["model"]["name"])

    @property
    def backend(self) -> FrameLLRBackend:
        return FrameLLRBackend(top_c=self.model.encoder.top_c)

    def scoring_backend(self, options: Mapping[str, Any]) -> FrameLLRBackend:
        """The frame log-likelihood ratio; refuses the embedding back-ends' options.

        Raises:
            ConfigError: a back-end, normalisation or calibration was asked for.
        """
        asked = {key: value for key, value in options.items() if value not in (None, "none", "cosine", False)}
        if asked:
            raise ConfigError(f"{self.system_name} scores frames by the log-likelihood ratio of MAP-adapted "
                              f"models; {', '.join(sorted(asked))} of the embedding back-ends do not apply to it")
        return self.backend

    def speech_frames(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """The processed frames (T, D) the UBM models, of one recording."""
        wave = torch.from_numpy(self.load_waveform(audio, sample_rate))[None]
        with torch.no_grad():
            return self.model.encoder.frames(self.model.features(wave)[0])

    def verification_score(self, enroll: Sequence[AudioInput], test: AudioInput) -> float:
        """Top-C log-likelihood ratio of ``test`` for the speaker adapted from every recording of ``enroll``."""
        enroll = list(enroll)
        if not enroll:
            raise AudioError("verification needs at least one enrollment recording")
        encoder = self.model.encoder
        means = encoder.speaker_means([self.speech_frames(audio) for audio in enroll])
        return encoder.llr(means, self.speech_frames(test))

    def score_trial_lists(self, data_dir: str | os.PathLike, trials: Trials, backends: Sequence[Any],
                          enrollments: Mapping[str, Sequence[str]] | None = None, progress: bool = False,
                          on_error: OnError = "fail") -> list[TrialScores]:
        """Score a data folder's trials: each enrollment side adapted once, each test's top-C selection done
        once. Every back-end of this model is its frame likelihood ratio, so one scoring serves them all."""
        from voxprint.classical.gmm import llr_matrix

        folder, present = self.trial_recordings(data_dir, trials, enrollments, on_error)
        frames: dict[str, np.ndarray] = {}
        skipped: dict[str, str] = {}
        for utt in tqdm(present, desc="frames", disable=not progress, unit="utt"):
            try:
                frames[utt] = self.speech_frames(folder.wav[utt])
            except AudioError as exc:
                if on_error == "fail":
                    raise
                skipped[utt] = str(exc)
        sides = {utt: [utt] for utt in frames}
        for model_id, utts in (enrollments or {}).items():
            usable = [u for u in utts if u in frames]
            if usable:
                sides[model_id] = usable
        usable_trials, missing = keep_trials_with(trials, set(sides), tests=set(frames))
        encoder = self.model.encoder
        enroll_ids = sorted(set(usable_trials.enroll.tolist()))
        test_ids = sorted(set(usable_trials.test.tolist()))
        speakers = [encoder.speaker_means([frames[u] for u in sides[e]])
                    for e in tqdm(enroll_ids, desc="adapting", disable=not progress, unit="model")]
        matrix = llr_matrix(encoder.ubm, speakers, [frames[t] for t in test_ids], top_c=encoder.top_c)
        rows = {e: i for i, e in enumerate(enroll_ids)}
        columns = {t: i for i, t in enumerate(test_ids)}
        scores = matrix[[rows[e] for e in usable_trials.enroll], [columns[t] for t in usable_trials.test]]
        return [TrialScores(usable_trials, scores, missing, skipped)] * len(backends)

    def require_embedding_backend(self, what: str) -> None:
        raise ModelError(f"{what} fits or uses an embedding back-end; {self.system_name} scores frames by "
                         "the log-likelihood ratio of MAP-adapted models and has none (use the i-vector system "
                         "for embedding back-ends and speaker stores)")
