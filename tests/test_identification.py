"""Identification: quality-measure calibration, the eval-id protocol's metrics, the gallery-size rule, ``eval-id``.

Real speech: a few speechocean762 dev speakers (never seen in training) embedded with the bundled model.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import make_subset_folder

from voxprint.backends.calibration import cllr
from voxprint.errors import DataError
from voxprint.identification.calibration import (
    BASE_TERMS,
    INTERACTION_TERMS,
    CrossFittedCalibration,
    QualityCalibration,
    calibration_by_bin,
)
from voxprint.identification.evaluation import (
    dir_at_fpir,
    evaluate_galleries,
    open_set_statistic,
    rank_of_truth,
    split_protocol,
    top_k_accuracy,
)
from voxprint.identification.trials import plan_quality_trials, render_segment
from voxprint.store.speakers import open_set_accepts

TRUE = {"score": 0.8, "log_seconds": -1.2, "log_count": 0.4, "score*log_seconds": 0.25, "score*log_count": 0.15}
TRUE_OFFSET = 1.5


def synthetic_trials(n: int, weights: dict[str, float], offset: float, seed: int = 0):
    """Scores whose true LLR is ``offset + sum(weights * terms)``: unit-variance Gaussians per class, their
    means set so the LLR slope and offset are the wanted functions of the quality measures."""
    rng = np.random.default_rng(seed)
    seconds = np.exp(rng.uniform(np.log(2.0), np.log(20.0), n))
    counts = rng.integers(1, 8, n).astype(float)
    lt, lk = np.log(seconds), np.log(counts)
    slope = weights.get("score", 0) + weights.get("score*log_seconds", 0) * lt + weights.get("score*log_count", 0) * lk
    intercept = offset + weights.get("log_seconds", 0) * lt + weights.get("log_count", 0) * lk
    labels = rng.random(n) < 0.5
    # With unit variance, llr(s) = slope * (s - midpoint): the class means are midpoint +- slope / 2.
    midpoint = -intercept / slope
    scores = midpoint + np.where(labels, 0.5, -0.5) * slope + rng.normal(size=n)
    return scores, labels.astype(int), seconds, counts


# ------------------------------------------------------------------------------------------- calibration

@pytest.mark.parametrize("p_target", [0.5, 0.01])
def test_calibration_recovers_known_parameters(p_target):
    scores, labels, seconds, counts = synthetic_trials(60_000, TRUE, TRUE_OFFSET)
    cal = QualityCalibration.fit(scores, labels, seconds, counts, p_target=p_target)
    assert set(cal.weights) == set(BASE_TERMS + INTERACTION_TERMS)
    for term, value in TRUE.items():
        assert cal.weights[term] == pytest.approx(value, abs=0.08), term
    assert cal.offset == pytest.approx(TRUE_OFFSET, abs=0.15)
    assert cal.seconds_range[0] == pytest.approx(2.0, abs=0.01) and cal.count_range == (1.0, 7.0)


def test_offset_only_form_and_storage():
    weights = {"score": 1.1, "log_seconds": -0.7, "log_count": 0.3}
    scores, labels, seconds, counts = synthetic_trials(40_000, weights, -0.5, seed=1)
    cal = QualityCalibration.fit(scores, labels, seconds, counts, p_target=0.5, interactions=False)
    assert set(cal.weights) == set(BASE_TERMS)
    assert [cal.weights[t] for t in BASE_TERMS] == pytest.approx([1.1, -0.7, 0.3], abs=0.06)
    again = QualityCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    probe = np.array([0.5, 2.0])
    assert again.transform(probe, [3.0, 8.0], [1, 4]).tolist() == cal.transform(probe, [3.0, 8.0], [1, 4]).tolist()
    # Unknown duration: the mean log duration of the fit; out-of-range quality measures are clipped.
    mean_t = math.exp(cal.mean_log_seconds)
    assert cal.transform([1.0], None, 2)[0] == pytest.approx(cal.transform([1.0], mean_t, 2)[0])
    assert cal.transform([1.0], 500.0, 50)[0] == pytest.approx(cal.transform([1.0], cal.seconds_range[1], 7)[0])
    with pytest.raises(DataError, match="quality calibration"):
        QualityCalibration.from_dict({"format": "voxprint-linear-calibration"})
    with pytest.raises(DataError, match="lacks"):
        QualityCalibration.from_dict({k: v for k, v in cal.to_dict().items() if k != "offset"})
    with pytest.raises(DataError, match="positive"):
        cal.transform([1.0], [0.0], 1)


def test_calibration_refuses_inverted_scores():
    scores, labels, seconds, counts = synthetic_trials(5_000, TRUE, TRUE_OFFSET)
    with pytest.raises(DataError, match="targets above non-targets"):
        QualityCalibration.fit(-scores, labels, seconds, counts)


def test_calibration_by_bin_predicts_error_rates_only_when_calibrated():
    scores, labels, seconds, counts = synthetic_trials(80_000, TRUE, TRUE_OFFSET, seed=2)
    lt, lk = np.log(seconds), np.log(counts)
    true_llr = (TRUE_OFFSET + TRUE["log_seconds"] * lt + TRUE["log_count"] * lk
                + scores * (TRUE["score"] + TRUE["score*log_seconds"] * lt + TRUE["score*log_count"] * lk))
    bins = np.where(seconds < 6, "short", "long")
    for row in calibration_by_bin(true_llr, labels, bins, threshold=1.0):
        assert row.cllr - row.min_cllr < 0.01
        assert row.far == pytest.approx(row.far_expected, rel=0.15)
        assert row.miss == pytest.approx(row.miss_expected, rel=0.15)
    over_confident = calibration_by_bin(3 * true_llr, labels, bins, threshold=1.0)
    assert all(r.cllr - r.min_cllr > 0.2 and r.far > 3 * r.far_expected for r in over_confident)


# ---------------------------------------------------------------------------------- real held-out speakers

@pytest.fixture(scope="module")
def dev16(tmp_path_factory, dev_dir):
    """16 dev speakers embedded with the bundled model, with calibration segments (2 orderings each)."""
    import voxprint
    from voxprint.identification.evaluation import load_identification_data
    from voxprint.identification.scoring import backend_scorer

    folder = make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev16"), speakers=16)
    model = voxprint.load_model("default")
    data = load_identification_data(model, folder, draws=2, seed=0)
    return data, data.quality_trials(backend_scorer(model.backend))


def test_calibration_is_even_across_durations_and_counts_on_held_out_speakers(dev16):
    _, trials = dev16
    speakers = sorted(set(trials.test_speakers.tolist()))
    fit_on, held_out = set(speakers[:8]), set(speakers[8:])

    def within(group):
        return np.isin(trials.test_speakers, list(group)) & np.isin(trials.model_speakers, list(group))

    train, test = within(fit_on), within(held_out)
    cal = QualityCalibration.fit(trials.scores[train], trials.labels[train], trials.test_seconds[train],
                                 trials.enroll_counts[train])
    llr = cal.transform(trials.scores[test], trials.test_seconds[test], trials.enroll_counts[test])
    labels = trials.labels[test]
    for names in (trials.duration_bins[test], trials.count_bins()[test]):
        after = calibration_by_bin(llr, labels, names)
        before = calibration_by_bin(trials.scores[test], labels, names)
        assert len(after) >= 4
        worst_before = max(r.cllr - r.min_cllr for r in before)
        worst_after = max(r.cllr - r.min_cllr for r in after)
        # The back-end's own calibration (fitted on the training speakers) loses over a bit in some bin; the
        # quality calibration, fitted on 8 other speakers only, stays within a fraction of that in every bin
        # (with 30 fitting speakers the worst bin loses 0.05 bit: docs/benchmarks.md).
        assert worst_before > 1.0
        assert worst_after < min(0.45, 0.4 * worst_before), [(r.bin, r.cllr, r.min_cllr) for r in after]
        assert np.mean([r.cllr - r.min_cllr for r in after]) < 0.2
    assert cllr(llr, labels) < 0.5 * cllr(trials.scores[test], labels)


def test_eval_id_scores_speakers_as_the_store_does(tmp_path, dev16):
    """The scorer eval-id measures (and fits the identification calibration on) is the store's: the exact
    n-utterance PLDA model of each speaker's enrollments, whatever their number."""
    import voxprint
    from voxprint.identification.scoring import backend_scorer
    from voxprint.store import Enrollment, SpeakerStore

    data, _ = dev16
    model = voxprint.load_model("default")
    rows = {u: i for i, u in enumerate(data.utterance_ids)}
    speakers = sorted(data.spk2utt)[:6]
    enrolled = {s: data.spk2utt[s][:1 + i % 4] for i, s in enumerate(speakers)}  # 1 to 4 recordings
    store = SpeakerStore(tmp_path / "s.db", model)
    for s in speakers:
        store.table.add(s, [Enrollment(u, float(data.seconds[rows[u]]), 1.0, data.embeddings[rows[u]])
                            for u in enrolled[s]], identity=model.identity)
    probe = data.spk2utt[speakers[3]][-1]
    test, seconds = data.embeddings[rows[probe]], float(data.seconds[rows[probe]])
    enrollments = [data.embeddings[[rows[u] for u in enrolled[s]]] for s in speakers]
    counts = np.array([len(enrolled[s]) for s in speakers])
    scores = backend_scorer(model.backend)(enrollments, test[None])[0]
    expected = store.calibrate(scores, seconds, counts)
    result = store.identify_embedding(test, top_k=6, test_seconds=seconds)
    assert result.top[0].speaker == speakers[3]
    assert [(c.speaker, round(c.score, 6)) for c in result.top] == \
        [(speakers[i], round(float(expected[i]), 6)) for i in np.argsort(-expected)]
    # Not the centroid scored as one utterance (what the store kept before), except for one recording.
    from voxprint.backends.scoring import mean_embedding
    from voxprint.data.trials import Trials

    trial = Trials(labels=None, enroll=np.array(["e"]), test=np.array(["t"]))
    pooled = np.array([model.backend.score_trials(["e", "t"], np.stack([mean_embedding(e), test]), trial)[0]
                       for e in enrollments])
    assert np.allclose(scores[counts == 1], pooled[counts == 1], atol=1e-9)
    assert np.abs(scores - pooled)[counts > 1].max() > 1.0
    # `verify --enroll` (ScoringBackend.score) scores the same exact model as the store.
    assert np.allclose([model.backend.score(e, test) for e in enrollments], scores, atol=1e-9)


