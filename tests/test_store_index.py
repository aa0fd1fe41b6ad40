"""Speaker search: exact search against brute force, FAISS recall against exact search on real
embeddings, the automatic choice at the measured crossover, and the store refreshing its index."""
from pathlib import Path

import numpy as np
import pytest

import voxprint
from voxprint.data import read_data_folder
from voxprint.errors import DataError, StoreError
from voxprint.backends.plda import TwoCovariancePLDA
from voxprint.identification.scoring import PLDAScoring, backend_scorer, speaker_scoring
from voxprint.store import Enrollment, SpeakerStore
from voxprint.store import index as index_module
from voxprint.store.index import EXACT_MAX_SPEAKERS, SpeakerIndex


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return voxprint.load_model("default")


@pytest.fixture(scope="module")
def real(model, dev_dir: Path) -> dict:
    """300 real dev utterances of 60 speakers embedded with the bundled model: per speaker, four
    as the gallery and one as a query."""
    folder = read_data_folder(dev_dir)
    gallery, queries = [], []
    for speaker in folder.speakers:
        utts = folder.spk2utt[speaker]
        gallery += utts[:4]
        queries.append(utts[4])
    embeddings = model.extract_embeddings([folder.wav[u] for u in gallery + queries])
    return {"gallery": gallery, "queries": queries, "speaker": folder.utt2spk,
            "G": embeddings[:len(gallery)], "Q": embeddings[len(gallery):]}


def test_exact_search_equals_brute_force():
    rng = np.random.default_rng(0)
    models = _unit(rng.normal(size=(2000, 32)))
    ids = [f"spk{i:04d}" for i in range(2000)]
    queries = rng.normal(size=(25, 32)) * 3.0  # any length: queries are normalised
    index = SpeakerIndex.build(ids, models, kind="exact", version=4)
    assert (index.kind, index.version, len(index), index.dim) == ("exact", 4, 2000, 32)
    found, scores = index.search(queries, k=7)
    brute = _unit(queries) @ models.T
    order = np.argsort(-brute, axis=1)[:, :7]
    assert found == [[ids[r] for r in row] for row in order]
    np.testing.assert_allclose(scores, np.take_along_axis(brute, order, axis=1), atol=1e-6)
    one_ids, one_scores = index.search(queries[3], k=7)  # a single (D,) query
    assert one_ids == [found[3]] and one_scores.shape == (1, 7)
    every, _ = index.search(queries[:2], k=5000)  # k beyond the gallery: everyone, best first
    assert [len(row) for row in every] == [2000, 2000]
    assert every[0][:7] == found[0]


def test_faiss_recall_against_exact_search_on_real_embeddings(real):
    ids = real["gallery"]
    exact = SpeakerIndex.build(ids, real["G"], kind="exact")
    approx = SpeakerIndex.build(ids, real["G"], kind="faiss")
    assert approx.kind == "faiss" and len(approx) == len(ids)
    truth, truth_scores = exact.search(real["Q"], k=5)
    found, scores = approx.search(real["Q"], k=5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, truth)])
    assert recall >= 0.95
    # FAISS scores the speakers it finds exactly (flat lists): the same cosines as exact search.
    same = np.array([a == b for a, b in zip(found, truth)])
    np.testing.assert_allclose(scores[same], truth_scores[same], atol=1e-5)
    # And the nearest gallery utterance is mostly the query's own speaker, as with exact search.
    own = np.mean([real["speaker"][row[0]] == real["speaker"][q] for row, q in zip(found, real["queries"])])
    assert own >= 0.8
    np.testing.assert_allclose(approx.vectors(np.array([0, 5])), _unit(real["G"][[0, 5]]), atol=1e-6)


