"""PLDA, LDA, score normalisation and calibration back-ends, on synthetic data with known parameters."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import multivariate_normal
from threadpoolctl import threadpool_limits

from voxprint.backends import score_norm
from voxprint.backends.calibration import (
    LinearCalibration,
    bayes_threshold,
    cllr,
    min_cllr,
    threshold_for_false_accept_rate,
)
from voxprint.backends.lda import LDA
from voxprint.backends.plda import PLDABackend, TwoCovariancePLDA
from voxprint.backends.score_norm import (
    asnorm,
    cohort_statistics,
    normalize_trial_scores,
    snorm,
)
from voxprint.backends.scoring import cosine_score_trials
from voxprint.data.trials import Trials, make_calibration_trials
from voxprint.errors import DataError
from voxprint.metrics import compute_eer


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    """The matrices here are small: BLAS threads competing for two shared cores only slow them down."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _random_spd(rng: np.random.Generator, d: int, scale: float) -> np.ndarray:
    """A well-conditioned random covariance (eigenvalues between 0.3 and 1.5 times scale)."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return scale * (q * rng.uniform(0.3, 1.5, size=d)) @ q.T


def _sample_speakers(rng, mean, between, within, counts) -> tuple[np.ndarray, np.ndarray]:
    """Utterances of the two-covariance model: len(counts) speakers, counts[s] utterances each."""
    d = mean.size
    speakers = rng.multivariate_normal(mean, between, size=counts.size)
    labels = np.repeat(np.arange(counts.size), counts)
    noise = rng.normal(size=(labels.size, d)) @ np.linalg.cholesky(within).T
    return speakers[labels] + noise, labels


def _gaussian_llr(mean, between, within, enroll: np.ndarray, test: np.ndarray) -> float:
    """Reference LLR straight from the joint Gaussians of all the utterances of a trial.

    Same speaker: the n + m stacked vectors share one speaker variable, covariance
    ``I (x) within + 11' (x) between``; different speakers: block diagonal per side.
    """
    def log_evidence(x: np.ndarray) -> float:
        n = x.shape[0]
        cov = np.kron(np.eye(n), within) + np.kron(np.ones((n, n)), between)
        return multivariate_normal(np.tile(mean, n), cov).logpdf(x.reshape(-1))

    both = np.vstack((enroll, test))
    return log_evidence(both) - log_evidence(enroll) - log_evidence(test)


@pytest.fixture(scope="module")
def true_model():
    rng = np.random.default_rng(10)
    d = 5
    return {
        "mean": rng.normal(size=d),
        "between": _random_spd(rng, d, 2.0),
        "within": _random_spd(rng, d, 1.0),
    }


@pytest.fixture(scope="module")
def fitted_plda(true_model) -> TwoCovariancePLDA:
    rng = np.random.default_rng(11)
    # Unequal utterance counts exercise the per-count grouping of the E-step.
    counts = rng.integers(2, 9, size=4000)
    x, labels = _sample_speakers(rng, true_model["mean"], true_model["between"], true_model["within"], counts)
    return TwoCovariancePLDA.fit(x, labels.astype(str), n_iter=10)


def _rel_frobenius(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


# ---------------------------------------------------------------------------------------------
# Two-covariance PLDA
# ---------------------------------------------------------------------------------------------


def test_plda_em_recovers_true_covariances(fitted_plda, true_model):
    assert _rel_frobenius(fitted_plda.between_cov, true_model["between"]) < 0.1
    assert _rel_frobenius(fitted_plda.within_cov, true_model["within"]) < 0.1
    assert np.linalg.norm(fitted_plda.mean - true_model["mean"]) < 0.15
    np.testing.assert_allclose(fitted_plda.between_precision @ fitted_plda.between_cov, np.eye(5), atol=1e-9)


def test_plda_em_improves_on_its_moment_initialisation(true_model):
    # The initial between-speaker covariance (scatter of speaker means) is inflated by
    # within / n; EM removes that bias.
    rng = np.random.default_rng(12)
    counts = np.full(3000, 2)
    x, labels = _sample_speakers(rng, true_model["mean"], true_model["between"], true_model["within"], counts)
    start = TwoCovariancePLDA.fit(x, labels, n_iter=0)
    em = TwoCovariancePLDA.fit(x, labels, n_iter=20)
    assert _rel_frobenius(em.between_cov, true_model["between"]) < 0.5 * _rel_frobenius(
        start.between_cov, true_model["between"]
    )


def test_plda_llr_with_true_parameters_equals_closed_form_gaussian_llr(true_model):
    plda = TwoCovariancePLDA(true_model["mean"], true_model["between"], true_model["within"])
    rng = np.random.default_rng(13)
    mean, between, within = true_model["mean"], true_model["between"], true_model["within"]
    for n_enroll, n_test in [(1, 1), (1, 1), (3, 1), (2, 2)]:
        # One same-speaker and one different-speaker trial of each shape.
        for same in (True, False):
            spk = rng.multivariate_normal(mean, between, size=2)
            noise = rng.multivariate_normal(np.zeros(5), within, size=n_enroll + n_test)
            enroll = spk[0] + noise[:n_enroll]
            test = spk[0 if same else 1] + noise[n_enroll:]
            expected = _gaussian_llr(mean, between, within, enroll, test)
            assert plda.llr(enroll, test) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # Averaging mode: the enrollment mean scored as one utterance.
    enroll = rng.normal(size=(4, 5))
    test = rng.normal(size=5)
    assert plda.llr(enroll, test, enroll_mode="mean") == pytest.approx(
        _gaussian_llr(mean, between, within, enroll.mean(axis=0, keepdims=True), test[None]), rel=1e-9
    )


def test_fitted_plda_llr_is_close_to_true_model_llr(fitted_plda, true_model):
    truth = TwoCovariancePLDA(true_model["mean"], true_model["between"], true_model["within"])
    rng = np.random.default_rng(14)
    mean, between, within = true_model["mean"], true_model["between"], true_model["within"]
    x, _ = _sample_speakers(rng, mean, between, within, np.full(6, 2))
    pairs = [(x[2 * s], x[2 * s + 1]) for s in range(6)] + [(x[0], x[2 * s]) for s in range(1, 6)]
    fitted = np.array([fitted_plda.llr(a, b) for a, b in pairs])
    exact = np.array([_gaussian_llr(mean, between, within, a[None], b[None]) for a, b in pairs])
    np.testing.assert_allclose([truth.llr(a, b) for a, b in pairs], exact, rtol=1e-9, atol=1e-9)
    assert np.abs(fitted - exact).max() < 0.1 * max(1.0, np.abs(exact).max())


def test_plda_score_trials_matches_pairwise_llr(true_model):
    plda = TwoCovariancePLDA(true_model["mean"], true_model["between"], true_model["within"])
    rng = np.random.default_rng(15)
    utts = rng.normal(size=(12, 5)) * 2
    ids = [f"u{i}" for i in range(12)]
    enroll = rng.integers(0, 12, size=60)
    test = rng.integers(0, 12, size=60)
    trials = Trials(labels=None, enroll=np.array(ids)[enroll], test=np.array(ids)[test])
    scores = plda.score_trials(ids, utts, trials)
    np.testing.assert_allclose(scores, [plda.llr(utts[e], utts[t]) for e, t in zip(enroll, test)], rtol=1e-10)

    # A row that is the mean of n utterances, with counts, scores like those n utterances.
    groups = {"m0": utts[:3], "m1": utts[3:5], "t0": utts[5:6], "t1": utts[6:9]}
    rows = np.stack([g.mean(axis=0) for g in groups.values()])
    counts = np.array([len(g) for g in groups.values()])
    pair_trials = Trials(labels=None, enroll=np.array(["m0", "m1", "m0"]), test=np.array(["t0", "t1", "t1"]))
    exact = plda.score_trials(list(groups), rows, pair_trials, counts=counts)
    expected = [plda.llr(groups[e], groups[t]) for e, t in zip(pair_trials.enroll, pair_trials.test)]
    np.testing.assert_allclose(exact, expected, rtol=1e-10)
    averaged = plda.score_trials(list(groups), rows, pair_trials)
    pairs = list(zip(pair_trials.enroll, pair_trials.test))
    expected = [plda.llr(groups[e], groups[t], enroll_mode="mean") for e, t in pairs]
    np.testing.assert_allclose(averaged, expected, rtol=1e-10)


def test_plda_errors_are_actionable():
    rng = np.random.default_rng(16)
    with pytest.raises(DataError, match="at least two"):
        TwoCovariancePLDA.fit(rng.normal(size=(10, 3)), np.zeros(10))
    with pytest.raises(DataError, match="reduce the dimension"):
        # 4 speakers cannot span a 6-dimensional between-speaker covariance.
        TwoCovariancePLDA.fit(rng.normal(size=(40, 6)), np.repeat(np.arange(4), 10))
    with pytest.raises(DataError, match="positive definite"):
        TwoCovariancePLDA(np.zeros(2), np.diag([1.0, -1.0]), np.eye(2))
    plda = TwoCovariancePLDA(np.zeros(2), np.eye(2), np.eye(2))
    with pytest.raises(DataError, match="have no embedding: b"):
        plda.score_trials(["a"], np.ones((1, 2)), Trials(None, np.array(["a"]), np.array(["b"])))
    with pytest.raises(DataError, match="enroll_mode"):
        plda.llr(np.ones(2), np.ones(2), enroll_mode="median")


# ---------------------------------------------------------------------------------------------
# LDA
# ---------------------------------------------------------------------------------------------


def test_lda_recovers_discriminant_subspace():
    rng = np.random.default_rng(20)
    d, k, n_spk, per_spk = 10, 3, 300, 10
    basis, _ = np.linalg.qr(rng.normal(size=(d, k)))
    within = _random_spd(rng, d, 1.0)
    centres = (rng.normal(size=(n_spk, k)) * [4.0, 3.0, 2.0]) @ basis.T
    labels = np.repeat(np.arange(n_spk), per_spk)
    x = centres[labels] + rng.normal(size=(labels.size, d)) @ np.linalg.cholesky(within).T + 5.0
    lda = LDA.fit(x, labels, dim=k)
    # Maximising between / within variance: the directions are within^-1 times the span of
    # the speaker means.
    truth = np.linalg.solve(within, basis)
    assert np.degrees(scipy.linalg.subspace_angles(lda.projection, truth).max()) < 3.0
    y = lda.transform(x)
    assert y.shape == (labels.size, k)
    # Output: within-speaker whitened, between-speaker variance decreasing.
    class_means = np.stack([y[labels == s].mean(axis=0) for s in range(n_spk)])
    resid = y - class_means[labels]
    np.testing.assert_allclose(resid.T @ resid / labels.size, np.eye(k), atol=1e-4)
    between = np.diag(class_means.T @ class_means / n_spk)
    assert between[0] > between[1] > between[2] > 1.0


def test_lda_dimension_is_checked():
    x = np.random.default_rng(21).normal(size=(30, 5))
    labels = np.repeat(np.arange(3), 10)
    assert LDA.fit(x, labels).dim == 2  # speakers - 1
    with pytest.raises(DataError, match="from 1 to 2"):
        LDA.fit(x, labels, dim=3)
    with pytest.raises(DataError, match="two or more utterances"):
        LDA.fit(x[:3], labels[[0, 10, 20]])


# ---------------------------------------------------------------------------------------------
# Score normalisation
# ---------------------------------------------------------------------------------------------


def test_snorm_equals_textbook_formula_on_hand_case():
    scores = np.array([0.5, -0.2])
    enroll_cohort = np.array([[0.1, 0.2, 0.3], [0.0, 0.0, 0.3]])
    test_cohort = np.array([[0.0, 0.4, 0.2], [-0.1, 0.1, 0.3]])
    expected = []
    for s, e, t in zip(scores, enroll_cohort, test_cohort):
        mu_e, mu_t = sum(e) / 3, sum(t) / 3
        sd_e = math.sqrt(sum((v - mu_e) ** 2 for v in e) / 3)
        sd_t = math.sqrt(sum((v - mu_t) ** 2 for v in t) / 3)
        expected.append(0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t))
    np.testing.assert_allclose(snorm(scores, enroll_cohort, test_cohort), expected, rtol=1e-12)
    # First trial by hand: Z-norm (0.5 - 0.2) / sqrt(0.02 / 3), T-norm (0.5 - 0.2) / sqrt(0.08 / 3).
    assert snorm(scores, enroll_cohort, test_cohort)[0] == pytest.approx(
        0.5 * (0.3 / math.sqrt(0.02 / 3) + 0.3 / math.sqrt(0.08 / 3))
    )


def test_asnorm_with_whole_cohort_equals_snorm_and_uses_top_scores():
    rng = np.random.default_rng(30)
    scores = rng.normal(size=20)
    enroll_cohort, test_cohort = rng.normal(size=(20, 50)), rng.normal(size=(20, 50))
    np.testing.assert_allclose(asnorm(scores, enroll_cohort, test_cohort, top_n=50),
                               snorm(scores, enroll_cohort, test_cohort), rtol=1e-12)
    np.testing.assert_allclose(asnorm(scores, enroll_cohort, test_cohort, top_n=500),
                               snorm(scores, enroll_cohort, test_cohort), rtol=1e-12)
    top_e = np.sort(enroll_cohort, axis=1)[:, -10:]
    top_t = np.sort(test_cohort, axis=1)[:, -10:]
    expected = 0.5 * ((scores - top_e.mean(1)) / top_e.std(1) + (scores - top_t.mean(1)) / top_t.std(1))
    np.testing.assert_allclose(asnorm(scores, enroll_cohort, test_cohort, top_n=10), expected, rtol=1e-12)


def test_normalize_trial_scores_matches_explicit_cohort_scores(monkeypatch):
    rng = np.random.default_rng(31)
    ids = [f"u{i:02d}" for i in range(30)]
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    cohort = rng.normal(size=(40, 8))
    enroll = rng.integers(0, 30, size=200)
    test = rng.integers(0, 30, size=200)
    trials = Trials(labels=None, enroll=np.array(ids)[enroll], test=np.array(ids)[test])
    unit = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    cohort_scores = unit @ (cohort / np.linalg.norm(cohort, axis=1, keepdims=True)).T
    raw = cosine_score_trials(ids, emb, trials)
    for method, top_n in [("snorm", 300), ("asnorm", 7)]:
        expected = asnorm(raw, cohort_scores[enroll], cohort_scores[test], top_n=top_n)
        got = normalize_trial_scores(ids, emb, trials, cohort, method=method, top_n=top_n)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Blocks of one id at a time give the same statistics.
    monkeypatch.setattr(score_norm, "_COHORT_CELLS", 1)
    np.testing.assert_allclose(normalize_trial_scores(ids, emb, trials, cohort, top_n=7), got, rtol=1e-12)


def test_score_norm_errors_are_actionable():
    with pytest.raises(DataError, match="zero spread"):
        cohort_statistics(np.ones((2, 5)))
    with pytest.raises(DataError, match="top_n must be an integer >= 2"):
        asnorm([0.0], [[0.0, 1.0]], [[0.0, 1.0]], top_n=1)
    with pytest.raises(DataError, match="one row of cohort scores per trial"):
        snorm([0.0, 1.0], [[0.0, 1.0]], [[0.0, 1.0]])
    trials = Trials(None, np.array(["a"]), np.array(["b"]))
    with pytest.raises(DataError, match="unknown score normalisation"):
        normalize_trial_scores(["a", "b"], np.eye(2), trials, np.eye(2), method="znorm")
    with pytest.raises(DataError, match="cohort embeddings must be"):
        normalize_trial_scores(["a", "b"], np.eye(2), trials, np.eye(3))


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------


def _consistent_llrs(rng, n_tgt: int, n_non: int, mu: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact LLRs: with N(mu, 2 mu) for targets and N(-mu, 2 mu) for non-targets the score is its own LLR."""
    sd = math.sqrt(2 * mu)
    llr = np.concatenate((rng.normal(mu, sd, n_tgt), rng.normal(-mu, sd, n_non)))
    return llr, np.concatenate((np.ones(n_tgt, dtype=np.int8), np.zeros(n_non, dtype=np.int8)))


@pytest.mark.parametrize("p_target", [0.01, 0.5])
def test_linear_calibration_recovers_known_scale_and_offset(p_target):
    rng = np.random.default_rng(40)
    llr, labels = _consistent_llrs(rng, 10_000, 20_000)
    scale, offset = 2.5, -1.3
    raw = (llr - offset) / scale
    cal = LinearCalibration.fit(raw, labels, p_target=p_target)
    assert cal.scale == pytest.approx(scale, rel=0.08)
    assert cal.offset == pytest.approx(offset, abs=0.25)
    assert cal.p_target == p_target
    assert cal.score_threshold(0.01) == pytest.approx((bayes_threshold(0.01) - cal.offset) / cal.scale)


def test_calibration_lowers_cllr_towards_min_cllr(tmp_path: Path):
    rng = np.random.default_rng(41)
    llr, labels = _consistent_llrs(rng, 3000, 30_000)
    # Cosine-like raw scores: compressed and shifted, badly calibrated as LLRs.
    raw = 0.05 * llr + 0.3
    held_llr, held_labels = _consistent_llrs(rng, 3000, 30_000)
    held_raw = 0.05 * held_llr + 0.3
    cal = LinearCalibration.fit(raw, labels)
    before, after = cllr(held_raw, held_labels), cllr(cal(held_raw), held_labels)
    floor = min_cllr(held_raw, held_labels)
    assert before > 0.8 and after < 0.5 * before
    assert floor <= after < floor + 0.05
    # min Cllr is invariant to monotonic maps and matches the truly calibrated scores closely.
    assert min_cllr(np.exp(held_raw), held_labels) == pytest.approx(floor)
    assert cllr(held_llr, held_labels) == pytest.approx(floor, abs=0.02)
    # JSON round trip reproduces the map exactly.
    path = cal.save(tmp_path / "cal" / "calibration.json")
    assert json.loads(path.read_text())["format"] == "voxprint-linear-calibration"
    loaded = LinearCalibration.load(path)
    assert loaded == cal
    np.testing.assert_array_equal(loaded(held_raw), cal(held_raw))


def test_cllr_reference_values():
    assert cllr([0.0, 0.0, 0.0], [1, 0, 0]) == pytest.approx(1.0)
    assert cllr([math.log(3), -math.log(3)], [1, 0]) == pytest.approx(math.log2(4 / 3))
    # Perfectly separated scores: PAV gives infinite LLRs on the correct side, min Cllr 0.
    assert min_cllr([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == 0.0
    # Tied scores cannot be split: one pool at the empirical prior, min Cllr 1.
    assert min_cllr([1.0, 1.0, 1.0, 1.0], [0, 1, 0, 1]) == pytest.approx(1.0)


def test_bayes_threshold_is_minus_logit_of_effective_prior():
    assert bayes_threshold(0.5) == 0.0
    assert bayes_threshold(0.01) == pytest.approx(math.log(99))
    p_eff = 0.01 * 10 / (0.01 * 10 + 0.99 * 1)
    assert bayes_threshold(0.01, c_miss=10) == pytest.approx(-math.log(p_eff / (1 - p_eff)))
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        bayes_threshold(1.0)


def test_far_threshold_gives_requested_far_on_held_out_nontargets():
    rng = np.random.default_rng(42)
    train, held_out = rng.normal(size=100_000), rng.normal(size=100_000)
    for far in (0.01, 0.001):
        threshold = threshold_for_false_accept_rate(train, far)
        assert np.mean(train >= threshold) <= far
        achieved = np.mean(held_out >= threshold)
        # Binomial sampling error of both sets, at 4 standard deviations.
        assert abs(achieved - far) < 4 * math.sqrt(2 * far * (1 - far) / 100_000)


def test_far_threshold_edge_cases():
    assert threshold_for_false_accept_rate([0.1, 0.2, 0.3, 0.4], 0.5) == 0.3
    # A tie straddling the cut is never split: the next distinct score is used.
    assert threshold_for_false_accept_rate([0.1, 0.3, 0.3, 0.4], 0.5) == 0.4
    # Too few scores for any false accept: the threshold rejects them all.
    assert threshold_for_false_accept_rate([0.1, 0.2], 0.1) > 0.2
    with pytest.raises(DataError, match="far must be strictly between 0 and 1"):
        threshold_for_false_accept_rate([0.1], 0.0)


def test_make_calibration_trials_is_balanced_and_valid():
    rng = np.random.default_rng(43)
    utt2spk = {f"spk{s:02d}-u{u:02d}": f"spk{s:02d}" for s in range(30) for u in range(rng.integers(1, 12))}
    trials = make_calibration_trials(utt2spk, max_trials=400, seed=3)
    assert len(trials) == 400 and trials.n_targets == 200
    same = np.array([utt2spk[e] == utt2spk[t] for e, t in zip(trials.enroll, trials.test)])
    np.testing.assert_array_equal(same, trials.labels == 1)
    assert not (trials.enroll == trials.test).any()
    pairs = {frozenset(p) for p in zip(trials.enroll, trials.test)}
    assert len(pairs) == 400
    # Deterministic in the seed and the mapping's contents, not its order.
    again = make_calibration_trials(dict(reversed(list(utt2spk.items()))), max_trials=400, seed=3)
    np.testing.assert_array_equal(again.enroll, trials.enroll)
    np.testing.assert_array_equal(again.test, trials.test)
    assert not np.array_equal(make_calibration_trials(utt2spk, max_trials=400, seed=4).test, trials.test)
    # Few possible target pairs: all of them, the rest non-targets.
    small = {"a1": "a", "a2": "a", "b1": "b", "c1": "c"}
    trials = make_calibration_trials(small, max_trials=100)
    assert len(trials) == 6 and trials.n_targets == 1
    with pytest.raises(DataError, match="two utterances"):
        make_calibration_trials({"a1": "a", "b1": "b"})


# ---------------------------------------------------------------------------------------------
# PLDA backend pipeline
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_data():
    """Raw 24-d embeddings: 8-d speaker factor, strong 4-d channel nuisance, isotropic noise."""
    rng = np.random.default_rng(50)
    d = 24
    spk_basis, nuisance_basis = rng.normal(size=(8, d)), 3.0 * rng.normal(size=(4, d))

    def draw(n_spk: int, per_spk: int, prefix: str):
        labels = np.repeat(np.arange(n_spk), per_spk)
        speaker = (rng.normal(size=(n_spk, 8)) @ spk_basis)[labels]
        x = speaker + rng.normal(size=(labels.size, 4)) @ nuisance_basis
        x += rng.normal(size=x.shape) + 2.0
        ids = [f"{prefix}{s:03d}-{i:04d}" for i, s in enumerate(labels)]
        return ids, x, labels

    return draw(150, 10, "train"), draw(40, 6, "eval")


def _all_pairs(ids, labels) -> Trials:
    i, j = np.triu_indices(len(ids), k=1)
    same = (labels[i] == labels[j]).astype(np.int8)
    return Trials(labels=same, enroll=np.array(ids)[i], test=np.array(ids)[j])


def test_plda_backend_beats_cosine_and_round_trips(embedding_data, tmp_path: Path):
    (_, train_x, train_labels), (eval_ids, eval_x, eval_labels) = embedding_data
    backend = PLDABackend.fit(train_x, train_labels, lda_dim=12)
    assert backend.dim == 12 and backend.input_dim == 24
    z = backend.transform(train_x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), math.sqrt(12))
    trials = _all_pairs(eval_ids, eval_labels)
    plda_scores = backend.score_trials(eval_ids, eval_x, trials)
    cosine_scores = cosine_score_trials(eval_ids, eval_x, trials)
    plda_eer, _ = compute_eer(plda_scores, trials.labels)
    cosine_eer, _ = compute_eer(cosine_scores, trials.labels)
    assert plda_eer < 0.5 * cosine_eer
    # LLR sign: positive on average for targets, negative for non-targets.
    assert plda_scores[trials.labels == 1].mean() > 0 > plda_scores[trials.labels == 0].mean()

    path = backend.save(tmp_path / "plda")
    assert path.name == "plda.npz"
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    loaded = PLDABackend.load(path)
    np.testing.assert_array_equal(loaded.score_trials(eval_ids, eval_x, trials), plda_scores)


def test_plda_backend_multi_utterance_enrollment(embedding_data):
    (_, train_x, train_labels), (eval_ids, eval_x, eval_labels) = embedding_data
    backend = PLDABackend.fit(train_x, train_labels, lda_dim=12, n_iter=3)
    ids = np.array(eval_ids)
    # Enroll each eval speaker with its first 3 utterances; test against the others.
    enrollments = {f"model{s}": ids[eval_labels == s][:3].tolist() for s in range(40)}
    tests = np.concatenate([ids[eval_labels == s][3:] for s in range(40)])
    test_spk = np.concatenate([eval_labels[eval_labels == s][3:] for s in range(40)])
    models = np.repeat(np.arange(40), tests.size)
    trials = Trials(labels=(models == np.tile(test_spk, 40)).astype(np.int8),
                    enroll=np.array([f"model{m}" for m in models]), test=np.tile(tests, 40))
    exact = backend.score_trials(ids, eval_x, trials, enrollments=enrollments)
    averaged = backend.score_trials(ids, eval_x, trials, enrollments=enrollments, enroll_mode="mean")
    z = backend.transform(eval_x)
    row = {u: i for i, u in enumerate(eval_ids)}
    for k in (0, 1, 500, trials.enroll.size - 1):
        enroll_z = z[[row[u] for u in enrollments[trials.enroll[k]]]]
        test_z = z[row[trials.test[k]]]
        assert exact[k] == pytest.approx(backend.plda.llr(enroll_z, test_z), rel=1e-9, abs=1e-9)
        mean_llr = backend.plda.llr(enroll_z, test_z, enroll_mode="mean")
        assert averaged[k] == pytest.approx(mean_llr, rel=1e-9, abs=1e-9)
    # The exact likelihood counts three utterances of evidence where the mean counts one, so
    # its LLRs are more confident both ways.
    target = trials.labels == 1
    assert exact[target].mean() > averaged[target].mean() > 0
    assert exact[~target].mean() < averaged[~target].mean() < 0
    with pytest.raises(DataError, match="have no enrollment"):
        backend.score_trials(ids, eval_x, trials, enrollments={"model0": enrollments["model0"]})


def test_plda_backend_load_rejects_foreign_files(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        PLDABackend.load(tmp_path / "missing.npz")
    other = tmp_path / "emb.npz"
    np.savez(other, ids=np.array(["a"]), embeddings=np.ones((1, 2)))
    with pytest.raises(DataError, match="not a voxprint PLDA backend"):
        PLDABackend.load(other)
    with pytest.raises(DataError, match="not a voxprint linear calibration"):
        (tmp_path / "x.json").write_text("{}")
        LinearCalibration.load(tmp_path / "x.json")


def test_scoring_backend_scores_several_enrollments_with_the_exact_plda_model(embedding_data):
    """`ScoringBackend.score` (what `verify --enroll` uses) scores the exact n-utterance PLDA model, as the
    speaker store does, not the centroid of the enrollments as one utterance."""
    from voxprint.backends.backend import ScoringBackend
    from voxprint.identification.scoring import PLDAScoring

    (_, train_x, train_labels), (eval_ids, eval_x, _) = embedding_data
    plda = PLDABackend.fit(train_x, train_labels, lda_dim=12, n_iter=3)
    backend = ScoringBackend(kind="plda", plda=plda, calibration=LinearCalibration(scale=0.8, offset=-1.5))
    enroll, test = eval_x[:3], eval_x[4]
    trial = Trials(labels=None, enroll=np.array(["m"]), test=np.array([eval_ids[4]]))
    exact = plda.score_trials(eval_ids[:5], eval_x[:5], trial, enrollments={"m": eval_ids[:3]}, enroll_mode="exact")
    pooled = plda.score_trials(eval_ids[:5], eval_x[:5], trial, enrollments={"m": eval_ids[:3]}, enroll_mode="mean")
    score = backend.score(enroll, test)
    assert score == pytest.approx(0.8 * exact[0] - 1.5, abs=1e-9)
    assert abs(score - (0.8 * pooled[0] - 1.5)) > 0.1
    scoring = PLDAScoring(backend)
    models, counts = scoring.models([enroll])
    assert score == pytest.approx(float(scoring.scores(models, counts, test[None])[0, 0]), abs=1e-12)
    single = plda.score_trials(eval_ids[:5], eval_x[:5], Trials(labels=None, enroll=np.array([eval_ids[0]]),
                                                                 test=np.array([eval_ids[4]])))
    assert backend.score(enroll[:1], test) == pytest.approx(0.8 * single[0] - 1.5, abs=1e-9)
