"""A model's back-end folder on disk: replaced whole or not at all, checked against its manifest when
loaded, and tidied after a kill. Synthetic embeddings (the maths is tested in test_backends.py)."""
from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import voxprint.backends.backend as backend_module
from voxprint.backends.backend import (
    COHORT_FILE,
    PLDA_FILE,
    ScoringBackend,
    backend_files,
    calibration_name,
    fit_backend,
    recover_backend_folder,
)
from voxprint.backends.calibration import LinearCalibration
from voxprint.backends.plda import PLDABackend
from voxprint.data.trials import Trials
from voxprint.errors import ModelError
from voxprint.runs import BACKEND_DIR, BUILTIN_MODELS, MANIFEST_FILE, RunLock, read_meta, write_manifest

SPEAKERS, UTTERANCES, DIM = 10, 8, 12


def speakers(seed: int) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Utterance embeddings of SPEAKERS synthetic speakers (a direction each, plus noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(SPEAKERS, DIM))
    labels = np.repeat(np.arange(SPEAKERS), UTTERANCES)
    emb = centres[labels] + 0.4 * rng.normal(size=(labels.size, DIM))
    ids = [f"s{s}-u{i:03d}" for i, s in enumerate(labels)]
    return ids, emb.astype(np.float32), {u: f"s{s}" for u, s in zip(ids, labels)}


def fit(run: Path, seed: int = 0) -> dict:
    ids, emb, utt2spk = speakers(seed)
    return fit_backend(run, ids, emb, utt2spk, top_n=4, calibration_trials=400, seed=seed)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def siblings(run: Path) -> list[str]:
    """Everything beside backend/ that a fit may leave (it must leave nothing)."""
    return sorted(p.name for p in run.iterdir() if p.name.startswith(f"{BACKEND_DIR}."))