def test_auto_switches_to_faiss_at_the_crossover():
    rng = np.random.default_rng(1)
    models = _unit(rng.normal(size=(EXACT_MAX_SPEAKERS, 8)))
    ids = [str(i) for i in range(EXACT_MAX_SPEAKERS)]
    below = SpeakerIndex.build(ids[:-1], models[:-1])
    at = SpeakerIndex.build(ids, models)
    assert (below.kind, below.nprobe) == ("exact", None)
    assert at.kind == "faiss" and at.nprobe == index_module.probe_count(index_module.list_count(len(ids)))
    assert SpeakerIndex.build(ids, models, kind="exact").kind == "exact"
    assert SpeakerIndex.build(ids[:10], models[:10], kind="faiss").kind == "faiss"


def test_auto_falls_back_to_exact_search_without_faiss(monkeypatch):
    monkeypatch.setattr(index_module, "EXACT_MAX_SPEAKERS", 10)
    monkeypatch.setattr(index_module, "_faiss_available", lambda: False)
    models = _unit(np.random.default_rng(2).normal(size=(20, 4)))
    with pytest.warns(UserWarning, match="FAISS is not installed"):
        assert SpeakerIndex.build([str(i) for i in range(20)], models).kind == "exact"


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_adding_speakers_without_a_rebuild(kind):
    rng = np.random.default_rng(3)
    models = _unit(rng.normal(size=(64, 16)))
    index = SpeakerIndex.build([f"s{i}" for i in range(60)], models[:60], kind=kind, version=1)
    for i in range(60, 64):  # one at a time, as enrollments come
        index.add([f"s{i}"], models[i:i + 1] * 5.0, version=i)
    assert len(index) == 64 and index.version == 63
    found, scores = index.search(models[60:], k=1)
    assert found == [["s60"], ["s61"], ["s62"], ["s63"]]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(StoreError, match="'s3' is already in the index"):
        index.add(["s3"], models[:1])
    with pytest.raises(DataError, match="one speaker model per id"):
        index.add(["x", "y"], models[:1])


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_changing_removing_and_renaming_speakers_in_place(kind):
    rng = np.random.default_rng(4)
    models = _unit(rng.normal(size=(41, 16)))
    ids = [f"s{i}" for i in range(40)]
    index = SpeakerIndex.build(ids, models[:40], kind=kind)
    index.rename("s7", "seven")
    assert index.search(models[7], k=1)[0] == [["seven"]] and "s7" not in index and "seven" in index
    with pytest.raises(StoreError, match="'s8' is already in the index"):
        index.rename("seven", "s8")
    if kind == "faiss":  # rows filed under lists cannot move or go: the store rebuilds instead
        for change in (lambda: index.replace("s3", models[40]), lambda: index.remove("s3")):
            with pytest.raises(StoreError, match="FAISS index cannot"):
                change()
        return
    index.replace("s3", models[40])
    index.remove("s5")
    # The same answers as an index built from the changed models.
    kept = [i for i in range(40) if i != 5]
    rows = np.stack([models[40] if i == 3 else models[i] for i in kept])
    fresh = SpeakerIndex.build(["seven" if i == 7 else f"s{i}" for i in kept], rows, kind="exact")
    queries = models[[40, 5, 7, 20]]
    assert index.search(queries, k=3)[0] == fresh.search(queries, k=3)[0] and len(index) == 39
    with pytest.raises(StoreError, match="'s5' is not in the index"):
        index.remove("s5")


def test_bad_input_is_one_line_error():
    models = np.eye(3, dtype=np.float32)
    with pytest.raises(StoreError, match="unknown speaker index kind 'hnsw'"):
        SpeakerIndex.build(["a", "b", "c"], models, kind="hnsw")
    with pytest.raises(DataError, match="one speaker model per id"):
        SpeakerIndex.build(["a", "b"], models)
    with pytest.raises(DataError, match="zero length"):
        SpeakerIndex.build(["a", "b", "c"], np.zeros((3, 3)))
    with pytest.raises(DataError, match="do not match the index's 3 dimensions"):
        SpeakerIndex.build(["a", "b", "c"], models).search(np.ones(4), k=1)
    empty = SpeakerIndex.build([], np.zeros((0, 3)))
    assert len(empty) == 0 and empty.search(np.ones(3), k=5)[0] == [[]]