def test_cross_fitting_never_calibrates_a_speaker_with_itself(dev16):
    _, trials = dev16
    fit = CrossFittedCalibration.fit(trials.scores, trials.labels, trials.test_seconds, trials.enroll_counts,
                                     trials.test_speakers, trials.model_speakers)
    assert sorted(set(fit.folds.values())) == [0, 1]
    speaker = trials.test_speakers[0]
    fold = fit.folds[speaker]
    own, other = fit.calibrations[fold], fit.calibrations[1 - fold]
    first = trials.scores[:1], trials.test_seconds[:1], trials.enroll_counts[:1]
    assert fit.transform(*first, [speaker])[0] == pytest.approx(own.transform(*first)[0])
    assert own != other
    # ...and ``own`` is exactly the calibration of the trials whose both speakers are in the other fold.
    outside = np.array([fit.folds[t] != fold and fit.folds[m] != fold
                        for t, m in zip(trials.test_speakers.tolist(), trials.model_speakers.tolist())])
    refit = QualityCalibration.fit(trials.scores[outside], trials.labels[outside], trials.test_seconds[outside],
                                   trials.enroll_counts[outside])
    assert refit == own


def test_calibration_segments_are_disjoint_from_their_enrollments():
    spk2utt = {s: [f"{s}{i}" for i in range(8)] for s in "abc"}
    seconds = {u: 3.0 + (i % 3) for s in spk2utt for i, u in enumerate(spk2utt[s])}
    plan = plan_quality_trials(spk2utt, seconds, draws=2, seed=3)
    kind = plan.is_target()
    for i, j in zip(*np.nonzero(kind == 1)):
        seg, model = plan.segments[i], plan.models[j]
        assert seg.speaker == model.speaker and seg.draw == model.draw
        assert not set(seg.utterances) & set(model.utterances)
    assert {s.bin for s in plan.segments} == {"2 s", "5 s", "10 s", "20 s", "utterance"}
    assert (kind == 1).sum() > 0 and (kind == 0).sum() > 0
    waves = {u: np.zeros(int(seconds[u] * 100)) for u in seconds}
    for seg in plan.segments:
        assert len(render_segment(seg, waves, 100)) == int(round(seg.seconds * 100))


