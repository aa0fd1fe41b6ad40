"""Trial lists, cosine scoring, enrolled-model rows and score files (real speechocean762 dev trial list)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import voxprint.backends.scoring as scoring
from voxprint.backends.rows import RowIndex, unit_rows
from voxprint.backends.scoring import (
    add_enrollment_models,
    cosine_score_trials,
    cosine_similarity,
    mean_embedding,
)
from voxprint.data.trials import Trials, read_trials, write_scores
from voxprint.errors import DataError
from voxprint.metrics import evaluate_scores


@pytest.fixture(scope="module")
def dev_trials(dev_dir: Path) -> Trials:
    return read_trials(dev_dir / "trials.txt")


def _naive_scores(ids, emb, enroll, test) -> np.ndarray:
    """Reference: one Python loop per trial, float64 throughout."""
    row = {k: i for i, k in enumerate(ids)}
    out = []
    for e, t in zip(enroll, test):
        a = emb[row[e]].astype(np.float64)
        b = emb[row[t]].astype(np.float64)
        out.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return np.array(out)


def test_read_real_dev_trials(dev_dir: Path, dev_trials: Trials):
    assert len(dev_trials) == 114_960
    assert dev_trials.n_targets == 1_680
    assert dev_trials.labels.dtype == np.int8
    assert dev_trials.enroll.dtype.kind == "U" and dev_trials.test.dtype.kind == "U"
    assert dev_trials.path == dev_dir / "trials.txt"
    # Spot-check against a plain line-by-line parse of the first and last lines.
    lines = (dev_dir / "trials.txt").read_text().split("\n")
    lines = [ln.split() for ln in lines if ln.strip()]
    for i in (0, 1, len(lines) - 1):
        label, enroll, test = lines[i]
        assert (dev_trials.labels[i], dev_trials.enroll[i], dev_trials.test[i]) == (int(label), enroll, test)
    # 480 utterances, 60 speakers of 8: every unordered pair once.
    assert np.unique(np.r_[dev_trials.enroll, dev_trials.test]).size == 480


def test_dev_trials_scores_match_naive_loop(dev_trials: Trials):
    ids = np.unique(np.r_[dev_trials.enroll, dev_trials.test]).tolist()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(ids), 64)).astype(np.float32)
    scores = cosine_score_trials(ids, emb, dev_trials)
    assert scores.shape == (len(dev_trials),)
    subset = slice(0, None, 115)  # ~1,000 trials spread over the list
    expected = _naive_scores(ids, emb, dev_trials.enroll[subset], dev_trials.test[subset])
    np.testing.assert_allclose(scores[subset], expected, atol=1e-5)
    # Random embeddings: chance-level metrics, but they are computable on the real labels.
    result = evaluate_scores(scores, dev_trials.labels)
    assert result.trials == 114_960 and result.targets == 1_680
    assert 0.35 < result.eer < 0.65


@pytest.mark.parametrize("gram", [True, False], ids=["gram", "rowwise"])
def test_large_random_trials_match_naive_loop(monkeypatch, gram):
    # 100k trials over 3,000 ids, ungrouped; both internal strategies must agree with the
    # per-trial reference on a 1,000-trial subset.
    if not gram:
        monkeypatch.setattr(scoring, "_GRAM_MAX_CELLS", 0)
    rng = np.random.default_rng(1)
    ids = [f"spk{i % 97:03d}-utt{i:05d}" for i in range(3000)]
    emb = rng.normal(size=(3000, 32)) * rng.uniform(0.1, 10, size=(3000, 1))
    n = 100_000
    id_arr = np.array(ids)
    trials = Trials(labels=None, enroll=id_arr[rng.integers(0, 3000, n)],
                    test=id_arr[rng.integers(0, 3000, n)])
    scores = cosine_score_trials(ids, emb, trials)
    assert scores.dtype == np.float64  # float64 input is scored in float64
    pick = rng.choice(n, 1000, replace=False)
    expected = _naive_scores(ids, emb, trials.enroll[pick], trials.test[pick])
    np.testing.assert_allclose(scores[pick], expected, atol=1e-12)


def test_grouped_enroll_ids_and_unsorted_embedding_ids():
    ids = ["c", "a", "b"]
    emb = np.array([[0.0, 2.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    enroll = np.array(["a"] * 4 + ["b"] * 4 + ["c"])
    test = np.array(["a", "b", "c", "a", "b", "c", "a", "b", "c"])
    scores = cosine_score_trials(ids, emb, Trials(None, enroll, test))
    np.testing.assert_allclose(scores, _naive_scores(ids, emb, enroll, test), atol=1e-6)
    assert scores.dtype == np.float32


def test_missing_ids_are_listed(tmp_path):
    ids = ["u1", "u2"]
    emb = np.eye(2)
    enroll = np.array(["u1", "m1", "m2", "m3", "m4", "m5", "m6"])
    test = np.array(["u2", "u1", "u1", "u1", "u1", "u1", "m6"])
    with pytest.raises(DataError, match=r"6 trial id\(s\) .*have no embedding: m1, m2, m3, m4, m5, \.\.\."):
        cosine_score_trials(ids, emb, Trials(None, enroll, test, path=tmp_path / "t.txt"))


def test_bad_embedding_tables_raise():
    trials = Trials(None, np.array(["a"]), np.array(["b"]))
    with pytest.raises(DataError, match="more than once.*a"):
        cosine_score_trials(["a", "a", "b"], np.ones((3, 2)), trials)
    with pytest.raises(DataError, match="one id per embedding row"):
        cosine_score_trials(["a", "b"], np.ones((3, 2)), trials)
    with pytest.raises(DataError, match="NaN"):
        cosine_score_trials(["a", "b"], np.array([[1.0, np.nan], [1.0, 0.0]]), trials)
    with pytest.raises(DataError, match="zero length.*b"):
        cosine_score_trials(["a", "b"], np.array([[1.0, 0.0], [0.0, 0.0]]), trials)


def test_unlabeled_and_word_labels(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_text("a b\n\n  c d  \r\ne f\n")
    trials = read_trials(path)
    assert trials.labels is None and trials.n_targets is None
    assert trials.enroll.tolist() == ["a", "c", "e"] and trials.test.tolist() == ["b", "d", "f"]

    path.write_text("target a b\nnontarget a c\nTarget c d\n1 x y\n0 x z\n")
    trials = read_trials(path)
    assert trials.labels.tolist() == [1, 0, 1, 1, 0]


def test_non_ascii_ids(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_text("1 émile\u00a0x zoë\n0 a b\n", encoding="utf-8")
    trials = read_trials(path)
    # U+00A0 (no-break space) is not a field separator.
    assert trials.enroll.tolist() == ["émile\u00a0x", "a"]
    assert trials.test.tolist() == ["zoë", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 a b\n0 a c\n\na d\n", r"line 4: 2 fields, but line 1 has 3"),
        ("a b\na b c\n", r"line 2: 3 fields, but line 1 has 2"),
        ("\n1 a b c\n", r"line 2: 4 fields"),
        ("only\n", r"line 1: 1 fields"),
        ("1 a b\nyes a c\n", r"line 2: label 'yes'"),
        ("1 a b\n\n10 a c\n", r"line 3: label '10'"),
        ("\n \n", r"empty"),
    ],
)
def test_malformed_trial_lists_name_the_line(tmp_path, text, message):
    path = tmp_path / "trials.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_trials(path)
    assert str(path) in str(info.value)


def test_missing_and_binary_trial_lists(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_trials(tmp_path / "nope.txt")
    path = tmp_path / "bad.txt"
    path.write_bytes(b"1 a b\n0 a \xff\xfe\n")
    with pytest.raises(DataError, match="line 2: not valid UTF-8"):
        read_trials(path)


def test_mean_embedding_and_cosine_similarity():
    emb = np.array([[3.0, 0.0], [0.0, 0.5]])
    model = mean_embedding(emb)
    # Rows are normalised first, so both utterances weigh the same despite their lengths.
    np.testing.assert_allclose(model, [np.sqrt(0.5), np.sqrt(0.5)])
    np.testing.assert_allclose(mean_embedding(np.array([0.0, -2.0])), [0.0, -1.0])
    assert cosine_similarity([1.0, 0.0], [1.0, 1.0]) == pytest.approx(np.sqrt(0.5))
    assert cosine_similarity([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    with pytest.raises(DataError, match="cancel out"):
        mean_embedding(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(DataError, match="zero length"):
        mean_embedding(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(DataError, match="non-empty"):
        mean_embedding(np.zeros((0, 4)))
    with pytest.raises(DataError, match="different sizes"):
        cosine_similarity([1.0, 0.0], [1.0, 0.0, 0.0])
    with pytest.raises(DataError, match="zero-length"):
        cosine_similarity([0.0, 0.0], [1.0, 0.0])


def test_write_scores_round_trip(tmp_path):
    trials = Trials(np.array([1, 0], dtype=np.int8), np.array(["a", "a"]), np.array(["b", "c"]))
    out = write_scores(tmp_path / "out" / "scores.txt", trials, np.array([0.5, -0.25]))
    assert out.read_text() == "a b 0.500000 1\na c -0.250000 0\n"
    unlabeled = Trials(None, trials.enroll, trials.test)
    write_scores(out, unlabeled, [0.1, 0.2])
    assert out.read_text() == "a b 0.100000\na c 0.200000\n"
    assert [p.name for p in out.parent.iterdir()] == ["scores.txt"]  # no temp file left


def test_write_scores_rejects_bad_input_and_keeps_old_file(tmp_path):
    trials = Trials(None, np.array(["a", "a"]), np.array(["b", "c"]))
    out = tmp_path / "scores.txt"
    out.write_text("old\n")
    with pytest.raises(DataError, match="3 scores for 2 trials"):
        write_scores(out, trials, [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="NaN or infinite.*a c"):
        write_scores(out, trials, [0.1, np.nan])
    assert out.read_text() == "old\n"


def test_hand_built_trials_are_checked():
    with pytest.raises(DataError, match="equal length"):
        Trials(None, np.array(["a", "b"]), np.array(["c"]))
    with pytest.raises(DataError, match="3 labels for 2 trials"):
        Trials(np.array([1, 0, 1], dtype=np.int8), np.array(["a", "b"]), np.array(["c", "d"]))
    trials = Trials(None, ["a"], ["b"], path="t.txt")
    assert isinstance(trials.enroll, np.ndarray) and trials.path == Path("t.txt")


def test_add_enrollment_models_appends_mean_rows():
    ids = ["u1", "u2", "u3"]
    emb = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    all_ids, rows = add_enrollment_models(ids, emb, {"m1": ["u1", "u2"], "m2": ["u3"]})
    assert all_ids == ["u1", "u2", "u3", "m1", "m2"] and rows.dtype == np.float32
    np.testing.assert_allclose(rows[3], mean_embedding(emb[:2]))
    np.testing.assert_allclose(rows[4], emb[2] / np.linalg.norm(emb[2]), rtol=1e-6)
    assert add_enrollment_models(ids, emb, {})[0] == ids
    with pytest.raises(DataError, match="model ids must differ from utterance ids; 'u2' is both"):
        add_enrollment_models(ids, emb, {"u2": ["u1"]})
    with pytest.raises(DataError, match=r"2 enrollment utterance\(s\) have no embedding: x, y"):
        add_enrollment_models(ids, emb, {"m1": ["u1", "y"], "m2": ["x"]})


def test_row_lookup_is_the_same_for_grouped_and_scattered_ids():
    rng = np.random.default_rng(5)
    ids = np.array([f"u{i}" for i in rng.permutation(50)])
    index = RowIndex(ids)
    grouped = np.repeat(ids[:5], 40)  # runs of equal ids: looked up once per run
    scattered = rng.permutation(grouped)
    for wanted in (grouped, scattered):
        rows = index.rows(wanted)
        assert (ids[rows] == wanted).all()
    rows, found = index.find(np.array(["u1", "nope", "u1"]))
    assert found.tolist() == [True, False, True] and ids[rows[0]] == "u1"
    with pytest.raises(DataError, match=r"2 id\(s\) of t.txt have no embedding: a, b; do this"):
        index.rows(["b", "u1", "a", "a"], where="t.txt", hint="do this")
    assert not RowIndex([]).find(["a"])[1].any()


def test_unit_rows_scale_and_name_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(unit_rows(x, "rows"), [[0.6, 0.8], [0.0, 1.0]])
    assert unit_rows(x, "rows").dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(unit_rows(x, "rows", length=np.sqrt(2)), axis=1), np.sqrt(2))
    zeros = np.zeros((7, 2))
    with pytest.raises(DataError, match=r"7 rows have zero length and no direction to score \(rows 0, 1, 2, 3, 4, \.\.\.\)"):
        unit_rows(zeros, "rows")
    with pytest.raises(DataError, match=r"1 embedding rows are odd \(b\)"):
        unit_rows(np.array([[1.0], [0.0]]), "embedding rows", ["a", "b"], why="are odd")
