"""The recipes' study runner (recipes/study.py): dependent systems (fine-tuning, cleaned data), cached
results that resume, restored inference settings after extra scorings, and the results document."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from voxprint.inference.speaker_model import EmbeddedSet

from recipes import study as study_module
from recipes.study import (
    Claim,
    Study,
    Table,
    claims_table,
    mean_spread,
    run_study_cli,
    score_dev,
    train_and_evaluate,
)

FAKE_METRICS = {"eer": 0.1, "min_dcf_0.01": 0.5, "min_dcf_0.001": 0.7}


def _tiny_system(train_folder: Path, **extra) -> dict:
    return {"description": "tiny LSTM, softmax",
            "model": {"name": "lstm_dvector", "hidden_size": 16, "proj_size": 8, "num_layers": 1, "embedding_dim": 8},
            "loss": {"name": "softmax"},
            "data": {"train": str(train_folder), "valid_fraction": 0.0, "speakers_per_batch": 4,
                     "utterances_per_speaker": 2, "batches_per_epoch": 2, "crop_frames": [60, 60]},
            "optim": {"name": "adam", "lr": 0.01, "schedule": "cosine", "warmup_epochs": 0, "epochs": 1},
            **extra}


def _study(tmp_path: Path, systems: dict[str, dict]) -> Study:
    systems_dir = tmp_path / "recipe" / "systems"
    systems_dir.mkdir(parents=True)
    for name, system in systems.items():
        (systems_dir / f"{name}.yaml").write_text(yaml.safe_dump(system))
    return Study("toy", systems_dir, tmp_path / "exp", results_root=tmp_path / "results")


def test_dependent_systems_train_first_and_cached_results_resume(tmp_path, monkeypatch, tiny_train_folder):
    study = _study(tmp_path, {
        "warm": _tiny_system(tiny_train_folder),
        "tuned": _tiny_system(tiny_train_folder, study={"init_from": "warm", "clean_with": "warm"},
                              loss={"name": "am_softmax", "margin": 0.2, "scale": 30.0}),
    })
    scored: list[Path] = []

    def fake_score(model, extra_scorings):
        scored.append(model.model_dir)
        return dict(FAKE_METRICS)

    monkeypatch.setattr(study_module, "score_dev", fake_score)
    tuned = train_and_evaluate(study, "tuned", seed=3)
    assert scored == [study.run_dir("warm", 3), study.run_dir("tuned", 3)]  # the dependency went first
    assert {p.name for p in study.runs_dir.iterdir()} == {"warm_seed3.json", "tuned_seed3.json"}

    config = yaml.safe_load((study.run_dir("tuned", 3) / "config.yaml").read_text())
    assert config["init_from"] == str(study.run_dir("warm", 3))
    cleaned = study.out_root / "train_cleaned_by_warm_seed3"
    assert config["data"]["train"] == str(cleaned) and config["seed"] == 3
    kept = len((cleaned / "wav.scp").read_text().splitlines())
    assert tuned["cleaning"]["utterances"] == 80 and tuned["cleaning"]["removed"] == 80 - kept
    assert tuned["eer"] == 0.1 and tuned["epochs"] == 1 and len(tuned["train_loss"]) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study_module, "train", no_training)
    assert train_and_evaluate(study, "tuned", seed=3) == tuned
    # A fresh clone has the committed JSONs but neither the runs nor the cleaned folder.
    shutil.rmtree(study.out_root)
    assert train_and_evaluate(study, "tuned", seed=3) == tuned


def test_extra_scorings_see_their_settings_and_the_model_gets_its_own_back(dev_dir):
    class FakeModel:
        window_frames, overlap = 200, 0.5

        def with_inference(self, window_frames=None, overlap=None):
            other = FakeModel()
            other.window_frames, other.overlap = window_frames, overlap
            return other

        def embed_folder(self, folder, progress=False):
            utt2spk = dict(line.split() for line in (Path(folder) / "utt2spk").read_text().splitlines())
            ids = sorted(utt2spk)
            speakers = [utt2spk[u] for u in ids]
            rng = np.random.default_rng(self.window_frames)
            # Speaker-dependent embeddings plus noise: a window of 10**9 frames gets much less noise.
            base = {s: rng.standard_normal(16) for s in sorted(set(speakers))}
            noise = 5.0 if self.window_frames == 200 else 0.1
            return EmbeddedSet(ids, np.stack([base[s] + noise * rng.standard_normal(16) for s in speakers]))

    model = FakeModel()
    result = score_dev(model, {"full": study_module.WHOLE_UTTERANCE})
    assert result["full"]["eer"] < result["eer"]
    assert (model.window_frames, model.overlap) == (200, 0.5)


def test_study_document_tables_mean_and_spread_over_seeds(tmp_path, monkeypatch, tiny_train_folder):
    study = _study(tmp_path, {"a": _tiny_system(tiny_train_folder), "b": _tiny_system(tiny_train_folder)})
    study.runs_dir.mkdir(parents=True)
    for system, seed, eer in (("a", 0, 0.10), ("a", 1, 0.12), ("b", 0, 0.30)):
        record = {"system": system, "seed": seed, "epochs": 1, "description": f"system {system}", "eer": eer,
                  "min_dcf_0.01": 0.5, "min_dcf_0.001": 0.9, "full": {**FAKE_METRICS, "eer": eer / 2},
                  "train_minutes": 1.0, "train_loss": [2.0, 1.0], "valid_loss": [None, None]}
        (study.runs_dir / f"{system}_seed{seed}.json").write_text(json.dumps(record))
    (study.systems_dir.parent / "reading.md").write_text("## Reading\n\nHand-written.\n")
    monkeypatch.setattr(study_module, "train", lambda *a, **k: pytest.fail("cached runs were retrained"))

    assert run_study_cli(study, "Toy study", "Intro.", [Table("Only a", ("a",)), Table("Whole", None, "full")],
                         {"all": lambda s: True}, curve_key="train_loss", default_seeds=(0, 1),
                         argv=["--seeds", "0", "--out", str(tmp_path / "exp")],
                         notes=lambda results: f"{len(results)} runs", claims=[Claim("a beats b", "a", "b")]) == 0
    text = study.results_doc.read_text()
    assert text.startswith("# Toy study") and "python -m recipes.toy.run_study --seeds 0 --out" in text
    only_a = text.split("## Only a")[1].split("## Whole")[0]
    assert "| 11.00 ± 1.41 |" in only_a and "system b" not in only_a
    whole = text.split("## Whole")[1]
    assert "5.50 ± 0.71" in whole and "15.00" in whole  # the "full" scoring's EERs
    assert "3 runs" in text and text.rstrip().endswith("Hand-written.")
    findings = text.split("## Which relative findings hold here")[1]
    row = next(line for line in findings.splitlines() if line.startswith("| a beats b"))
    assert [cell.strip() for cell in row.split("|")[1:-1]] == ["a beats b", "a", "b", "11.00", "30.00", "+19.00",
                                                               "1.41", "holds"]
    assert study.results_doc.with_name("toy_curves.png").stat().st_size > 0


def test_mean_spread_formats_one_or_many_seeds():
    assert mean_spread([0.1], 100) == "10.00"
    assert mean_spread([0.1, 0.2], 100) == "15.00 ± 7.07"  # sample standard deviation
    assert mean_spread([0.5, 0.7], digits=3) == "0.600 ± 0.141"


def test_unknown_system_is_a_clear_error(tmp_path):
    study = _study(tmp_path, {})
    with pytest.raises(SystemExit, match="no system 'missing'"):
        study.raw("missing")


def _record(system: str, seed: int, eer: float, full_eer: float | None = None) -> dict:
    record = {"system": system, "seed": seed, "eer": eer}
    if full_eer is not None:
        record["full"] = {"eer": full_eer}
    return record


def test_claims_hold_only_beyond_twice_the_seed_spread():
    results = [_record("a", 0, 0.10, 0.12), _record("a", 1, 0.12, 0.14), _record("b", 0, 0.20), _record("b", 1, 0.22),
               _record("c", 0, 0.115), _record("d", 0, 0.30)]
    claims = [Claim("a beats b", "a", "b"), Claim("b beats a", "b", "a"), Claim("c beats a", "c", "a"),
              Claim("a beats d", "a", "d"), Claim("windows beat whole", "a", "a:full"),
              Claim("missing system is skipped", "a", "zzz")]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in claims_table(results, claims).splitlines()[2:]}
    assert set(rows) == {"a beats b", "b beats a", "c beats a", "a beats d", "windows beat whole"}
    spread = f"{np.std([10, 12], ddof=1):.2f}"  # both systems ran two seeds: their larger spread
    assert rows["a beats b"] == ["a", "b", "11.00", "21.00", "+10.00", spread, "holds"]
    assert rows["b beats a"][-3:] == ["-10.00", spread, "reversed"]
    # c ran one seed: the study's median spread (of a and b, both 1.41) decides; c is 0.5 pp worse, within it.
    assert rows["c beats a"][-3:] == ["-0.50", spread, "within seed spread"]
    assert rows["a beats d"][-1] == "holds"
    assert rows["windows beat whole"][2:5] == ["11.00", "13.00", "+2.00"]
    assert rows["windows beat whole"][-1] == "within seed spread"  # 2.00 < 2 x 1.41
    # Within twice the spread on the means, yet each seed of e beats each seed of f.
    noisy = [_record("e", 0, 0.10), _record("e", 1, 0.13), _record("f", 0, 0.14), _record("f", 1, 0.20)]
    assert claims_table(noisy, [Claim("e beats f", "e", "f")]).splitlines()[2].rstrip(" |").endswith(
        "within seed spread, but better in every seed")


def test_claims_without_any_repeated_seed_say_the_spread_is_unknown():
    table = claims_table([_record("a", 0, 0.1), _record("b", 0, 0.2)], [Claim("a beats b", "a", "b")])
    assert "holds (one seed, spread unknown)" in table and "| —" in table


def test_a_single_seed_system_is_judged_by_the_larger_of_its_partner_and_the_typical_spread():
    # g varies by 4 pp over its seeds; the study's typical spread (median over g and h) is smaller.
    results = [_record("g", 0, 0.12), _record("g", 1, 0.18), _record("h", 0, 0.10), _record("h", 1, 0.101),
               _record("k", 0, 0.11)]
    row = claims_table(results, [Claim("k beats g", "k", "g")]).splitlines()[2]
    assert f"{np.std([12, 18], ddof=1):.2f}" in row and row.rstrip(" |").endswith("within seed spread")


@pytest.mark.parametrize("name", ["orthogonal", "rawnet2", "netvlad"])
def test_study_readings_take_our_figures_from_the_committed_runs(name):
    """The paper-vs-ours tables of each reading hold placeholders, filled from the committed runs when the
    document is written, and the committed document is what the runner would write."""
    import re

    repo = Path(__file__).resolve().parents[1]
    reading = (repo / "recipes" / name / "reading.md").read_text()
    assert reading.count("{{eer ") >= 5
    runs = [json.loads(p.read_text()) for p in sorted((repo / "docs" / "results" / f"{name}_runs").glob("*.json"))
            if not p.stem.endswith("_paper")]
    expanded = study_module.expand_reading(reading, runs)
    assert "{{" not in expanded and "n/a" not in expanded

    def squeeze(text: str) -> str:
        return re.sub(r" +", " ", text).strip()

    assert squeeze((repo / "docs" / "results" / f"{name}.md").read_text()).endswith(squeeze(expanded))