def test_the_store_refreshes_its_index_after_enrollment_and_removal(tmp_path, model, real):
    store = SpeakerStore(tmp_path / "speakers.db", model)
    speakers = sorted({real["speaker"][u] for u in real["gallery"]})
    by_speaker = {s: [i for i, u in enumerate(real["gallery"]) if real["speaker"][u] == s] for s in speakers}

    def enroll(speaker: str) -> None:
        rows = by_speaker[speaker]
        store.table.add(speaker, [Enrollment(real["gallery"][i], 3.0, 1.0, real["G"][i]) for i in rows],
                        identity=model.identity)

    for speaker in speakers[:20]:
        enroll(speaker)
    query = {real["speaker"][q]: real["Q"][i] for i, q in enumerate(real["queries"])}
    first = store.identify_embedding(query[speakers[0]])
    index, _, counts = store._speaker_index()
    assert first.gallery == 20 and len(index) == 20 and index.version == store.table.version
    assert counts.tolist() == [4] * 20 and index.metric == "inner_product"  # the bundled model scores with PLDA
    assert store._speaker_index()[0] is index  # no write, no rebuild

    enroll(speakers[20])
    result = store.identify_embedding(query[speakers[20]])
    refreshed = store._speaker_index()[0]
    assert refreshed is not index and refreshed.version == store.table.version
    assert result.gallery == 21 and result.top[0].speaker == speakers[20]

    store.remove(speakers[20])
    result = store.identify_embedding(query[speakers[20]])
    assert result.gallery == 20 and speakers[20] not in [c.speaker for c in result.top]
    # The candidates come from the index but are those of exact search: the same top five as scoring every
    # speaker's exact n-utterance PLDA model directly.
    ids = [r.id for r in store.speakers()]
    enrollments = [np.stack([e.embedding for e in store.table.enrollments(i)]) for i in ids]
    direct = backend_scorer(model.backend)(enrollments, query[speakers[3]][None])[0]
    best = {ids[i] for i in np.argsort(-direct)[:5]}
    assert {c.speaker for c in store.identify_embedding(query[speakers[3]], top_k=5, candidates=5).top} == best


def test_the_stores_own_writes_update_the_index_without_a_rebuild(tmp_path, model, dev_dir, monkeypatch):
    folder = read_data_folder(dev_dir)
    first, second, third = folder.speakers[:3]

    def files(speaker: str, pick: slice) -> list:
        return [folder.wav[u] for u in folder.spk2utt[speaker][pick]]

    store = SpeakerStore(tmp_path / "speakers.db", model)
    for speaker in (first, second):
        store.enroll(speaker, files(speaker, slice(0, 2)))
    store.identify(files(first, slice(3, 4))[0])
    index, _, _ = store._speaker_index()
    builds: list[int] = []
    build = SpeakerIndex.build
    monkeypatch.setattr(SpeakerIndex, "build", classmethod(lambda cls, *a, **k: builds.append(1) or build(*a, **k)))

    store.enroll(third, files(third, slice(0, 2)))
    result = store.identify(files(third, slice(3, 4))[0])
    extended, _, counts = store._speaker_index()
    assert not builds and extended is index and index.version == store.table.version
    assert len(index) == 3 and counts.tolist() == [2, 2, 2] and result.top[0].speaker == third
    # The extended index answers as a fresh one does.
    fresh = SpeakerStore(tmp_path / "speakers.db", model).identify(files(third, slice(3, 4))[0])
    assert [(c.speaker, round(c.score, 4)) for c in fresh.top] == [(c.speaker, round(c.score, 4)) for c in result.top]

    assert len(builds) == 1  # the fresh store's own index

    # Re-enrollment (a changed speaker model), a rename and a removal update the exact index in place, and
    # it answers as a fresh one does after each.
    def same_as_fresh(test: str) -> None:
        ours = store.identify(test)
        assert store._speaker_index()[0] is index and index.version == store.table.version
        fresh = SpeakerStore(tmp_path / "speakers.db", model).identify(test)
        assert [(c.speaker, round(c.score, 4)) for c in ours.top] == [(c.speaker, round(c.score, 4)) for c in fresh.top]

    probe = files(first, slice(3, 4))[0]
    store.enroll(first, files(first, slice(2, 3)))
    assert store._speaker_index()[2].tolist() == [3, 2, 2]
    same_as_fresh(probe)
    store.rename(first, "renamed")
    same_as_fresh(probe)
    store.remove(second)
    same_as_fresh(probe)
    assert len(index) == 2 and len(builds) == 4  # only the three fresh stores built theirs
    # A write by another process leaves the index stale: it is rebuilt.
    SpeakerStore(tmp_path / "speakers.db", model).remove(third)
    result = store.identify(probe)
    assert len(builds) == 5 and result.gallery == 1 and store._speaker_index()[0] is not index


# ------------------------------------------------------------------ PLDA n-utterance models and their search

def random_plda(dim: int, seed: int) -> TwoCovariancePLDA:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    return TwoCovariancePLDA(rng.normal(size=dim), a @ a.T + 0.5 * np.eye(dim), b @ b.T + 0.5 * np.eye(dim))


def brute_force_llr(plda: TwoCovariancePLDA, enroll: np.ndarray, test: np.ndarray) -> float:
    """log p(enroll, test | one speaker) - log p(enroll | one speaker) - log p(test), each the density of the
    stacked utterances under the two-covariance model: mean repeated, between-speaker covariance in every
    block (the shared speaker), within-speaker covariance added on the diagonal blocks."""
    from scipy.stats import multivariate_normal

    def log_evidence(x: np.ndarray) -> float:
        n = len(x)
        cov = np.kron(np.ones((n, n)), plda.between_cov) + np.kron(np.eye(n), plda.within_cov)
        return float(multivariate_normal(np.tile(plda.mean, n), cov).logpdf(x.reshape(-1)))

    return log_evidence(np.vstack([enroll, test])) - log_evidence(enroll) - log_evidence(test[None])


def test_n_utterance_plda_score_equals_the_brute_force_likelihood_ratio():
    plda = random_plda(3, seed=0)
    rng = np.random.default_rng(1)
    enrollments = [rng.normal(size=(n, 3)) * 2 for n in (1, 2, 4, 7)]
    tests = rng.normal(size=(5, 3)) * 2
    means = np.stack([e.mean(axis=0) for e in enrollments])
    counts = np.array([len(e) for e in enrollments])
    closed = plda.score_models(means, counts, tests)
    brute = np.array([[brute_force_llr(plda, e, t) for e in enrollments] for t in tests])
    np.testing.assert_allclose(closed, brute, rtol=1e-9, atol=1e-9)
    # The inner-product form is the closed form, and llr() (exact mode) agrees with both.
    np.testing.assert_allclose(plda.test_vectors(tests) @ plda.speaker_vectors(means, counts).T, brute, atol=1e-9)
    np.testing.assert_allclose(plda.search_queries(tests) @ plda.search_vectors(means, counts).T, brute, atol=1e-9)
    assert plda.llr(enrollments[2], tests[0]) == pytest.approx(brute[0, 2], abs=1e-9)
    # Pooling the enrollments into one utterance (their mean) is another, different model.
    assert abs(plda.llr(enrollments[3], tests[0], enroll_mode="mean") - brute[0, 3]) > 0.05
    with pytest.raises(DataError, match="counts must be"):
        plda.speaker_vectors(means, [1, 2, 0, 4])


def test_inner_product_index_ranks_plda_models_as_direct_scoring():
    """Speakers with 1 to 7 enrollments in one index: exact search returns the direct top-k with the same
    LLRs, FAISS (maximum inner product, the lists it scans as the store sets them) finds nearly all of them
    and scores those it finds exactly."""
    plda = random_plda(16, seed=2)
    rng = np.random.default_rng(3)
    speakers = 3000
    centres = rng.multivariate_normal(plda.mean, plda.between_cov, size=speakers)
    counts = rng.integers(1, 8, speakers)
    means = np.stack([rng.multivariate_normal(c, plda.within_cov / n) for c, n in zip(centres, counts)])
    tests = rng.multivariate_normal(np.zeros(16), plda.within_cov, size=40) + centres[rng.choice(speakers, 40)]
    direct = plda.score_models(means, counts, tests)
    truth = np.argsort(-direct, axis=1)[:, :5]
    vectors, queries = plda.search_vectors(means, counts), plda.search_queries(tests)
    ids = [f"s{i}" for i in range(speakers)]

    exact = SpeakerIndex.build(ids, vectors, kind="exact", metric="inner_product")
    rows, scores = exact.search_rows(queries, 5)
    assert (rows == truth).all()
    np.testing.assert_allclose(scores, np.take_along_axis(direct, truth, axis=1), rtol=1e-5, atol=1e-3)

    approx = SpeakerIndex.build(ids, vectors, kind="faiss", metric="inner_product")
    # 33-wide rows, one more coordinate, then zeros to a width FAISS's code scanner vectorises.
    assert vectors.shape[1] == 33 and approx._faiss.d == 40
    rows, scores = approx.search_rows(queries, 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows.tolist(), truth.tolist())])
    assert recall >= 0.9, recall
    found = rows >= 0
    np.testing.assert_allclose(scores[found], np.take_along_axis(direct, np.maximum(rows, 0), axis=1)[found],
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(approx.vectors(np.array([0, 7])), vectors[[0, 7]].astype(np.float32), rtol=1e-6)
    # A new speaker added without a rebuild is found (its row may be longer than those the index was built on).
    approx.add(["new"], plda.search_vectors(centres[:1], [50]))
    assert approx.search(plda.search_queries(centres[:1]), k=1)[0] == [["new"]]


def test_the_store_index_searches_exact_plda_scores_on_real_embeddings(model, real):
    """On real dev embeddings with the bundled model: the store's search vectors rank speakers enrolled with
    one to four utterances exactly as direct n-utterance PLDA scoring, and give its uncalibrated LLRs."""
    scoring = speaker_scoring(model.backend)
    assert isinstance(scoring, PLDAScoring) and scoring.metric == "inner_product"
    speakers = sorted({real["speaker"][u] for u in real["gallery"]})
    enrollments = [real["G"][[i for i, u in enumerate(real["gallery"]) if real["speaker"][u] == s][:1 + k % 4]]
                   for k, s in enumerate(speakers)]
    means, counts = scoring.models(enrollments)
    assert sorted(set(counts.tolist())) == [1, 2, 3, 4]
    raw = scoring.raw_scores(means, counts, real["Q"])
    index = SpeakerIndex.build(speakers, scoring.search_vectors(means, counts), kind="exact", metric="inner_product")
    rows, scores = index.search_rows(scoring.query_vectors(real["Q"]), 10)
    np.testing.assert_array_equal(rows, np.argsort(-raw, axis=1)[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(raw, rows, axis=1), rtol=1e-5, atol=1e-3)
    # The scorer eval-id uses is the same: the back-end's calibration of those LLRs.
    np.testing.assert_allclose(backend_scorer(model.backend)(enrollments, real["Q"]),
                               model.backend.calibration.transform(raw), atol=1e-9)
    top1 = np.mean([speakers[r] == real["speaker"][q] for r, q in zip(rows[:, 0], real["queries"])])
    assert top1 >= 0.8
