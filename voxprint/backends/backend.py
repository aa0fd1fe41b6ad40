"""The scoring back-end of a trained model: cosine or PLDA, optional S-norm/AS-norm, optional calibration.

A model folder's ``backend/`` holds what ``voxprint fit-backend`` learned from the training speakers:

- ``cohort.npz``: per-speaker mean embeddings (the score-normalisation cohort);
- ``plda.npz``: LDA + two-covariance PLDA (:class:`~voxprint.backends.plda.PLDABackend`);
- ``calibration-{kind}-{norm}.json``: a linear calibration per back-end, mapping its scores to
  log-likelihood ratios (:class:`~voxprint.backends.calibration.LinearCalibration`);
- ``manifest.json``: the SHA-256 of each of them (:func:`voxprint.runs.write_manifest`), checked
  before any of them is read.

``meta.json`` names the back-end the model uses by default (``"backend": {"kind", "norm", "calibrated"}``).

A back-end is replaced whole or not at all. :func:`fit_backend` writes the new one, manifest
included, into a sibling folder ``backend.new-<random>``, renames the old ``backend/`` to
``backend.old-<random>``, renames the new folder to ``backend/`` and deletes the old one. A kill at
any point leaves either the old complete folder or the new complete one; the next fit or load
removes the leftovers, or renames a complete ``backend.old-*`` back to ``backend/`` when the kill
came between the two renames.
"""
from __future__ import annotations

import os
import secrets
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from voxprint.backends.scoring import add_enrollment_models, cosine_score_trials, mean_embedding
from voxprint.data.embeddings import load_embeddings, save_embeddings
from voxprint.data.trials import Trials, make_calibration_trials
from voxprint.errors import ConfigError, DataError, ModelError
from voxprint.runs import BACKEND_DIR, MANIFEST_FILE, RunLock, verify_manifest, write_manifest
from voxprint.runs.lock import RunFolderBusy

__all__ = ["CALIBRATED", "COHORT_FILE", "KINDS", "NORMS", "PLDA_FILE", "ScoringBackend", "backend_files",
           "calibration_name", "fit_backend", "recover_backend_folder"]

KINDS = ("cosine", "plda")
NORMS = ("none", "snorm", "asnorm")
#: The (kind, norm) back-ends :func:`fit_backend` calibrates.
CALIBRATED = (("cosine", "none"), ("cosine", "snorm"), ("cosine", "asnorm"), ("plda", "none"))
COHORT_FILE = "cohort.npz"
PLDA_FILE = "plda.npz"
_REFIT = "run `voxprint fit-backend` on the model again"

T = TypeVar("T")


def calibration_name(kind: str, norm: str) -> str:
    """File name of the calibration of one back-end.

    Example:
        >>> calibration_name("cosine", "asnorm")
        'calibration-cosine-asnorm.json'
    """
    return f"calibration-{kind}-{norm}.json"