@pytest.fixture
def fitted(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    fit(run)
    return run


def test_fit_writes_every_file_and_a_manifest_that_load_checks(fitted: Path):
    folder = fitted / BACKEND_DIR
    assert sorted(snapshot(folder)) == sorted(backend_files() + [MANIFEST_FILE])
    assert siblings(fitted) == []
    for kind, norm in [("cosine", "none"), ("cosine", "asnorm"), ("plda", "none")]:
        backend = ScoringBackend.load(fitted, kind=kind, norm=norm, calibrated=True)
        ids, emb, _ = speakers(1)
        trials = Trials(None, np.array(ids[:3]), np.array(ids[-3:]))
        assert np.isfinite(backend.score_trials(ids, emb, trials)).all()


@pytest.mark.parametrize("failing", ["plda fit", "third calibration save"])
def test_a_fit_that_fails_halfway_leaves_the_previous_backend_intact(fitted: Path, monkeypatch, failing: str):
    before = snapshot(fitted / BACKEND_DIR)
    if failing == "plda fit":
        # By then the new cohort.npz has been written: the old back-end must not see it.
        monkeypatch.setattr(PLDABackend, "fit", classmethod(lambda cls, *a, **k: _fail()))
    else:
        saves = []
        original = LinearCalibration.save

        def save(self, path):
            saves.append(path)
            return _fail() if len(saves) == 3 else original(self, path)

        monkeypatch.setattr(LinearCalibration, "save", save)
    with pytest.raises(RuntimeError, match="disk on fire"):
        fit(fitted, seed=1)  # other embeddings: every file would change
    assert snapshot(fitted / BACKEND_DIR) == before
    assert siblings(fitted) == []
    ScoringBackend.load(fitted, norm="asnorm", calibrated=True)  # still consistent


def _fail():
    raise RuntimeError("disk on fire")


def test_a_successful_refit_replaces_every_file(fitted: Path):
    before = snapshot(fitted / BACKEND_DIR)
    fit(fitted, seed=1)
    after = snapshot(fitted / BACKEND_DIR)
    assert sorted(after) == sorted(before)
    assert all(after[name] != before[name] for name in backend_files())
    assert siblings(fitted) == []


def _fit_then_die(run: Path, renames_before_death: int) -> None:
    """Child process: fit a new back-end but die (no clean-up at all) after some of the swap's renames."""
    done = []
    rename = os.rename

    def dying_rename(src, dst):
        if len(done) == renames_before_death:
            os._exit(9)
        done.append(dst)
        rename(src, dst)

    backend_module.os.rename = dying_rename
    if renames_before_death < 0:  # die while writing the new folder
        LinearCalibration.save = lambda self, path: os._exit(9)
    fit(run, seed=1)
    os._exit(0)


@pytest.mark.parametrize(("renames", "expect"), [(-1, "old"), (0, "old"), (1, "old"), (2, "new")])
def test_a_kill_at_any_point_leaves_the_old_or_the_new_backend(tmp_path: Path, renames: int, expect: str):
    old_run, new_run = tmp_path / "old", tmp_path / "new"
    fit(old_run)
    fit(new_run, seed=1)
    run = tmp_path / "run"
    shutil.copytree(old_run, run)
    child = multiprocessing.get_context("fork").Process(target=_fit_then_die, args=(run, renames))
    child.start()
    child.join(60)
    assert child.exitcode == (0 if renames == 2 else 9)
    if renames in (-1, 0, 1):
        assert siblings(run), "the kill should have left a temporary folder"
    ScoringBackend.load(run, kind="plda", calibrated=True)  # tidies up first
    assert siblings(run) == []
    expected = snapshot((old_run if expect == "old" else new_run) / BACKEND_DIR)
    assert snapshot(run / BACKEND_DIR) == expected


def test_leftovers_are_cleared_by_the_next_fit_or_load(fitted: Path):
    complete = snapshot(fitted / BACKEND_DIR)
    shutil.copytree(fitted / BACKEND_DIR, fitted / f"{BACKEND_DIR}.old-dead0001")
    (fitted / f"{BACKEND_DIR}.new-dead0002").mkdir()
    (fitted / f"{BACKEND_DIR}.new-dead0002" / COHORT_FILE).write_bytes(b"half")
    with RunLock(fitted, "fit-backend"):  # a fit in progress elsewhere: its folders are not leftovers
        ScoringBackend.load(fitted)
        assert len(siblings(fitted)) == 2
    ScoringBackend.load(fitted)
    assert siblings(fitted) == [] and snapshot(fitted / BACKEND_DIR) == complete

    (fitted / f"{BACKEND_DIR}.new-dead0003").mkdir()
    fit(fitted, seed=1)
    assert siblings(fitted) == []

    # backend/ gone and only an incomplete old folder: nothing to restore, and it is kept.
    shutil.rmtree(fitted / BACKEND_DIR)
    partial = fitted / f"{BACKEND_DIR}.old-dead0004"
    partial.mkdir()
    (partial / COHORT_FILE).write_bytes(b"half")
    assert recover_backend_folder(fitted) == []
    assert siblings(fitted) == [partial.name] and not (fitted / BACKEND_DIR).exists()


def _refused(run: Path, name: str, **options) -> str:
    with pytest.raises(ModelError) as info:
        ScoringBackend.load(run, **options)
    message = str(info.value)
    assert name in message and "\n" not in message
    return message


def test_truncated_or_bit_flipped_files_are_refused_naming_the_file(fitted: Path):
    folder = fitted / BACKEND_DIR
    plda = folder / PLDA_FILE
    plda.write_bytes(plda.read_bytes()[:100])
    assert "does not match" in _refused(fitted, PLDA_FILE, kind="plda")
    ScoringBackend.load(fitted, norm="asnorm")  # the other files are still fine

    cohort = folder / COHORT_FILE
    data = bytearray(cohort.read_bytes())
    data[len(data) // 2] ^= 0x01
    cohort.write_bytes(bytes(data))
    _refused(fitted, COHORT_FILE, norm="snorm")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _replace_arrays(path: Path, **changes: np.ndarray) -> None:
    with np.load(path) as stored:
        arrays = {**stored, **changes}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


CORRUPTIONS = {
    "truncated plda": (PLDA_FILE, {"kind": "plda"}, _truncate),
    "plda of the wrong shapes": (PLDA_FILE, {"kind": "plda"}, lambda p: _replace_arrays(p, whitener=np.eye(3))),
    "one-row cohort": (COHORT_FILE, {"norm": "asnorm"},
                       lambda p: _replace_arrays(p, ids=np.array(["s0"]), embeddings=np.ones((1, DIM), np.float32))),
    "truncated cohort": (COHORT_FILE, {"norm": "snorm"}, _truncate),
    "calibration cut mid-JSON": (calibration_name("plda", "none"), {"kind": "plda", "calibrated": True},
                                 lambda p: p.write_text('{"format": "voxprint-linear-calibration", "vers')),
    "calibration with a negative scale": (calibration_name("cosine", "none"), {"calibrated": True},
                                          lambda p: p.write_text(p.read_text().replace('"scale": ', '"scale": -'))),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_unreadable_files_that_match_their_manifest_are_refused_naming_the_file(fitted: Path, corruption: str):
    """Files written wrong from the start (their manifest agrees with them): the read itself must fail cleanly."""
    name, options, corrupt = CORRUPTIONS[corruption]
    corrupt(fitted / BACKEND_DIR / name)
    write_manifest(fitted / BACKEND_DIR, backend_files())
    assert "cannot be used" in _refused(fitted, name, **options)


def test_a_backend_without_manifest_is_refused(fitted: Path):
    (fitted / BACKEND_DIR / MANIFEST_FILE).unlink()
    assert "fit-backend" in _refused(fitted, MANIFEST_FILE, kind="plda")


def test_the_bundled_backend_has_a_manifest_of_every_file():
    folder = BUILTIN_MODELS["default"]
    files = sorted(p.name for p in (folder / BACKEND_DIR).iterdir() if p.name != MANIFEST_FILE)
    assert files == sorted(backend_files())
    for kind, norm in [("cosine", "snorm"), ("cosine", "asnorm"), ("plda", "none")]:
        ScoringBackend.load(folder, kind=kind, norm=norm, calibrated=True)
    ScoringBackend.load(folder, **read_meta(folder).get("backend", {}))