# ----------------------------------------------------------------------------------------------- metrics

def test_metrics_on_hand_computed_cases():
    # Three known probes of speakers 0, 1, 1 and two unknown probes, against two enrolled speakers.
    llr = np.array([[5.0, 1.0],    # known, right, best 5
                    [4.0, 3.0],    # known, wrong (speaker 1 scores 3)
                    [0.0, 2.0],    # known, right, best 2
                    [1.5, -1.0],   # unknown, best 1.5
                    [-2.0, 3.5]])  # unknown, best 3.5
    known = np.array([True, True, True, False, False])
    truth = np.array([0, 1, 1, -1, -1])
    assert rank_of_truth(llr[known], truth[known]).tolist() == [0, 1, 0]
    assert top_k_accuracy(llr[known], truth[known], 1) == pytest.approx(2 / 3)
    assert top_k_accuracy(llr[known], truth[known], 2) == 1.0
    # Statistics: best - ln 2. Non-mated: 1.5 - ln 2, 3.5 - ln 2; FPIR 0.5 -> threshold 3.5 - ln 2, which only the
    # first known probe (5 - ln 2, right) reaches; the second reaches it too but names the wrong speaker.
    point = dir_at_fpir(open_set_statistic([5.0, 4.0, 2.0], 2), [True, False, True],
                        open_set_statistic([1.5, 3.5], 2), 0.5)
    assert point.threshold == pytest.approx(3.5 - math.log(2))
    assert (point.fpir, point.dir, point.nonmated, point.resolved) == (0.5, pytest.approx(1 / 3), 2, True)
    assert not dir_at_fpir([1.0], [True], [0.0, 0.5], 0.1).resolved  # 2 non-mated searches cannot resolve 10 %
    [result] = evaluate_galleries(llr, known, truth, [None], fpirs=[0.5])
    assert (result["gallery"], result["mated"], result["nonmated"]) == (2, 3, 2)
    assert result["top1"] == pytest.approx(2 / 3) and result["open_set"][0]["dir"] == pytest.approx(1 / 3)
    pairs = np.concatenate([llr[known].ravel(), llr[~known].ravel()])
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 0, 0])
    assert result["cllr"] == pytest.approx(cllr(pairs, labels))


