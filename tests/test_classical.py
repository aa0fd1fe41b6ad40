"""GMM-UBM and i-vector: the maths on synthetic data with known answers, then small systems trained on real speech."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_subset_folder
from voxprint.classical import (
    BaumWelch,
    DiagonalGMM,
    add_deltas,
    extract_ivectors,
    map_adapt_means,
    mean_variance_normalise,
    train_total_variability,
    train_ubm,
)
from voxprint.classical.gmm import llr_matrix
from voxprint.config import load_config
from voxprint.errors import ConfigError, ModelError


def _mixture_frames(seed: int = 0, per_component: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    scales = np.array([[1.0, 0.5], [0.7, 1.2], [1.5, 0.6], [0.5, 0.5]])
    return np.concatenate([c + s * rng.standard_normal((per_component, 2)) for c, s in zip(centres, scales)])


def _naive_log_density(frames: np.ndarray, weights, means, variances) -> np.ndarray:
    """log sum_c w_c N(x; mu_c, diag var_c), one frame and one component at a time (the textbook formula)."""
    out = []
    for x in frames:
        terms = [np.log(w) - 0.5 * np.sum(np.log(2 * np.pi * v) + (x - m) ** 2 / v)
                 for w, m, v in zip(weights, means, variances)]
        out.append(np.logaddexp.reduce(terms))
    return np.array(out)


# ------------------------------------------------------------------------------------------------ GMM


def test_em_never_decreases_the_likelihood():
    steps: list[tuple[int, int, float]] = []
    gmm = train_ubm(_mixture_frames(), 4, iterations=40, split_iterations=4, variance_floor=1e-3,
                    on_iteration=lambda k, i, ll: steps.append((k, i, ll)))
    by_size: dict[int, list[float]] = {}
    for k, _, ll in steps:
        by_size.setdefault(k, []).append(ll)
    assert sorted(by_size) == [1, 2, 4]
    for k, values in by_size.items():
        assert all(b >= a - 1e-9 for a, b in zip(values, values[1:])), (k, values)
    # Four well-separated clusters: the four-component model finds them and explains them far better.
    assert by_size[4][-1] > by_size[1][-1] + 1.0
    found = sorted(map(tuple, gmm.means.round(0) + 0.0))
    assert found == [(-4.0, 0.0), (0.0, -5.0), (0.0, 5.0), (4.0, 0.0)]


def test_component_likelihoods_match_the_textbook_formula():
    rng = np.random.default_rng(1)
    gmm = DiagonalGMM(np.array([0.2, 0.5, 0.3]), rng.standard_normal((3, 4)), rng.uniform(0.3, 2.0, (3, 4)))
    frames = rng.standard_normal((25, 4))
    fast = np.logaddexp.reduce(gmm.component_log_likelihoods(frames), axis=1)
    np.testing.assert_allclose(fast, _naive_log_density(frames, gmm.weights, gmm.means, gmm.variances), rtol=1e-10)
    assert gmm.log_likelihood(frames) == pytest.approx(fast.mean())


def test_map_adaptation_bounds_relevance_zero_is_ml_and_infinity_is_the_ubm():
    rng = np.random.default_rng(2)
    ubm = DiagonalGMM(np.array([0.5, 0.5]), np.array([[-2.0, 0.0], [2.0, 0.0]]), np.ones((2, 2)))
    frames = rng.standard_normal((200, 2)) + np.array([2.5, 1.0])
    stats = ubm.statistics(frames)
    gamma = ubm.posteriors(frames)
    ml_means = (gamma.T @ frames) / gamma.sum(axis=0)[:, None]
    np.testing.assert_allclose(map_adapt_means(ubm, stats, 0.0), ml_means, rtol=1e-10)
    np.testing.assert_array_equal(map_adapt_means(ubm, stats, np.inf), ubm.means)
    # In between, each mean moves from the UBM's towards the data by N_c / (N_c + r).
    alpha = stats.zeroth / (stats.zeroth + 16.0)
    np.testing.assert_allclose(map_adapt_means(ubm, stats, 16.0),
                               alpha[:, None] * ml_means + (1 - alpha[:, None]) * ubm.means, rtol=1e-10)
    # A component no frame chose keeps the UBM's mean even at r = 0 (no division by zero).
    far = DiagonalGMM(np.array([0.5, 0.5]), np.array([[0.0, 0.0], [1e3, 1e3]]), np.ones((2, 2)))
    np.testing.assert_array_equal(map_adapt_means(far, far.statistics(frames), 0.0)[1], far.means[1])
    with pytest.raises(ConfigError, match="relevance"):
        map_adapt_means(ubm, stats, -1.0)


def test_top_c_llr_with_every_component_is_the_exact_likelihood_ratio_and_the_matrix_agrees():
    rng = np.random.default_rng(3)
    ubm = DiagonalGMM(np.full(4, 0.25), rng.standard_normal((4, 3)) * 2, rng.uniform(0.5, 1.5, (4, 3)))
    speakers = [ubm.means + rng.standard_normal((4, 3)) * 0.3 for _ in range(3)]
    tests = [rng.standard_normal((n, 3)) * 2 for n in (7, 30, 1)]
    exact = [[np.mean(_naive_log_density(t, ubm.weights, m, ubm.variances)
                      - _naive_log_density(t, ubm.weights, ubm.means, ubm.variances)) for t in tests] for m in speakers]
    np.testing.assert_allclose([[ubm.llr_top_c(m, t, top_c=4) for t in tests] for m in speakers], exact, rtol=1e-9)
    np.testing.assert_allclose(llr_matrix(ubm, speakers, tests, top_c=4), exact, rtol=1e-9)
    # With fewer components the matrix still equals the pairwise scorer (same selection per frame).
    np.testing.assert_allclose(llr_matrix(ubm, speakers, tests, top_c=2),
                               [[ubm.llr_top_c(m, t, top_c=2) for t in tests] for m in speakers], rtol=1e-9)


def test_top_c_scores_of_a_large_mixture_take_only_each_frames_top_components():
    # With C <= K / 8 the adapted scores are C dot products per frame: the textbook sum over those components.
    rng = np.random.default_rng(4)
    ubm = DiagonalGMM(np.full(64, 1 / 64), rng.standard_normal((64, 3)) * 2, rng.uniform(0.5, 1.5, (64, 3)))
    adapted = ubm.means + rng.standard_normal((64, 3)) * 0.3
    frames = rng.standard_normal((20, 3)) * 2
    index, scores = ubm.top_components(frames, 5)
    expected = [_naive_log_density(x[None], ubm.weights[i], adapted[i], ubm.variances[i])[0]
                for x, i in zip(frames, index)]
    np.testing.assert_allclose(ubm.adapted_top_c_scores(adapted, frames, index, scores), expected, rtol=1e-9)


def test_deltas_and_normalisation():
    rng = np.random.default_rng(4)
    cepstra = rng.standard_normal((40, 3))
    with_deltas = add_deltas(cepstra, order=2)
    assert with_deltas.shape == (40, 9)
    t = 20  # away from the edges: Kaldi's window-2 regression
    expected = (2 * (cepstra[t + 2] - cepstra[t - 2]) + (cepstra[t + 1] - cepstra[t - 1])) / 10
    np.testing.assert_allclose(with_deltas[t, 3:6], expected)
    normalised = mean_variance_normalise(with_deltas)
    np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(normalised.std(axis=0), 1, atol=1e-9)


# ---------------------------------------------------------------------------------------------- i-vector


def _synthetic_statistics(seed: int = 5, recordings: int = 600, k: int = 8, d: int = 3, rank: int = 2):
    """Statistics drawn from the i-vector model itself: F_c = N_c T_c w + sqrt(N_c) noise, w ~ N(0, I)."""
    rng = np.random.default_rng(seed)
    true = rng.standard_normal((k, d, rank))
    w = rng.standard_normal((recordings, rank))
    zeroth = rng.uniform(5, 60, (recordings, k))
    first = zeroth[:, :, None] * np.einsum("kdr,nr->nkd", true, w) \
        + np.sqrt(zeroth)[:, :, None] * rng.standard_normal((recordings, k, d))
    return BaumWelch(zeroth, first), true, w


def test_total_variability_em_recovers_a_known_subspace():
    stats, true, w = _synthetic_statistics()
    learned = train_total_variability(stats, rank=2, iterations=15)
    a = np.linalg.qr(true.reshape(-1, 2))[0]
    b = np.linalg.qr(learned.reshape(-1, 2))[0]
    cosines = np.linalg.svd(a.T @ b, compute_uv=False)  # cosines of the principal angles
    assert cosines.min() > 0.99
    # And the i-vectors it extracts track the true factors (up to a rotation): a linear fit explains them.
    ivectors = extract_ivectors(stats, learned)
    fit = np.linalg.lstsq(ivectors, w, rcond=None)[0]
    assert np.corrcoef((ivectors @ fit).ravel(), w.ravel())[0, 1] > 0.97


@pytest.mark.parametrize("minimum_divergence", [False, True])
def test_total_variability_em_never_decreases_the_likelihood(minimum_divergence):
    stats, _, _ = _synthetic_statistics(recordings=300, k=6)
    stats = BaumWelch(stats.zeroth / 10, stats.first / np.sqrt(10))  # few frames: the posterior covariance matters
    steps: list[float] = []
    train_total_variability(stats, rank=2, iterations=12, minimum_divergence=minimum_divergence,
                            on_iteration=lambda i, ll: steps.append(ll))
    assert all(b >= a - 1e-9 for a, b in zip(steps, steps[1:])), steps
    assert steps[-1] > steps[0] + 1.0


def test_ivector_extraction_is_the_closed_form_posterior_mean():
    rng = np.random.default_rng(6)
    k, d, rank = 4, 3, 2
    ubm = DiagonalGMM(np.full(k, 1 / k), rng.standard_normal((k, d)), rng.uniform(0.5, 2.0, (k, d)))
    whitened_t = rng.standard_normal((k, d, rank))
    recordings = [rng.standard_normal((n, d)) for n in (20, 55, 3)]
    fast = extract_ivectors(BaumWelch.of(ubm, recordings), whitened_t)
    # Dehak et al. (2011), eq. 7-8 in the UBM's own (unwhitened) coordinates:
    # w = (I + T' S^-1 N T)^-1 T' S^-1 F~, with T = sigma * T_whitened and F~ = F - N mu.
    big_t = (np.sqrt(ubm.variances)[:, :, None] * whitened_t).reshape(k * d, rank)
    precision = 1 / ubm.variances.reshape(-1)
    for frames, got in zip(recordings, fast):
        stats = ubm.statistics(frames)
        n = np.repeat(stats.zeroth, d)
        centred = (stats.first - stats.zeroth[:, None] * ubm.means).reshape(-1)
        posterior_precision = np.eye(rank) + big_t.T @ (precision[:, None] * n[:, None] * big_t)
        expected = np.linalg.solve(posterior_precision, big_t.T @ (precision * centred))
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)


def test_bad_sizes_are_refused_in_words():
    with pytest.raises(ConfigError, match="power of two"):
        train_ubm(_mixture_frames(), 3)
    stats, _, _ = _synthetic_statistics(recordings=4)
    with pytest.raises(ConfigError, match="rank"):
        train_total_variability(stats, rank=0)
    from voxprint.models import build_embedding_model

    with pytest.raises(ConfigError, match="power of two"):
        build_embedding_model(load_config(None, {"model": {"name": "ivector", "num_components": 100}}))


# -------------------------------------------------------------------------- systems trained on real speech


def _classical_config(train: Path, name: str, **model) -> dict:
    return load_config(None, {
        "features": {"type": "mfcc", "n_mels": 30, "n_mfcc": 13, "normalize": "none"},
        "vad": {"enabled": True, "threshold_db": -40.0},
        "model": {"name": name, "num_components": 16, **model},
        "data": {"train": str(train)},
        "em": {"ubm_iterations": 3, "split_iterations": 1, "ubm_max_frames": 20000, "tv_iterations": 3},
        "inference": {"window_frames": 100000, "overlap": 0.0, "min_seconds": 0.2},
    })


@pytest.fixture(scope="module")
def classical_runs(tmp_path_factory, tiny_train_folder):
    from voxprint.training import train

    root = tmp_path_factory.mktemp("classical")
    runs = {}
    for name, options in (("ivector", {"rank": 10}), ("gmm_ubm", {"top_c": 5})):
        runs[name] = root / name
        train(_classical_config(tiny_train_folder, name, **options), runs[name], progress=False)
    return runs


@pytest.fixture(scope="module")
def dev_six(tmp_path_factory, dev_dir) -> Path:
    return make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev6"), speakers=6, utterances=3, with_trials=True)


def test_training_writes_a_run_folder_with_em_history(classical_runs):
    for name, run in classical_runs.items():
        history = json.loads((run / "history.json").read_text())
        assert history[0]["stage"] == "features" and history[0]["frames"] > 1000
        ubm = [r["figure"] for r in history if r.get("stage") == "ubm 16"]
        assert len(ubm) == 3 and ubm == sorted(ubm), name  # EM on real frames: the likelihood rises
        assert all(r["seconds"] >= 0 for r in history)
    stages = {r["stage"] for r in json.loads((classical_runs["ivector"] / "history.json").read_text())}
    assert "total variability" in stages


def test_a_trained_run_refuses_to_be_trained_over_or_resumed(classical_runs, tiny_train_folder):
    from voxprint.training import train

    config = _classical_config(tiny_train_folder, "ivector", rank=10)
    with pytest.raises(ConfigError, match="already holds"):
        train(config, classical_runs["ivector"], progress=False)
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(config, classical_runs["ivector"], resume=True, progress=False)


def test_ivector_run_embeds_and_separates_real_speakers(classical_runs, dev_six):
    from voxprint.data import read_data_folder
    from voxprint.inference import load_model

    model = load_model(classical_runs["ivector"])
    assert model.embedding_dim == 10 and type(model).__name__ == "SpeakerModel"
    folder = read_data_folder(dev_six)
    embedded = model.embed_folder(dev_six, progress=False)
    speakers = np.array([folder.utt2spk[u] for u in embedded.ids])
    cosine = embedded.embeddings @ embedded.embeddings.T
    same = speakers[:, None] == speakers[None, :]
    off_diagonal = ~np.eye(len(speakers), dtype=bool)
    # Untrained on these speakers, a 16-Gaussian i-vector still scores same-speaker pairs higher.
    assert cosine[same & off_diagonal].mean() > cosine[~same].mean() + 0.1


def test_gmm_ubm_verifies_by_frame_llr_and_eval_agrees_with_verify(capsys, classical_runs, dev_six):
    from voxprint.cli import main
    from voxprint.data import read_data_folder
    from voxprint.inference import load_model

    model = load_model(classical_runs["gmm_ubm"])
    assert model.backend.name == "gmm-llr-top5" and "log-likelihood ratio" in model.backend.scale
    scores_file = dev_six / "gmm_scores.txt"
    assert main(["eval", "--data", str(dev_six), "--model", str(classical_runs["gmm_ubm"]), "--json", "--quiet",
                 "--scores", str(scores_file)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backend"] == "gmm-llr-top5" and result["trials"] == 153
    assert result["eer"] < 0.35  # well above chance on real speech, even with a 16-Gaussian UBM
    folder = read_data_folder(dev_six)
    enroll, test, score = scores_file.read_text().split("\n")[0].split()[:3]
    direct = model.verification_score([folder.wav[enroll]], folder.wav[test])
    assert direct == pytest.approx(float(score), abs=2e-6)
    # Two enrollment recordings pool their statistics: different from either alone.
    other = folder.spk2utt[folder.utt2spk[enroll]][1]
    pooled = model.verification_score([folder.wav[enroll], folder.wav[other]], folder.wav[test])
    assert pooled != pytest.approx(direct) and np.isfinite(pooled)


def test_gmm_ubm_says_what_does_not_apply(capsys, classical_runs, dev_six, tmp_path):
    from voxprint.cli import main
    from voxprint.export import export_model
    from voxprint.inference import load_model
    from voxprint.store import SpeakerStore

    run = str(classical_runs["gmm_ubm"])
    for argv in (["eval", "--data", str(dev_six), "--model", run, "--backend", "plda"],
                 ["fit-backend", "--model", run],
                 ["identify", "--store", str(tmp_path / "s.db"), str(next(dev_six.glob("wav.scp"))), "--model", run]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("frames" in err or "log-likelihood" in err), err
    with pytest.raises(ModelError, match="store"):
        SpeakerStore(tmp_path / "t.db", load_model(run))
    with pytest.raises(ModelError, match="numpy"):
        export_model(run, tmp_path / "onnx")


def test_ivector_model_file_is_hashed_like_any_weights(classical_runs, tmp_path):
    import shutil

    from voxprint.inference import load_model

    run = tmp_path / "copy"
    shutil.copytree(classical_runs["ivector"], run)
    state = torch.load(run / "model.pt", weights_only=True)
    state["state_dict"]["encoder.total_variability"][0, 0, 0] += 1.0
    torch.save(state, run / "model.pt")
    with pytest.raises(ModelError, match="corrupt"):
        load_model(run)


def test_ivector_run_enrolls_and_identifies_through_the_store(capsys, classical_runs, dev_six, tmp_path):
    from voxprint.cli import main
    from voxprint.data import read_data_folder
    from voxprint.inference import load_model
    from voxprint.store import SpeakerStore

    # The threshold the open-set decision needs, stored the way a user stores it.
    assert main(["eval", "--data", str(dev_six), "--model", str(classical_runs["ivector"]), "--write-threshold",
                 "--quiet"]) == 0
    capsys.readouterr()
    model = load_model(classical_runs["ivector"])
    folder = read_data_folder(dev_six)
    store = SpeakerStore(tmp_path / "speakers.db", model)
    for speaker in folder.speakers[:3]:
        store.enroll(speaker, [folder.wav[u] for u in folder.spk2utt[speaker][:2]])
    result = store.identify(folder.wav[folder.spk2utt[folder.speakers[0]][2]], top_k=3)
    assert [candidate.speaker for candidate in result.top][:1] == [folder.speakers[0]]
    assert sorted(candidate.speaker for candidate in result.top) == sorted(folder.speakers[:3])


def test_gmm_ubm_verify_cli_pools_enrollments_and_states_the_scale(capsys, classical_runs, dev_six):
    from voxprint.cli import main
    from voxprint.data import read_data_folder

    folder = read_data_folder(dev_six)
    same, other = folder.spk2utt[folder.speakers[0]], folder.spk2utt[folder.speakers[1]]
    argv = ["verify", "--model", str(classical_runs["gmm_ubm"]), "--enroll", str(folder.wav[same[0]]), "--enroll",
            str(folder.wav[same[1]]), "--threshold", "0", "--json"]
    assert main([*argv, "--test", str(folder.wav[same[2]])]) == 0
    accepted = json.loads(capsys.readouterr().out)
    main([*argv, "--test", str(folder.wav[other[0]])])
    rejected = json.loads(capsys.readouterr().out)
    assert "log-likelihood ratio" in accepted["scale"] and accepted["score"] > rejected["score"]


def test_train_cli_reports_em_steps(capsys, tmp_path, tiny_train_folder):
    import yaml

    from voxprint.cli import main

    config = tmp_path / "gmm.yaml"
    config.write_text(yaml.safe_dump({
        "features": {"type": "mfcc", "n_mels": 30, "n_mfcc": 13, "normalize": "none"},
        "vad": {"enabled": True}, "model": {"name": "gmm_ubm", "num_components": 8},
        "data": {"train": str(tiny_train_folder)},
        "em": {"ubm_iterations": 2, "split_iterations": 1, "ubm_max_frames": 5000},
        "inference": {"window_frames": 100000, "overlap": 0.0}}))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trained 5 EM steps; UBM log-likelihood per frame (last step) -"), out  # 1, 2, 4: 1 step each; 8: 2
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 1
    assert "already holds" in capsys.readouterr().err
    assert main(["train", str(config), "--out", str(tmp_path / "other"), "--device", "cuda"]) == 1
    assert "EM in numpy on the CPU" in capsys.readouterr().err and not (tmp_path / "other" / "model.pt").exists()
