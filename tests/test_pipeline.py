"""Scoring back-ends of a trained model: fit-backend, eval with cosine / AS-norm / PLDA / calibration, verify."""
import json

import numpy as np
import pytest

from voxprint.backends.backend import ScoringBackend, calibration_name
from voxprint.backends.scoring import add_enrollment_models
from voxprint.data.trials import Trials, read_trials
from voxprint.runs import BACKEND_DIR
from voxprint.cli import main
from voxprint.errors import ConfigError
from voxprint.inference import load_model
from conftest import make_subset_folder


@pytest.fixture(scope="module")
def fitted_run(tiny_run_factory, tiny_train_folder):
    run = tiny_run_factory("backend")
    assert main(["fit-backend", "--model", str(run), "--data", str(tiny_train_folder), "--quiet",
                 "--top-n", "4", "--calibration-trials", "2000"]) == 0
    return run


@pytest.fixture(scope="module")
def dev_subset(tmp_path_factory, dev_dir):
    return make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev"), speakers=5, utterances=4, with_trials=True)


def evaluate(capsys, run, data, *options):
    assert main(["eval", "--data", str(data), "--model", str(run), "--json", *options]) == 0
    return json.loads(capsys.readouterr().out)


def test_fit_backend_writes_cohort_plda_and_calibrations(fitted_run):
    folder = fitted_run / BACKEND_DIR
    assert (folder / "cohort.npz").is_file() and (folder / "plda.npz").is_file()
    for kind, norm in [("cosine", "none"), ("cosine", "snorm"), ("cosine", "asnorm"), ("plda", "none")]:
        calibration = json.loads((folder / calibration_name(kind, norm)).read_text())
        assert calibration["scale"] > 0


def test_backends_and_calibration_keep_the_ranking(capsys, fitted_run, dev_subset):
    cosine = evaluate(capsys, fitted_run, dev_subset, "--backend", "cosine", "--norm", "none")
    calibrated = evaluate(capsys, fitted_run, dev_subset, "--backend", "cosine", "--norm", "none", "--calibrated")
    assert cosine["backend"] == "cosine" and calibrated["backend"] == "cosine+calibrated"
    # An increasing affine calibration cannot change EER or minDCF, only the score scale.
    for key in ("eer", "min_dcf_0.01", "min_dcf_0.001"):
        assert calibrated[key] == pytest.approx(cosine[key], abs=1e-9)
    assert calibrated["eer_threshold"] != pytest.approx(cosine["eer_threshold"])
    asnorm = evaluate(capsys, fitted_run, dev_subset, "--norm", "asnorm")
    plda = evaluate(capsys, fitted_run, dev_subset, "--backend", "plda")
    assert asnorm["backend"] == "cosine+asnorm" and plda["backend"] == "plda"
    # Even this one-epoch model separates the unseen speakers better than chance with either back-end.
    assert all(r["eer"] < 0.4 for r in (asnorm, plda)), (asnorm["eer"], plda["eer"])


