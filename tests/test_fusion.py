"""Linear score fusion (voxprint.backends.fusion) and ``voxprint fuse``, on synthetic scores with known structure."""
import json
from pathlib import Path

import numpy as np
import pytest

from voxprint.backends.calibration import LinearCalibration, cllr, min_cllr
from voxprint.backends.fusion import LinearFusion, align_scores, read_scores
from voxprint.cli import main
from voxprint.data.trials import Trials, write_scores
from voxprint.errors import DataError
from voxprint.metrics import evaluate_scores


def _labels(rng, n: int, target_rate: float = 0.2) -> np.ndarray:
    labels = (rng.random(n) < target_rate).astype(np.int8)
    labels[:2] = (1, 0)  # both classes, whatever the draw
    return labels


def _complementary(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two systems that both separate targets (d' = 2) with independent errors, on different scales."""
    labels = _labels(rng, n)
    a = 0.1 * (2.0 * labels + rng.normal(size=n)) + 0.3  # cosine-like
    b = 5.0 * (2.0 * labels + rng.normal(size=n)) - 10.0  # PLDA-like
    return np.c_[a, b], labels


def _trials(prefix: str, n: int, labels=None) -> Trials:
    return Trials(labels=labels, enroll=np.array([f"{prefix}m{i % 7}" for i in range(n)]),
                  test=np.array([f"{prefix}u{i}" for i in range(n)]))


# ------------------------------------------------------------------------------------------------ LinearFusion


def test_informative_system_gets_its_llr_slope_and_noise_gets_nothing():
    rng = np.random.default_rng(0)
    labels = _labels(rng, 20_000)
    informative = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)  # its exact LLR is 2 * score
    noise = rng.normal(size=labels.size)
    fusion = LinearFusion.fit(np.c_[informative, noise], labels, systems=["a", "b"])
    assert fusion.systems == ("a", "b") and fusion.p_target == 0.01
    assert fusion.weights[0] == pytest.approx(2.0, rel=0.1)
    assert abs(fusion.weights[1]) < 0.1 * fusion.weights[0]
    assert fusion.offset == pytest.approx(0.0, abs=0.3)


def test_complementary_systems_fuse_better_than_either_on_held_out_trials():
    rng = np.random.default_rng(1)
    train, train_labels = _complementary(rng, 10_000)
    dev, dev_labels = _complementary(rng, 10_000)
    fusion = LinearFusion.fit(train, train_labels, systems=["cosine", "plda"])
    assert all(w > 0 for w in fusion.weights)
    # Equal discrimination, so equal weight per standard deviation of each system's scores.
    contributions = np.asarray(fusion.weights) * train.std(axis=0)
    assert contributions[0] == pytest.approx(contributions[1], rel=0.15)
    fused = fusion(dev)
    fused_eer = evaluate_scores(fused, dev_labels).eer
    for i in range(2):
        assert fused_eer < 0.85 * evaluate_scores(dev[:, i], dev_labels).eer
        # Better than any monotonic calibration of either system alone could be.
        assert cllr(fused, dev_labels) < min_cllr(dev[:, i], dev_labels) - 0.05


def test_scaling_a_system_divides_its_weight_and_shifting_moves_only_the_offset():
    rng = np.random.default_rng(2)
    matrix, labels = _complementary(rng, 5000)
    base = LinearFusion.fit(matrix, labels)
    scaled = LinearFusion.fit(matrix * [4.0, 1.0], labels)
    assert scaled.weights[0] == pytest.approx(base.weights[0] / 4.0, rel=1e-4)
    assert scaled.weights[1] == pytest.approx(base.weights[1], rel=1e-4)
    assert scaled.offset == pytest.approx(base.offset, rel=1e-4)
    shifted = LinearFusion.fit(matrix + [0.0, 3.0], labels)
    assert shifted.weights == pytest.approx(base.weights, rel=1e-4)
    assert shifted.offset == pytest.approx(base.offset - 3.0 * base.weights[1], rel=1e-4)


def test_fused_output_is_the_weighted_sum_plus_offset():
    rng = np.random.default_rng(3)
    matrix, labels = _complementary(rng, 2000)
    fusion = LinearFusion.fit(matrix, labels, p_target=0.5)
    assert fusion.p_target == 0.5
    expected = fusion.weights[0] * matrix[:, 0] + fusion.weights[1] * matrix[:, 1] + fusion.offset
    np.testing.assert_allclose(fusion.transform(matrix), expected, rtol=1e-12, atol=1e-12)
    assert fusion.transform(matrix).dtype == np.float64
    with pytest.raises(DataError, match=r"needs an \(n, 2\) score matrix"):
        fusion.transform(matrix[:, :1])
    with pytest.raises(DataError, match="NaN or infinite"):
        fusion.transform([[np.nan, 0.0]])


def test_one_system_fusion_is_the_linear_calibration():
    rng = np.random.default_rng(4)
    matrix, labels = _complementary(rng, 3000)
    for p in (0.01, 0.5):
        fusion = LinearFusion.fit(matrix[:, :1], labels, p_target=p)
        calibration = LinearCalibration.fit(matrix[:, 0], labels, p_target=p)
        assert fusion.weights == (calibration.scale,) and fusion.offset == calibration.offset


def test_fit_refuses_bad_input():
    rng = np.random.default_rng(5)
    matrix, labels = _complementary(rng, 500)
    with pytest.raises(DataError, match="'flat' are all equal"):
        LinearFusion.fit(np.c_[matrix[:, 0], np.ones(500)], labels, systems=["a", "flat"])
    with pytest.raises(DataError, match="no system gets a positive weight"):
        LinearFusion.fit(matrix, 1 - labels)
    with pytest.raises(DataError, match=r"\(n, k\) score matrix"):
        LinearFusion.fit(matrix[:, 0], labels)
    with pytest.raises(DataError, match="1 system names for 2 score columns"):
        LinearFusion.fit(matrix, labels, systems=["a"])
    with pytest.raises(DataError, match="NaN or infinite"):
        LinearFusion.fit(np.where(np.arange(500)[:, None] == 3, np.inf, matrix), labels)
    with pytest.raises(DataError, match="both kinds are needed"):
        LinearFusion.fit(matrix, np.ones(500))
    with pytest.raises(DataError, match="names must differ"):
        LinearFusion(weights=(1.0, 1.0), offset=0.0, systems=("a", "a"))
    with pytest.raises(DataError, match="finite numbers"):
        LinearFusion(weights=(float("nan"),), offset=0.0, systems=("a",))


def test_json_round_trip_is_exact_and_foreign_files_are_refused(tmp_path: Path):
    rng = np.random.default_rng(6)
    matrix, labels = _complementary(rng, 2000)
    fusion = LinearFusion.fit(matrix, labels, systems=["ecapa", "ivector"])
    path = fusion.save(tmp_path / "sub" / "fusion.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "voxprint-linear-fusion" and [s["name"] for s in doc["systems"]] == ["ecapa", "ivector"]
    loaded = LinearFusion.load(path)
    assert loaded == fusion and LinearFusion.from_dict(fusion.to_dict()) == fusion
    np.testing.assert_array_equal(loaded(matrix), fusion(matrix))

    with pytest.raises(DataError, match="fusion file not found"):
        LinearFusion.load(tmp_path / "missing.json")
    (tmp_path / "cal.json").write_text(json.dumps({"format": "voxprint-linear-calibration", "version": 1}))
    with pytest.raises(DataError, match="cal.json: not a voxprint linear fusion"):
        LinearFusion.load(tmp_path / "cal.json")
    with pytest.raises(DataError, match="version 99"):
        LinearFusion.from_dict({**doc, "version": 99})
    with pytest.raises(DataError, match="lacks 'offset'"):
        LinearFusion.from_dict({k: v for k, v in doc.items() if k != "offset"})
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read fusion file"):
        LinearFusion.load(tmp_path / "junk.json")


# ------------------------------------------------------------------------------------------ score files, alignment


def test_read_scores_reads_what_write_scores_writes_and_refuses_malformed_files(tmp_path: Path):
    trials = _trials("d", 5, labels=np.array([1, 0, 0, 1, 0], dtype=np.int8))
    scores = np.array([0.5, -1.25, 2.0, 3.0, -0.125])
    path = write_scores(tmp_path / "s.txt", trials, scores)
    back, read = read_scores(path)
    np.testing.assert_array_equal(read, scores)
    np.testing.assert_array_equal(back.labels, trials.labels)
    assert back.enroll.tolist() == trials.enroll.tolist() and back.path == path
    unlabelled, _ = read_scores(write_scores(tmp_path / "u.txt", _trials("d", 2), [1.0, 2.0]))
    assert unlabelled.labels is None

    bad = {"empty": ("\n\n", "empty"), "mixed": ("a b 1.0\na c 2.0 1\n", "line 2: 4 fields"),
           "fields": ("a b\n", "line 1: 2 fields"), "score": ("a b x1\n", "line 1: score 'x1' is not a number"),
           "inf": ("a b 1\na c inf\n", "line 2: score 'inf' is not finite"),
           "label": ("a b 1.0 target\na c 1.0 maybe\n", "line 2: label 'maybe'")}
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=message):
            read_scores(tmp_path / name)
    with pytest.raises(DataError, match="score file not found"):
        read_scores(tmp_path / "missing.txt")


def test_align_scores_matches_pairs_in_any_order():
    labels = np.array([1, 0, 0, 1], dtype=np.int8)
    a = (_trials("x", 4, labels), np.array([0.1, 0.2, 0.3, 0.4]))
    order = np.array([2, 0, 3, 1])
    b_trials = Trials(labels=None, enroll=a[0].enroll[order], test=a[0].test[order])
    b = (b_trials, np.array([30.0, 10.0, 40.0, 20.0]))
    aligned = align_scores([a, b])
    np.testing.assert_array_equal(aligned.matrix, [[0.1, 10.0], [0.2, 20.0], [0.3, 30.0], [0.4, 40.0]])
    np.testing.assert_array_equal(aligned.trials.labels, labels)
    assert aligned.trials.test.tolist() == a[0].test.tolist() and aligned.dropped == (0, 0)


def test_align_scores_names_the_file_and_counts_missing_pairs(tmp_path: Path):
    full = write_scores(tmp_path / "full.txt", _trials("x", 10, np.zeros(10, np.int8)), np.arange(10.0))
    short_trials = _trials("x", 10, np.zeros(10, np.int8))
    keep = np.arange(10) % 4 != 0  # drops trials 0, 4, 8
    short = write_scores(tmp_path / "short.txt", Trials(labels=short_trials.labels[keep],
                                                        enroll=short_trials.enroll[keep],
                                                        test=short_trials.test[keep]), np.arange(7.0))
    with pytest.raises(DataError, match=r"short.txt lacks 3 of the 10 trial pairs of .*full.txt \(first: 'xm0 xu0'\)"):
        align_scores([read_scores(full), read_scores(short)])
    with pytest.raises(DataError, match=r"full.txt has 3 trial pairs that .*short.txt lacks \(first: 'xm0 xu0'\)"):
        align_scores([read_scores(short), read_scores(full)])
    common = align_scores([read_scores(full), read_scores(short)], common_only=True)
    assert len(common.trials) == 7 and common.dropped == (3, 0)
    np.testing.assert_array_equal(common.matrix[:, 0], np.arange(10.0)[keep])
    np.testing.assert_array_equal(common.matrix[:, 1], np.arange(7.0))
    other = write_scores(tmp_path / "other.txt", _trials("y", 3), np.zeros(3))
    with pytest.raises(DataError, match="no trial pair is scored in all 2 score lists"):
        align_scores([read_scores(full), read_scores(other)], common_only=True)


def test_align_scores_refuses_disagreeing_labels_and_repeated_pairs():
    trials = _trials("x", 4, np.array([1, 0, 0, 1], dtype=np.int8))
    flipped = Trials(labels=np.array([1, 1, 0, 1], dtype=np.int8), enroll=trials.enroll, test=trials.test)
    with pytest.raises(DataError, match=r"disagree on the label of 1 of 4 trial pairs \(first: 'xm1 xu1'"):
        align_scores([(trials, np.zeros(4)), (flipped, np.zeros(4))])
    twice = Trials(labels=None, enroll=np.array(["a", "a"]), test=np.array(["b", "b"]))
    with pytest.raises(DataError, match="the pair 'a b' is scored twice"):
        align_scores([(twice, np.zeros(2))])


# ------------------------------------------------------------------------------------------------------- CLI


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write_system_files(folder: Path) -> dict[str, Path]:
    """Score files of two complementary systems on train and dev trials (the second system's lines shuffled)."""
    rng = np.random.default_rng(7)
    files = {}
    for part, n in (("train", 3000), ("dev", 1500)):
        matrix, labels = _complementary(rng, n)
        trials = _trials(part, n, labels)
        files[f"a_{part}"] = write_scores(folder / f"a_{part}.txt", trials, matrix[:, 0])
        order = rng.permutation(n)
        shuffled = Trials(labels=labels[order], enroll=trials.enroll[order], test=trials.test[order])
        files[f"b_{part}"] = write_scores(folder / f"b_{part}.txt", shuffled, matrix[order, 1])
    return files


def _one_line_error(code: int, err: str, message: str) -> None:
    assert code == 1, err
    assert err.startswith("voxprint: error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_fuse_trains_saves_loads_and_applies(capsys, tmp_path: Path):
    f = _write_system_files(tmp_path)
    code, out, err = run_cli(capsys, "fuse", "--train", f["a_train"], f["b_train"], "--names", "cosine", "plda",
                             "--save", tmp_path / "fusion.json", "--apply", f["a_dev"], f["b_dev"],
                             "--out", tmp_path / "fused.txt")
    assert code == 0, err
    assert "fusion of 2 systems trained on 3000 trials" in out and "cosine" in out and "plda" in out
    assert out.count("EER") == 3  # each system and the fusion
    fusion = LinearFusion.load(tmp_path / "fusion.json")
    assert fusion.systems == ("cosine", "plda")

    fused_trials, fused = read_scores(tmp_path / "fused.txt")
    a_trials, a = read_scores(f["a_dev"])
    assert fused_trials.test.tolist() == a_trials.test.tolist()  # the first file's order
    np.testing.assert_array_equal(fused_trials.labels, a_trials.labels)
    expected = fusion(align_scores([read_scores(f["a_dev"]), read_scores(f["b_dev"])]).matrix)
    np.testing.assert_allclose(fused, expected, atol=1e-6)

    code, out, err = run_cli(capsys, "fuse", "--load", tmp_path / "fusion.json", "--apply", f["a_dev"], f["b_dev"],
                             "--out", tmp_path / "again.txt", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert (tmp_path / "again.txt").read_text() == (tmp_path / "fused.txt").read_text()
    assert [s["name"] for s in record["systems"]] == ["cosine", "plda"] and record["scores"] == 1500
    metrics = record["metrics"]
    assert set(metrics["systems"]) == {"cosine", "plda"}
    for system in metrics["systems"].values():
        assert metrics["fusion"]["eer"] < system["eer"] and metrics["fusion"]["min_cllr"] < system["min_cllr"]
    assert metrics["fusion"]["cllr"] == pytest.approx(cllr(fused, fused_trials.labels))


def test_fuse_default_names_json_and_common_only(capsys, tmp_path: Path):
    f = _write_system_files(tmp_path)
    lines = f["b_dev"].read_text().splitlines(keepends=True)
    (tmp_path / "b_short.txt").write_text("".join(lines[:-10]))
    code, _, err = run_cli(capsys, "fuse", "--train", f["a_train"], f["b_train"], "--apply", f["a_dev"],
                           tmp_path / "b_short.txt", "--out", tmp_path / "fused.txt")
    _one_line_error(code, err, "b_short.txt lacks 10 of the 1500 trial pairs")
    code, out, err = run_cli(capsys, "fuse", "--train", f["a_train"], f["b_train"], "--apply", f["a_dev"],
                             tmp_path / "b_short.txt", "--out", tmp_path / "fused.txt", "--common-only", "--json")
    assert code == 0 and "dropped 10 from" in err
    record = json.loads(out)
    assert [s["name"] for s in record["systems"]] == ["a_train", "b_train"]
    assert record["scores"] == 1490 and record["train_trials"] == 3000
    assert len((tmp_path / "fused.txt").read_text().splitlines()) == 1490


def test_fuse_errors_are_one_line(capsys, tmp_path: Path):
    f = _write_system_files(tmp_path)
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("".join(" ".join(line.split()[:3]) + "\n" for line in f["b_train"].read_text().splitlines()))
    out_file = tmp_path / "fused.txt"
    cases = [
        (["--train", f["a_train"], unlabelled], "unlabelled.txt has no labels"),
        (["--train", f["a_train"], f["b_train"], "--apply", f["a_dev"], "--out", out_file],
         "2 --train files but 1 --apply files"),
        (["--train", f["a_train"], f["b_train"], "--apply", f["a_train"], f["b_train"], "--out", out_file,
          "--save", tmp_path / "refused.json"], "the --apply trials share 3007 utterance or model ids"),
        (["--apply", f["a_dev"], "--out", out_file], "give either --train"),
        (["--train", f["a_train"], "--apply", f["a_dev"]], "--apply and --out go together"),
        (["--train", f["a_train"], "--save", tmp_path / "fusion.txt"], "must end in .json"),
        (["--train", f["a_train"], f["b_train"], "--names", "one"], "1 --names for 2 --train files"),
        (["--train", f["a_train"], f["a_dev"]], "a_dev.txt lacks 3000 of the 3000 trial pairs"),
        (["--load", tmp_path / "none.json", "--apply", f["a_dev"], "--out", out_file], "fusion file not found"),
    ]
    for argv, message in cases:
        _one_line_error(*run_cli(capsys, "fuse", *argv)[::2], message)
    assert not out_file.exists() and not (tmp_path / "refused.json").exists()

    assert run_cli(capsys, "fuse", "--train", f["a_train"], f["b_train"], "--save", tmp_path / "f.json")[0] == 0
    for argv, message in [
        (["--apply", f["a_dev"], "--out", out_file], "fuses 2 systems (a_train, b_train) but 1 --apply files"),
        (["--apply", f["a_dev"], f["b_dev"], "--out", out_file, "--names", "x", "y"], "--names only applies"),
        ([], "--load needs --apply"),
    ]:
        _one_line_error(*run_cli(capsys, "fuse", "--load", tmp_path / "f.json", *argv)[::2], message)
    # Overlapping ids are allowed on request (here: the training trials themselves).
    code, _, err = run_cli(capsys, "fuse", "--train", f["a_train"], f["b_train"], "--apply", f["a_train"],
                           f["b_train"], "--out", out_file, "--allow-overlap")
    assert code == 0, err