def test_searches_are_ranked_by_one_map_and_the_cross_fitted_points_are_kept_apart():
    # Two folds of probes calibrated by two maps that differ by an offset: the known probes of fold 1 and the
    # unknown probes of fold 0 are shifted up by 3. Ranked by the scores as one map gives them, every known
    # probe clears the 50 % FPIR threshold; the cross-fitted scores lose the two known probes of fold 0.
    scores = np.array([[4.0, 0.0], [0.0, 4.0], [0.0, 3.5], [3.8, 0.0],   # known: speakers 0, 1, 1, 0
                       [1.5, 0.0], [0.0, 2.0], [0.5, 0.0], [0.0, 0.2]])  # unknown
    known = np.arange(8) < 4
    truth = np.array([0, 1, 1, 0, -1, -1, -1, -1])
    shift = np.array([0, 0, 3, 3, 3, 3, 0, 0])[:, None]
    [result] = evaluate_galleries(scores + shift, known, truth, [None], fpirs=[0.5], ranking=scores)
    assert result["top1"] == 1.0 and result["open_set"][0]["dir"] == 1.0
    assert result["open_set_crossfitted"][0]["dir"] == 0.5
    # The Cllr is that of the calibrated scores.
    [calibrated] = evaluate_galleries(scores + shift, known, truth, [None], fpirs=[0.5])
    assert result["cllr"] == calibrated["cllr"] and "open_set_crossfitted" not in calibrated


def test_statistic_agrees_with_the_store_decision():
    rng = np.random.default_rng(0)
    best = rng.normal(3.0, 2.0, 200)
    for gallery in (1, 10, 1000):
        stat = open_set_statistic(best, gallery)
        for threshold in (-1.0, 0.5, 2.0):
            assert [open_set_accepts(float(b), gallery, threshold) for b in best] == (stat >= threshold).tolist()


def test_split_is_speaker_disjoint_and_seeded():
    spk2utt = {f"s{i}": [f"s{i}u{j}" for j in range(8)] for i in range(20)}
    split = split_protocol(spk2utt, enroll_utts=3, unknown_fraction=0.5, seed=4)
    assert split == split_protocol(spk2utt, enroll_utts=3, unknown_fraction=0.5, seed=4)
    assert split != split_protocol(spk2utt, enroll_utts=3, unknown_fraction=0.5, seed=5)
    unknown = {u[:u.index("u")] for u in split.unknown_probes}
    assert len(split.enrolled) == len(unknown) == 10 and not unknown & set(split.enrolled)
    assert all(len(utts) == 3 for utts in split.enrolled.values())
    enrollment = {u for utts in split.enrolled.values() for u in utts}
    assert len(split.known_probes) == 50 and not set(split.known_probes) & enrollment
    with pytest.raises(DataError, match="unknown fraction"):
        split_protocol(spk2utt, unknown_fraction=1.0)


