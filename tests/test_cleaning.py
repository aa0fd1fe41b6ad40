"""Speaker cleaning with spherical k-means: synthetic directions, planted label errors in real speech
embedded with the bundled model, and the ``voxprint clean`` command."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_subset_folder

from voxprint.cli import main
from voxprint.clustering import cosine_silhouette, spherical_kmeans
from voxprint.data.cleaning import REPORT_NAME, clean_speakers
from voxprint.data import read_data_folder
from voxprint.errors import ConfigError, DataError

SPEAKERS, UTTERANCES, PLANTED = 6, 10, 2


def two_directions(seed: int = 0, n: tuple[int, int] = (30, 20), dim: int = 16, noise: float = 0.15):
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T  # two orthogonal unit vectors
    x = np.vstack([directions[i] + noise * rng.standard_normal((n[i], dim)) for i in range(2)])
    # Cosine clustering must ignore the rows' lengths.
    x *= rng.uniform(0.1, 10.0, size=(len(x), 1))
    return x, np.repeat([0, 1], n), directions


def test_spherical_kmeans_recovers_two_directions() -> None:
    x, truth, directions = two_directions()
    result = spherical_kmeans(x, k=2, seed=0)
    labels, centroids, objective = result
    if labels[0] != 0:  # cluster numbering is arbitrary
        labels, centroids = 1 - labels, centroids[::-1]
    assert np.array_equal(labels, truth)
    assert sorted(result.sizes.tolist()) == [20, 30]
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0)
    assert (np.sum(centroids * directions, axis=1) > 0.98).all()
    # The objective is the total cosine of the rows to their centroids.
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert objective == pytest.approx(float((unit * result.centroids[result.labels]).sum()))
    assert np.array_equal(spherical_kmeans(x, k=2, seed=3).labels, spherical_kmeans(x, k=2, seed=3).labels)
    assert cosine_silhouette(x, truth) > 0.5 > 0.1 > cosine_silhouette(x, np.arange(len(x)) % 2)
    with pytest.raises(ValueError):
        spherical_kmeans(x[:1], k=2)
    with pytest.raises(DataError, match="1 rows to cluster have zero length.*rows 1"):
        spherical_kmeans(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]), k=2)


def test_clean_speakers_synthetic_decisions_and_thresholds() -> None:
    x, _, _ = two_directions(n=(9, 2))
    ids = [f"u{i:02d}" for i in range(len(x))] + ["v0", "v1"]
    emb = np.vstack([x, x[:2]])
    utt2spk = {**{u: "spk" for u in ids[:11]}, "v0": "tiny", "v1": "tiny"}
    report = clean_speakers(ids, emb, utt2spk)
    row = {r.speaker: r for r in report.rows}
    assert row["spk"].removed == ["u09", "u10"] and row["spk"].kept == 9 and row["spk"].silhouette > 0.5
    assert row["tiny"].removed == [] and "fewer than 3" in row["tiny"].reason
    assert report.removed == {"u09", "u10"} and report.cleaned_speakers == ["spk"]
    assert clean_speakers(ids, emb, utt2spk, silhouette=0.99).removed == set()
    assert clean_speakers(ids, emb, utt2spk, majority=0.9).removed == set()  # 9/11 is not > 0.9
    with pytest.raises(ConfigError):
        clean_speakers(ids, emb, utt2spk, majority=0.4)
    tsv = report.to_tsv().splitlines()
    assert tsv[0].split("\t") == ["speaker", "utterances", "kept", "silhouette", "reason", "removed"]
    assert len(tsv) == 3


@pytest.fixture(scope="module")
def real_embeddings(train_dir: Path):
    """6 speakers x 10 real utterances of speechocean762/train, embedded with the bundled model."""
    import warnings

    import voxprint

    folder = read_data_folder(train_dir)
    speakers = folder.speakers[:SPEAKERS]
    ids = [u for spk in speakers for u in folder.spk2utt[spk][:UTTERANCES]]
    with warnings.catch_warnings():
        # The bundled model is a projected LSTM; PyTorch's note that oneDNN skips it is not actionable.
        warnings.filterwarnings("ignore", message="LSTM with projections")
        embeddings = voxprint.load_model("default").extract_embeddings([folder.wav[u] for u in ids])
    return speakers, ids, embeddings, {u: folder.utt2spk[u] for u in ids}


def test_cleaning_finds_planted_speaker_errors(real_embeddings) -> None:
    speakers, ids, embeddings, utt2spk = real_embeddings
    a, b = speakers[0], speakers[1]
    planted = [u for u in ids if utt2spk[u] == a][:PLANTED]
    noisy = {**utt2spk, **{u: b for u in planted}}
    report = clean_speakers(ids, embeddings, noisy, majority=0.6, silhouette=0.3)
    rows = {r.speaker: r for r in report.rows}
    assert [r.speaker for r in report.rows] == sorted(speakers)
    # Measured with the bundled model: both planted utterances are removed from B (split silhouette
    # 0.60) and nothing else from B; elsewhere 3 of the 58 genuine utterances go (one speaker's
    # 3-utterance subgroup, silhouette 0.60: within-speaker cosines of 0.44-0.97 leave real
    # sub-structure that a 10-utterance speaker cannot tell from a second voice).
    assert set(planted) <= set(rows[b].removed)
    assert rows[b].kept >= UTTERANCES - 1
    genuine_removed = report.removed - set(planted)
    assert len(genuine_removed) <= 0.1 * (len(ids) - PLANTED)
    # Thresholds are honoured: a strict silhouette keeps everyone.
    assert clean_speakers(ids, embeddings, noisy, silhouette=0.95).removed == set()


def test_clean_command_writes_a_readable_folder(tmp_path: Path, train_dir: Path) -> None:
    # Three speakers suffice: each speaker is clustered on its own.
    data = make_subset_folder(train_dir, tmp_path / "data", speakers=3, utterances=UTTERANCES)
    lines = (data / "utt2spk").read_text().splitlines()
    speakers = sorted({line.split()[1] for line in lines})
    a, b = speakers[0], speakers[1]
    planted = [line.split()[0] for line in lines if line.split()[1] == a][:PLANTED]
    (data / "utt2spk").write_text("".join(f"{u} {b if u in planted else s}\n" for u, s in map(str.split, lines)))

    assert main(["clean", "--data", str(data), "--out", str(tmp_path / "clean"), "--quiet"]) == 0
    cleaned = read_data_folder(tmp_path / "clean")
    assert not set(planted) & set(cleaned.spk2utt[b])
    assert len(cleaned) >= 3 * UTTERANCES - 2 * PLANTED
    assert all(cleaned.wav[u].is_file() for u in cleaned.utterances)
    report = (tmp_path / "clean" / REPORT_NAME).read_text().splitlines()
    assert len(report) == 1 + len(speakers)
    assert all(u in report[1 + speakers.index(b)] for u in planted)
    assert main(["clean", "--data", str(data), "--out", str(tmp_path / "x"), "--majority", "0.3", "--quiet"]) == 1
