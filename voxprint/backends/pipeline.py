"""The scoring back-end of a trained model: cosine or PLDA, optional S-norm/AS-norm, optional calibration.

A model folder's ``backend/`` holds what ``voxprint fit-backend`` learned from the training speakers:

- ``cohort.npz``: per-speaker mean embeddings (the score-normalisation cohort);
- ``plda.npz``: LDA + two-covariance PLDA (:class:`~voxprint.backends.plda.PLDABackend`);
- ``calibration-{kind}-{norm}.json``: a linear calibration per back-end, mapping its scores to
  log-likelihood ratios (:class:`~voxprint.backends.calibration.LinearCalibration`).

``meta.json`` names the back-end the model uses by default (``"backend": {"kind", "norm", "calibrated"}``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voxprint.backends.scoring import Trials, cosine_score_trials, mean_embedding
from voxprint.data.embeddings import load_embeddings, save_embeddings
from voxprint.errors import ConfigError, DataError

BACKEND_DIR = "backend"
KINDS = ("cosine", "plda")
NORMS = ("none", "snorm", "asnorm")


def calibration_name(kind: str, norm: str) -> str:
    return f"calibration-{kind}-{norm}.json"


@dataclass
class ScoringBackend:
    """Scores trials from embeddings.

    Attributes:
        kind: ``"cosine"`` or ``"plda"``.
        norm: ``"none"``, ``"snorm"`` or ``"asnorm"`` (cosine scoring only).
        top_n: AS-norm cohort size per side.
        cohort: (C, d) cohort embeddings, needed by S-norm and AS-norm.
        plda: the fitted PLDA pipeline, needed by ``kind="plda"``.
        calibration: maps raw scores to log-likelihood ratios when set.
    """

    kind: str = "cosine"
    norm: str = "none"
    top_n: int = 100
    cohort: np.ndarray | None = None
    plda: Any = None
    calibration: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"back-end must be one of {KINDS}, not {self.kind!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"score normalisation must be one of {NORMS}, not {self.norm!r}")
        if self.norm != "none" and self.kind != "cosine":
            raise ConfigError("score normalisation is implemented for cosine scoring; use --norm none with PLDA")
        if self.norm != "none" and self.cohort is None:
            raise ConfigError(f"{self.norm} needs a cohort; run `voxprint fit-backend` on the model first")
        if self.kind == "plda" and self.plda is None:
            raise ConfigError("the PLDA back-end is not fitted; run `voxprint fit-backend` on the model first")

    @property
    def name(self) -> str:
        parts = [self.kind] + ([self.norm] if self.norm != "none" else []) + (["calibrated"] if self.calibration else [])
        return "+".join(parts)

    def raw_scores(self, ids: Sequence[str], embeddings: np.ndarray, trials: Trials) -> np.ndarray:
        if self.kind == "plda":
            return self.plda.score_trials(ids, embeddings, trials)
        if self.norm == "none":
            return cosine_score_trials(ids, embeddings, trials)
        from voxprint.backends.score_norm import normalize_trial_scores

        return normalize_trial_scores(ids, embeddings, trials, self.cohort, method=self.norm, top_n=self.top_n)

    def score_trials(self, ids: Sequence[str], embeddings: np.ndarray, trials: Trials) -> np.ndarray:
        scores = self.raw_scores(ids, embeddings, trials)
        return self.calibration.transform(scores) if self.calibration is not None else scores

    def score(self, enroll: np.ndarray, test: np.ndarray) -> float:
        """Score one test embedding against one or more enrollment embeddings (rows of ``enroll``)."""
        speaker = mean_embedding(np.atleast_2d(enroll))
        trial = Trials(labels=None, enroll=np.array(["enroll"]), test=np.array(["test"]))
        return float(self.score_trials(["enroll", "test"], np.stack([speaker, test]), trial)[0])

    @classmethod
    def load(cls, model_dir: str | os.PathLike, kind: str = "cosine", norm: str = "none",
             calibrated: bool = False, top_n: int = 100) -> "ScoringBackend":
        """The back-end stored in ``model_dir/backend`` (cohort, PLDA and calibration as requested)."""
        folder = Path(model_dir) / BACKEND_DIR
        cohort = plda = calibration = None
        if norm != "none" and (folder / "cohort.npz").is_file():
            cohort = load_embeddings(folder / "cohort.npz")[1]
        if kind == "plda" and (folder / "plda.npz").is_file():
            from voxprint.backends.plda import PLDABackend

            plda = PLDABackend.load(folder / "plda.npz")
        if calibrated:
            path = folder / calibration_name(kind, norm)
            if not path.is_file():
                raise ConfigError(f"{path} not found: the {kind}/{norm} back-end of this model is not calibrated; "
                                  "run `voxprint fit-backend` on the model first")
            from voxprint.backends.calibration import LinearCalibration

            calibration = LinearCalibration.load(path)
        return cls(kind=kind, norm=norm, top_n=top_n, cohort=cohort, plda=plda, calibration=calibration)


def fit_backend(model_dir: str | os.PathLike, ids: Sequence[str], embeddings: np.ndarray,
                utt2spk: dict[str, str], top_n: int = 100, calibration_trials: int = 100_000,
                p_target: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """Fit cohort, PLDA and one calibration per back-end on training embeddings; write ``backend/``.

    Returns a summary (sizes, and each calibration's scale and offset) for the caller to print.
    """
    from voxprint.backends.calibration import LinearCalibration, make_calibration_trials
    from voxprint.backends.plda import PLDABackend

    folder = Path(model_dir) / BACKEND_DIR
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.array([utt2spk[u] for u in ids])
    speakers = sorted(set(labels))
    if len(speakers) < 3:
        raise DataError(f"fitting a back-end needs several training speakers, got {len(speakers)}")
    cohort = np.stack([mean_embedding(embeddings[labels == spk]) for spk in speakers])
    save_embeddings(folder / "cohort.npz", speakers, cohort)
    plda = PLDABackend.fit(embeddings, labels)
    plda.save(folder / "plda.npz")

    trials = make_calibration_trials({u: utt2spk[u] for u in ids}, max_trials=calibration_trials, seed=seed)
    summary: dict[str, Any] = {"speakers": len(speakers), "utterances": len(ids), "plda_dim": plda.dim,
                               "calibration_trials": len(trials), "calibrations": {}}
    for kind, norm in (("cosine", "none"), ("cosine", "snorm"), ("cosine", "asnorm"), ("plda", "none")):
        backend = ScoringBackend(kind=kind, norm=norm, top_n=top_n, cohort=cohort, plda=plda)
        # Leave-one-speaker-in cohort: the trial's own speaker is in the cohort here, unlike at test
        # time, which biases the normalised training scores only slightly for 100+ speakers.
        scores = backend.raw_scores(ids, embeddings, trials)
        calibration = LinearCalibration.fit(scores, trials.labels, p_target=p_target)
        calibration.save(folder / calibration_name(kind, norm))
        summary["calibrations"][f"{kind}/{norm}"] = {"scale": calibration.scale, "offset": calibration.offset}
    return summary