def max_of_gaussians(n: int, gallery: int, mean: float, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Exact draws of the maximum of ``gallery`` Gaussian scores (inverse CDF of Phi^N)."""
    from scipy.stats import norm

    u = rng.random(n)
    return mean + sd * norm.isf(-np.expm1(np.log(u) / gallery))


def test_ln_n_rule_keeps_fpir_near_target_as_the_gallery_grows():
    """Calibrated LLRs of a Gaussian system (d' = 4): non-target LLRs ~ N(-d'^2 / 2, d'^2)."""
    rng = np.random.default_rng(0)
    target, searches = 0.01, 200_000
    best = {n: max_of_gaussians(searches, n, -8.0, 4.0, rng) for n in (10, 100, 1000, 10_000)}
    rule = dir_at_fpir([0.0], [True], open_set_statistic(best[10], 10), target).threshold
    fixed = dir_at_fpir([0.0], [True], best[10], target).threshold
    for n, scores in best.items():
        fpir_rule = float((open_set_statistic(scores, n) >= rule).mean())
        assert 0.5 * target < fpir_rule < 1.5 * target, (n, fpir_rule)
        # With calibrated LLRs, ln(1 / target) bounds the FPIR at every gallery size (union bound).
        assert float((open_set_statistic(scores, n) >= math.log(1 / target)).mean()) <= target
    assert float((best[100] >= fixed).mean()) > 5 * target       # one fixed threshold lets it grow with N
    assert float((best[10_000] >= fixed).mean()) > 0.5


# ------------------------------------------------------------------------------------------------- CLI

def test_eval_id_end_to_end(tmp_path, dev_dir, capsys):
    import voxprint
    from voxprint.cli import main
    from voxprint.paths import PACKAGE_DIR
    from voxprint.store import SpeakerStore

    data = make_subset_folder(dev_dir, tmp_path / "dev10", speakers=10)
    run = tmp_path / "run"
    shutil.copytree(PACKAGE_DIR / "pretrained" / "default", run)
    code = main(["eval-id", "--data", str(data), "--model", str(run), "--calibration-draws", "2", "--threads", "1",
                 "--quiet", "--json", "--write-threshold", "--target-fpir", "0.02"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1
    report = json.loads(out[0])
    assert (report["speakers"], report["enrolled"], report["unknown"]) == (10, 5, 5)
    assert (report["known_probes"], report["unknown_probes"]) == (25, 40)
    [gallery] = report["galleries"]  # 5 enrolled speakers: the gallery of 10 is the gallery of all
    assert gallery["gallery"] == 5 and 0.6 <= gallery["top1"] <= gallery["top5"] == 1.0
    assert [p["fpir_target"] for p in gallery["open_set"]] == [0.01, 0.001, 0.02]
    assert report["calibration"]["cllr_before"] is not None and report["gallery_fpir"]["sizes"]
    entry = json.loads((run / "meta.json").read_text())["identification"]
    assert set(entry) == {"threshold", "fpir", "calibration", "rule"} and entry["fpir"] == 0.02
    # The threshold is the one set on every non-mated search of the gallery-size folds, not on one split's
    # few unknown probes.
    pooled = next(p for p in report["gallery_fpir"]["rule_thresholds"] if p["fpir"] == 0.02)
    assert pooled["nonmated"] > report["unknown_probes"]
    assert entry["threshold"] == pooled["threshold"] and "non-mated searches" in entry["rule"]
    assert "10 speakers" in entry["rule"] and "ln N" in entry["rule"]
    # The speaker store applies what was written.
    store = SpeakerStore(tmp_path / "s.db", voxprint.load_model(run))
    calibration = QualityCalibration.from_dict(entry["calibration"])
    assert store.identification_threshold == entry["threshold"]
    assert store.calibrate(np.array([2.0, -3.0]), 4.0, np.array([1, 3])).tolist() == \
        calibration.transform(np.array([2.0, -3.0]), 4.0, np.array([1, 3])).tolist()


def test_eval_id_refuses_before_slow_work(tmp_path, capsys):
    from voxprint.cli import main

    assert main(["eval-id", "--data", str(tmp_path), "--write-threshold"]) == 1
    assert "built-in model" in capsys.readouterr().err
    assert main(["eval-id", "--data", str(tmp_path), "--target-fpir", "0.01"]) == 1
    assert "--target-fpir only applies with --write-threshold" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval-id", "--data", str(tmp_path), "--unknown-fraction", "1.5"])