def test_threshold_for_a_false_accept_rate_is_used_by_verify(capsys, fitted_run, dev_subset):
    result = evaluate(capsys, fitted_run, dev_subset, "--norm", "asnorm", "--calibrated", "--write-threshold",
                      "--target-far", "0.05")
    meta = json.loads((fitted_run / "meta.json").read_text())
    assert meta["backend"] == {"norm": "asnorm", "calibrated": True}
    assert "false-accept rate 0.05" in meta["threshold_rule"] and meta["eval"] == result
    model = load_model(fitted_run)
    assert model.backend.name == "cosine+asnorm+calibrated"

    # The threshold achieves the requested false-accept rate on the non-target trials it was set on.
    trials = read_trials(dev_subset / "trials.txt")
    embedded = model.embed_folder(dev_subset, progress=False)
    scores = model.backend.score_trials(embedded.ids, embedded.embeddings, trials)
    nontarget = scores[trials.labels == 0]
    achieved = float(np.mean(nontarget >= meta["threshold"]))
    assert 0.05 - 1.0 / len(nontarget) <= achieved <= 0.05

    # verify scores the test against the mean of all enrollment embeddings, as a trial list would.
    wavs = (dev_subset / "wav.scp").read_text().split()[1::2]
    ids, matrix = add_enrollment_models(["e1", "e2", "t"], model.extract_embeddings(wavs[:3]), {"spk": ["e1", "e2"]})
    expected = model.backend.score_trials(ids, matrix, Trials(labels=None, enroll=np.array(["spk"]),
                                                              test=np.array(["t"])))[0]
    code = main(["verify", "--enroll", wavs[0], "--enroll", wavs[1], "--test", wavs[2], "--model", str(fitted_run),
                 "--json"])
    decision = json.loads(capsys.readouterr().out)
    assert decision["score"] == pytest.approx(expected, abs=1e-5)
    assert decision["threshold"] == pytest.approx(meta["threshold"]) and decision["scale"] == "log-likelihood ratio"
    assert (code, decision["decision"]) == ((0, "accept") if expected >= meta["threshold"] else (3, "reject"))


def test_single_trial_scoring_equals_trial_list_scoring(fitted_run):
    rng = np.random.default_rng(0)
    backend = ScoringBackend.load(fitted_run, kind="plda")
    enroll, test = rng.normal(size=(2, 16)), rng.normal(size=16)
    trial = Trials(labels=None, enroll=np.array(["a"]), test=np.array(["b"]))
    expected = backend.score_trials(["a", "b"], np.stack([enroll[0], test]), trial)[0]
    assert backend.score(enroll[:1], test) == pytest.approx(expected)
    # Several enrollments: the exact n-utterance PLDA model, as the speaker store scores it.
    model = Trials(labels=None, enroll=np.array(["m"]), test=np.array(["b"]))
    exact = backend.plda.score_trials(["a1", "a2", "b"], np.vstack([enroll, test]), model,
                                      enrollments={"m": ["a1", "a2"]}, enroll_mode="exact")[0]
    assert backend.score(enroll, test) == pytest.approx(exact)


def test_trial_lists_score_enrolled_models_as_verify_does(fitted_run):
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(4, 16))
    ids = ["a1", "a2", "a3", "b"]
    trials = Trials(labels=None, enroll=np.array(["m", "a1"]), test=np.array(["b", "b"]))  # a model, an utterance
    enrollments = {"m": ["a1", "a2", "a3"]}
    for kind in ("plda", "cosine"):
        backend = ScoringBackend.load(fitted_run, kind=kind)
        scores = backend.score_trials(ids, rows, trials, enrollments=enrollments)
        # `voxprint eval --enroll` and `voxprint verify --enroll a1 a2 a3` give the same score.
        assert scores[0] == pytest.approx(backend.score(rows[:3], rows[3]))
        assert scores[1] == pytest.approx(backend.score(rows[:1], rows[3]))
    # With PLDA that is the exact 3-utterance model, not the averaged embedding scored as one utterance.
    backend_plda = ScoringBackend.load(fitted_run, kind="plda")
    averaged = backend_plda.score_trials(*add_enrollment_models(ids, rows, enrollments), trials)[0]
    assert abs(backend_plda.score_trials(ids, rows, trials, enrollments=enrollments)[0] - averaged) > 1e-3


def test_backend_errors_say_what_to_run(tmp_path):
    with pytest.raises(ConfigError, match="fit-backend"):
        ScoringBackend.load(tmp_path, kind="plda")
    with pytest.raises(ConfigError, match="fit-backend"):
        ScoringBackend.load(tmp_path, norm="asnorm")
    with pytest.raises(ConfigError, match="cosine scoring"):
        ScoringBackend(kind="plda", norm="snorm", plda=object(), cohort=np.zeros((2, 2)))