def backend_files() -> list[str]:
    """Names of the files a complete ``backend/`` folder holds, besides its manifest.

    Example:
        >>> backend_files()[:2]
        ['cohort.npz', 'plda.npz']
    """
    return [COHORT_FILE, PLDA_FILE] + [calibration_name(kind, norm) for kind, norm in CALIBRATED]


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
        """E.g. ``"cosine+asnorm+calibrated"``."""
        parts = [self.kind] + ([self.norm] if self.norm != "none" else []) + (["calibrated"] if self.calibration else [])
        return "+".join(parts)

    @property
    def scale(self) -> str:
        """What the scores are, in words, so a printed score can be read against its threshold.

        Example:
            >>> ScoringBackend().scale
            'cosine'
        """
        if self.calibration is not None:
            return "log-likelihood ratio"
        if self.kind == "plda":
            return "PLDA log-likelihood ratio, uncalibrated"
        return "cosine" if self.norm == "none" else f"{self.norm}-normalised cosine"

    def raw_scores(self, ids: Sequence[str], embeddings: np.ndarray, trials: Trials,
                   enrollments: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
        """Scores of a trial list before calibration (cosine, normalised cosine or PLDA LLRs).

        Args:
            ids: the utterance id of each embedding row.
            embeddings: ``(len(ids), d)`` utterance embeddings.
            trials: the trials; an enrollment id is an utterance or a model of ``enrollments``.
            enrollments: model id -> its enrollment utterances (an ``enroll.txt``). Each model is the one the
                speaker store keeps for this back-end (as :meth:`score` uses): with PLDA the exact
                ``n``-utterance model, else the centroid of its unit utterance embeddings.

        Raises:
            DataError: a model names an utterance without an embedding, or a model id is also an utterance id.
        """
        if enrollments:
            with_models = add_enrollment_models(ids, embeddings, enrollments)  # also checks the names
            if self.kind != "plda":
                ids, embeddings = with_models
        if self.kind == "plda":
            if not enrollments:
                return self.plda.score_trials(ids, embeddings, trials)
            models = {**{e: [e] for e in np.unique(trials.enroll)}, **enrollments}  # an utterance: a 1-utterance model
            return self.plda.score_trials(ids, embeddings, trials, enrollments=models)
        if self.norm == "none":
            return cosine_score_trials(ids, embeddings, trials)
        from voxprint.backends.score_norm import normalize_trial_scores

        return normalize_trial_scores(ids, embeddings, trials, self.cohort, method=self.norm, top_n=self.top_n)

    def score_trials(self, ids: Sequence[str], embeddings: np.ndarray, trials: Trials,
                     enrollments: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
        """Scores of a trial list (see :meth:`raw_scores`), calibrated to log-likelihood ratios when the back-end
        has a calibration."""
        scores = self.raw_scores(ids, embeddings, trials, enrollments)
        return self.calibration.transform(scores) if self.calibration is not None else scores

    def score(self, enroll: np.ndarray, test: np.ndarray) -> float:
        """Score one test embedding against one or more enrollment embeddings (rows of ``enroll``).

        The speaker model is the one the speaker store keeps for this back-end
        (:func:`voxprint.identification.scoring.speaker_scoring`): with PLDA, the exact ``n``-utterance
        model of all the enrollments (:meth:`~voxprint.backends.plda.TwoCovariancePLDA.speaker_vectors`),
        so ``voxprint verify --enroll a b c`` and ``voxprint verify --store`` give the same score; with
        cosine back-ends, the centroid of the unit enrollment embeddings scored as one embedding.
        """
        from voxprint.identification.scoring import speaker_scoring

        return speaker_scoring(self).score(enroll, test)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, kind: str = "cosine", norm: str = "none",
             calibrated: bool = False, top_n: int = 100) -> ScoringBackend:
        """The back-end stored in ``model_dir/backend`` (cohort, PLDA and calibration as requested).

        Leftovers of an interrupted fit are cleared first (see the module docstring), unless another
        process holds the run folder's lock. Only the files this back-end needs are read, each after
        its hash was checked against the folder's manifest.

        Args:
            model_dir: the run folder (or a built-in model's folder).
            kind: ``"cosine"`` or ``"plda"``.
            norm: ``"none"``, ``"snorm"`` or ``"asnorm"``.
            calibrated: also load the calibration of this ``kind``/``norm``.
            top_n: AS-norm cohort size per side.

        Returns:
            The back-end, ready to score.

        Raises:
            ConfigError: a needed file does not exist (the back-end was never fitted).
            ModelError: a file does not match the manifest (or there is none), or cannot be read;
                one line naming the file.
        """
        model_dir = Path(model_dir)
        folder = model_dir / BACKEND_DIR
        if _siblings(model_dir, "new") or _siblings(model_dir, "old"):
            try:
                with RunLock(model_dir, "tidy the back-end folder"):
                    recover_backend_folder(model_dir)
            except RunFolderBusy:
                pass  # another process is writing this run (e.g. a fit): its folders are not leftovers
            except PermissionError:
                pass  # a read-only folder cannot be tidied; what backend/ holds is still checked below
        want_cohort = norm != "none" and (folder / COHORT_FILE).is_file()
        want_plda = kind == "plda" and (folder / PLDA_FILE).is_file()
        calibration_file = calibration_name(kind, norm)
        if calibrated and not (folder / calibration_file).is_file():
            raise ConfigError(f"{folder / calibration_file} not found: the {kind}/{norm} back-end of this model is "
                              "not calibrated; run `voxprint fit-backend` on the model first")
        needed = [name for name, wanted in ((COHORT_FILE, want_cohort), (PLDA_FILE, want_plda),
                                            (calibration_file, calibrated)) if wanted]
        if needed:
            verify_manifest(folder, needed)
        cohort = _read(folder / COHORT_FILE, _load_cohort) if want_cohort else None
        plda = _read(folder / PLDA_FILE, _load_plda) if want_plda else None
        calibration = _read(folder / calibration_file, _load_calibration) if calibrated else None
        return cls(kind=kind, norm=norm, top_n=top_n, cohort=cohort, plda=plda, calibration=calibration)


def _load_cohort(path: Path) -> np.ndarray:
    cohort = load_embeddings(path)[1]
    if cohort.shape[0] < 2:
        raise DataError(f"a score-normalisation cohort needs at least two rows, got shape {cohort.shape}")
    return cohort


def _load_plda(path: Path) -> Any:
    from voxprint.backends.plda import PLDABackend

    return PLDABackend.load(path)


def _load_calibration(path: Path) -> Any:
    from voxprint.backends.calibration import LinearCalibration

    return LinearCalibration.load(path)


def _read(path: Path, reader: Callable[[Path], T]) -> T:
    """``reader(path)``, with any failure to read the file turned into a one-line ModelError naming it."""
    try:
        return reader(path)
    except (DataError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path} cannot be used ({reason}); {_REFIT}") from None


def fit_backend(model_dir: str | os.PathLike, ids: Sequence[str], embeddings: np.ndarray,
                utt2spk: dict[str, str], top_n: int = 100, calibration_trials: int = 100_000,
                p_target: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """Fit cohort, PLDA and one calibration per back-end on training embeddings; replace ``backend/`` whole.

    The caller holds the run folder's lock (:class:`voxprint.runs.RunLock`), as ``voxprint
    fit-backend`` does. Nothing in ``backend/`` changes until the new back-end is complete; see the
    module docstring.

    Args:
        model_dir: the run folder.
        ids: training utterance ids, one per embedding row.
        embeddings: (len(ids), d) training embeddings.
        utt2spk: utterance -> speaker, for every id.
        top_n: AS-norm cohort size per side, for the AS-norm calibration.
        calibration_trials: trials drawn from the training speakers to fit the calibrations.
        p_target: effective prior the calibrations are trained at.
        seed: seed of the calibration trials.

    Returns:
        A summary (sizes, and each calibration's scale and offset) for the caller to print.

    Raises:
        DataError: fewer than three training speakers, or anything the fits refuse.
    """
    model_dir = Path(model_dir)
    labels = np.array([utt2spk[u] for u in ids])
    speakers = sorted(set(labels))
    if len(speakers) < 3:
        raise DataError(f"fitting a back-end needs several training speakers, got {len(speakers)}")
    recover_backend_folder(model_dir)
    new = _sibling(model_dir, "new")
    new.mkdir(parents=True)
    try:
        summary = _write_backend(new, ids, embeddings, utt2spk, labels, speakers, top_n, calibration_trials,
                                 p_target, seed)
        write_manifest(new, backend_files())
        _fsync_folder(new)
        _swap_in(model_dir, new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return summary


def _write_backend(folder: Path, ids: Sequence[str], embeddings: np.ndarray, utt2spk: dict[str, str],
                   labels: np.ndarray, speakers: list[str], top_n: int, calibration_trials: int,
                   p_target: float, seed: int) -> dict[str, Any]:
    """Fit every part of a back-end and write it into ``folder``; returns the summary of :func:`fit_backend`."""
    from voxprint.backends.calibration import LinearCalibration
    from voxprint.backends.plda import PLDABackend

    cohort = np.stack([mean_embedding(embeddings[labels == spk]) for spk in speakers])
    save_embeddings(folder / COHORT_FILE, speakers, cohort)
    plda = PLDABackend.fit(embeddings, labels)
    plda.save(folder / PLDA_FILE)

    trials = make_calibration_trials({u: utt2spk[u] for u in ids}, max_trials=calibration_trials, seed=seed)
    summary: dict[str, Any] = {"speakers": len(speakers), "utterances": len(ids), "plda_dim": plda.dim,
                               "calibration_trials": len(trials), "calibrations": {}}
    for kind, norm in CALIBRATED:
        backend = ScoringBackend(kind=kind, norm=norm, top_n=top_n, cohort=cohort, plda=plda)
        # Leave-one-speaker-in cohort: the trial's own speaker is in the cohort here, unlike at test
        # time, which biases the normalised training scores only slightly for 100+ speakers.
        scores = backend.raw_scores(ids, embeddings, trials)
        calibration = LinearCalibration.fit(scores, trials.labels, p_target=p_target)
        calibration.save(folder / calibration_name(kind, norm))
        summary["calibrations"][f"{kind}/{norm}"] = {"scale": calibration.scale, "offset": calibration.offset}
    return summary


def _sibling(model_dir: Path, role: str) -> Path:
    """A fresh name ``backend.{role}-<random>`` beside ``backend/``."""
    return model_dir / f"{BACKEND_DIR}.{role}-{secrets.token_hex(4)}"


def _siblings(model_dir: Path, role: str) -> list[Path]:
    """The existing ``backend.{role}-*`` folders beside ``backend/``, sorted by name."""
    return sorted(model_dir.glob(f"{BACKEND_DIR}.{role}-*"))


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk, so they survive a power cut too."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _swap_in(model_dir: Path, new: Path) -> None:
    """Make the complete folder ``new`` the model's ``backend/``; the old one is deleted afterwards."""
    live = model_dir / BACKEND_DIR
    old = None
    if live.exists():
        old = _sibling(model_dir, "old")
        os.rename(live, old)
    try:
        os.rename(new, live)
    except BaseException:
        if old is not None:
            os.rename(old, live)
        raise
    _fsync_folder(model_dir)
    if old is not None:
        shutil.rmtree(old)


def _is_complete(folder: Path) -> bool:
    """True when every back-end file of ``folder`` matches its ``manifest.json``."""
    if not (folder / MANIFEST_FILE).is_file():
        return False
    try:
        verify_manifest(folder, backend_files())
    except (ModelError, OSError):
        return False
    return True


def recover_backend_folder(model_dir: str | os.PathLike) -> list[Path]:
    """Clear what an interrupted :func:`fit_backend` left beside ``backend/``.

    ``backend.new-*`` folders are unfinished (or never swapped in) and are deleted. ``backend.old-*``
    folders are deleted when ``backend/`` exists; when it does not (a kill between the two renames),
    the most recent complete one becomes ``backend/`` again. Call it while holding the run folder's
    lock, so no fit is writing there.

    Args:
        model_dir: the run folder.

    Returns:
        The folders deleted.
    """
    model_dir = Path(model_dir)
    live = model_dir / BACKEND_DIR
    old = sorted(_siblings(model_dir, "old"), key=lambda folder: folder.stat().st_mtime, reverse=True)
    if not live.exists():
        restorable = next((folder for folder in old if _is_complete(folder)), None)
        if restorable is not None:
            os.rename(restorable, live)
            old.remove(restorable)
    # An old folder that is not complete and has nothing to replace it is kept: it is all there is.
    doomed = _siblings(model_dir, "new") + (old if live.exists() else [])
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed
