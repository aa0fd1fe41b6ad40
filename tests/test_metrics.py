"""Verification metrics: hand-computed EER/minDCF cases, ties, sklearn agreement, DET plots."""
from __future__ import annotations

import subprocess
import sys
from statistics import NormalDist

import numpy as np
import pytest

from voxprint.errors import DataError, VoxprintError
from voxprint.metrics import (
    VerificationResult,
    compute_eer,
    compute_min_dcf,
    det_curve,
    evaluate_scores,
    plot_det,
)
from voxprint.metrics.plots import _probit

# Targets at 0.4, 0.5, 0.7, 0.8; non-targets at 0.1, 0.2, 0.3, 0.6.
# At threshold 0.5 one target (0.4) is missed and one non-target (0.6) accepted: EER 1/4.
SCORES_QUARTER = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
LABELS_QUARTER = np.array([0, 0, 0, 1, 1, 0, 1, 1])


def test_eer_quarter_exact_point():
    eer, thr = compute_eer(SCORES_QUARTER, LABELS_QUARTER)
    assert eer == pytest.approx(0.25)
    assert thr == pytest.approx(0.5)


def test_eer_third_exact_point():
    # N .1, N .2, T .3, N .4, T .5, T .6: at threshold 0.4, p_miss = p_fa = 1/3.
    eer, thr = compute_eer([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 0, 1, 0, 1, 1])
    assert eer == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.4)


def test_eer_interpolated_between_points():
    # T .1, N .2, T .3, T .4: DET points (p_miss, p_fa) at thresholds .2 and .3 are
    # (1/3, 1) and (1/3, 0); the diagonal is crossed 2/3 of the way, at p = 1/3.
    eer, thr = compute_eer([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1])
    assert eer == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.2 + 2 / 3 * 0.1)


def test_eer_separable_and_inverted():
    eer, thr = compute_eer([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    assert eer == 0.0
    assert 0.2 < thr <= 0.3
    eer, _ = compute_eer([0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0])
    assert eer == 1.0


def test_det_curve_end_points_and_order():
    p_miss, p_fa, thr = det_curve(SCORES_QUARTER, LABELS_QUARTER)
    assert p_miss.size == p_fa.size == thr.size == SCORES_QUARTER.size + 1
    assert (p_miss[0], p_fa[0]) == (0.0, 1.0)  # all accepted
    assert (p_miss[-1], p_fa[-1]) == (1.0, 0.0)  # all rejected
    assert np.all(np.diff(thr) > 0)
    assert thr[0] == SCORES_QUARTER.min() and thr[-1] > SCORES_QUARTER.max()
    assert np.all(np.diff(p_miss) >= 0) and np.all(np.diff(p_fa) <= 0)
    np.testing.assert_allclose(p_miss, [0, 0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_allclose(p_fa, [1, 0.75, 0.5, 0.25, 0.25, 0.25, 0, 0, 0])


def test_ties_are_never_split():
    # A target and a non-target with the same score must be accepted or rejected together;
    # splitting them (as a per-trial cumsum does) would give EER 0 or 1 depending on order.
    for labels in ([1, 0], [0, 1]):
        p_miss, p_fa, thr = det_curve([0.5, 0.5], labels)
        np.testing.assert_array_equal(p_miss, [0.0, 1.0])
        np.testing.assert_array_equal(p_fa, [1.0, 0.0])
        assert compute_eer([0.5, 0.5], labels)[0] == pytest.approx(0.5)


def test_ties_match_brute_force():
    rng = np.random.default_rng(1)
    labels = rng.random(500) < 0.2
    scores = rng.integers(0, 12, size=500) + 3 * labels  # few distinct values: many ties
    p_miss, p_fa, thr = det_curve(scores, labels)
    distinct = np.unique(scores)
    np.testing.assert_array_equal(thr[:-1], distinct)
    expected_miss = [(scores[labels] < t).mean() for t in thr]
    expected_fa = [(scores[~labels] >= t).mean() for t in thr]
    np.testing.assert_allclose(p_miss, expected_miss)
    np.testing.assert_allclose(p_fa, expected_fa)
    # Order of the input must not matter.
    perm = rng.permutation(500)
    np.testing.assert_array_equal(det_curve(scores[perm], labels[perm])[0], p_miss)


def test_min_dcf_hand_case():
    # Targets at 0.5 and 2.0; 999 non-targets at 0.0 and one at 1.0.
    scores = np.r_[0.5, 2.0, np.zeros(999), 1.0]
    labels = np.r_[1, 1, np.zeros(1000, dtype=int)]
    # p_target 0.01: threshold 0.5 costs 0.99 * 1/1000 / 0.01 = 0.099 (no miss, one FA),
    # better than threshold 2.0 (half the targets missed: 0.5).
    dcf, thr = compute_min_dcf(scores, labels, p_target=0.01)
    assert dcf == pytest.approx(0.099)
    assert thr == 0.5
    # p_target 0.001: that one false alarm now costs 0.999 * 1/1000 / 0.001 = 0.999, so
    # missing one target of two (0.5) at threshold 2.0 is cheaper.
    dcf, thr = compute_min_dcf(scores, labels, p_target=0.001)
    assert dcf == pytest.approx(0.5)
    assert thr == 2.0
    # Costs: c_miss = 10 makes the default cost 0.1 and the FA point 0.99e-3 / 0.1.
    dcf, thr = compute_min_dcf(scores, labels, p_target=0.01, c_miss=10.0)
    assert dcf == pytest.approx(0.0099)
    assert thr == 0.5


def test_min_dcf_never_above_one():
    rng = np.random.default_rng(2)
    labels = rng.random(1000) < 0.5
    scores = rng.normal(size=1000)  # useless system
    for p in (0.5, 0.01, 0.001):
        assert 0.0 <= compute_min_dcf(scores, labels, p)[0] <= 1.0


def test_min_dcf_rejects_bad_prior():
    with pytest.raises(ValueError, match="p_target"):
        compute_min_dcf(SCORES_QUARTER, LABELS_QUARTER, p_target=1.0)


def test_eer_agrees_with_sklearn_roc_curve():
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(1500, dtype=int), np.zeros(15000, dtype=int)]
    scores = rng.normal(size=labels.size) + 2.0 * labels
    scores[:300] = np.round(scores[:300], 1)  # some ties too
    eer, thr = compute_eer(scores, labels)

    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1 - tpr
    # VoxCeleb-trainer style: operating point closest to the diagonal.
    i = np.nanargmin(np.abs(fnr - fpr))
    assert eer == pytest.approx((fnr[i] + fpr[i]) / 2, abs=1e-3)
    assert thr == pytest.approx(thresholds[i], abs=0.05)
    # VoxSRC style: root of 1 - x - tpr(x) on the linearly interpolated ROC, which is the
    # same line segment this module interpolates on.
    eer_voxsrc = brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0, xtol=1e-12)
    assert eer == pytest.approx(eer_voxsrc, abs=1e-9)


def test_evaluate_scores_consistent():
    rng = np.random.default_rng(4)
    labels = rng.random(3000) < 0.1
    scores = rng.normal(size=3000) + 1.5 * labels
    result = evaluate_scores(scores, labels)
    assert isinstance(result, VerificationResult)
    assert (result.eer, result.eer_threshold) == compute_eer(scores, labels)
    assert result.min_dcf_01 == compute_min_dcf(scores, labels, 0.01)[0]
    assert result.min_dcf_001 == compute_min_dcf(scores, labels, 0.001)[0]
    d = result.to_dict()
    assert list(d) == ["eer", "eer_threshold", "min_dcf_0.01", "min_dcf_0.001", "trials", "targets"]
    assert d["trials"] == 3000 and d["targets"] == int(labels.sum())
    assert d["min_dcf_0.01"] == result.min_dcf_01


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], "differ in length"),
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, True], "no non-target"),
        ([0.1, float("nan"), 0.3], [0, 1, 1], "NaN or infinite .*index 1"),
        ([0.1, float("inf"), 0.3], [0, 1, 1], "NaN or infinite"),
        ([0.1, 0.2, 0.3], [0, 1, 2], "index 2"),
        ([[0.1, 0.2]], [[0, 1]], "1-D"),
        (["a", "b"], [0, 1], "real numbers"),
    ],
)
def test_invalid_inputs_raise_data_error(scores, labels, message):
    with pytest.raises(DataError, match=message):
        evaluate_scores(scores, labels)
    assert issubclass(DataError, VoxprintError)


def test_probit_matches_normal_inverse_cdf():
    p = np.r_[1e-7, 1e-4, 0.001, 0.02, 0.02425, 0.1, 0.4, 0.5, 0.7, 0.98, 0.999, 1 - 1e-7]
    expected = [NormalDist().inv_cdf(x) for x in p]
    np.testing.assert_allclose(_probit(p), expected, atol=1e-8)
    assert np.isfinite(_probit(np.array([0.0, 1.0]))).all()


def test_plot_det_writes_png(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(300), np.zeros(3000)]
    good = rng.normal(size=labels.size) + 3.0 * labels
    poor = rng.normal(size=labels.size) + 1.0 * labels
    out = plot_det({"good": (good, labels), "poor": (poor, labels)}, tmp_path / "sub" / "det.png",
                   title="DET")
    assert out == tmp_path / "sub" / "det.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    image = matplotlib.image.imread(out)
    assert image.shape == (600, 600, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ["det.png"]  # no temp file left


def test_plot_det_errors_name_the_system(tmp_path):
    with pytest.raises(DataError, match="at least one"):
        plot_det({}, tmp_path / "x.png")
    with pytest.raises(DataError, match="'bad'.*no target"):
        plot_det({"bad": ([0.1, 0.2], [0, 0])}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_importing_metrics_does_not_import_matplotlib():
    code = "import sys, voxprint.metrics; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
