"""The config schema: every shipped YAML loads and builds, and every kind of typo is named with a fix."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from voxprint.config import DEFAULTS, check_config, load_config, merge
from voxprint.errors import ConfigError
from voxprint.models import build_embedding_model
from voxprint.training.trainer import TrainingStep, build_loss, build_regularizer, build_spec_augment

REPO = Path(__file__).resolve().parents[1]
YAMLS = sorted(p for folder in ("configs", "recipes") for pattern in ("*.yaml", "*.yml")
               for p in (REPO / folder).rglob(pattern))
RAWNET2_SMALL = REPO / "configs" / "rawnet2_small.yaml"


def variants() -> list:
    """Every YAML as written and, for a study system with a ``paper:`` section, as ``--paper`` loads it."""
    cases = []
    for path in YAMLS:
        name = str(path.relative_to(REPO))
        cases.append(pytest.param(path, None, id=name))
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if "paper" in raw:
            # recipes/study.py merges the paper: section as overrides.
            cases.append(pytest.param(path, raw["paper"], id=f"{name}+paper"))
    return cases


def test_every_config_folder_has_yamls():
    assert any(p.is_relative_to(REPO / "configs") for p in YAMLS)
    assert any(p.is_relative_to(REPO / "recipes") for p in YAMLS)


@pytest.mark.parametrize("path, overrides", variants())
def test_every_shipped_config_loads_builds_and_runs(path, overrides):
    torch.set_num_threads(1)
    config = load_config(path, overrides)
    model = build_embedding_model(config)
    n_speakers, per_speaker = 2, 2
    loss = build_loss(config, model.encoder.embedding_dim, num_classes=n_speakers)
    step = TrainingStep(model, loss, build_spec_augment(config["specaugment"]))
    # 1 s of noise per utterance: two speakers of two utterances, the smallest GE2E batch.
    waves = 0.1 * torch.randn(n_speakers * per_speaker, config["sample_rate"], generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n_speakers).repeat_interleave(per_speaker)
    with torch.no_grad():
        value = step(waves, labels, n_speakers)
        regularizer = build_regularizer(config["regularizer"], config["optim"]["epochs"])
        penalty = regularizer(step, epoch=0) if regularizer is not None else torch.zeros(())
        embeddings = model.eval()(waves)
    assert value.dim() == 0 and torch.isfinite(value) and torch.isfinite(penalty)
    assert embeddings.shape == (len(waves), model.encoder.embedding_dim)
    assert torch.isfinite(embeddings).all()


def raises_config_error(*args) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args)
    return str(info.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("overrides, key, section, suggestion", [
    ({"features": {"n_mel": 80}}, "n_mel", "features", "n_mels"),
    ({"features": {"normalise": "none"}}, "normalise", "features", "normalize"),
    ({"data": {"speakers_per_bach": 8}}, "speakers_per_bach", "data", "speakers_per_batch"),
    ({"optim": {"warmup_epoch": 3}}, "warmup_epoch", "optim", "warmup_epochs"),
    ({"inference": {"window_frame": 200}}, "window_frame", "inference", "window_frames"),
    ({"vad": {"threshold": -30}}, "threshold", "vad", "threshold_db"),
    ({"model": {"name": "lstm_dvector", "hiden_size": 64}}, "hiden_size", "model", "hidden_size"),
    ({"model": {"name": "resnet18", "base_widht": 8}}, "base_widht", "model", "base_width"),
    ({"loss": {"name": "aam_softmax", "margn": 0.3}}, "margn", "loss", "margin"),
    ({"augment": {"noise_probability": 0.5}}, "noise_probability", "augment", "noise_prob"),
    ({"specaugment": {"time_mask": 2}}, "time_mask", "specaugment", "time_masks"),
    ({"regularizer": {"kind": "so", "layer_name": ["encoder.embedding"]}}, "layer_name", "regularizer",
     "layer_names"),
    ({"data": {"sources": [{"train": "x", "wieght": 0.5}]}}, "wieght", "data.sources[0]", "weight"),
])
def test_typos_name_the_key_the_section_and_the_fix(overrides, key, section, suggestion):
    message = raises_config_error(None, overrides)
    assert f"unknown key {key!r} in section {section!r}; did you mean {suggestion!r}?" in message


def test_typo_in_a_yaml_file(tmp_path):
    message = raises_config_error(write(tmp_path, "features: {type: fbank, n_mel: 80}\n"))
    assert message == "config: unknown key 'n_mel' in section 'features'; did you mean 'n_mels'?"


def test_unknown_sections(tmp_path):
    message = raises_config_error(write(tmp_path, "modle: {name: lstm_dvector}\n"))
    assert "'modle'" in message and "did you mean 'model'?" in message
    # The study runners' sections are allowed, and their keys checked.
    assert load_config(write(tmp_path, "description: x\nstudy: {init_from: a}\npaper: {optim: {epochs: 2}}\n"))
    message = raises_config_error(write(tmp_path, "study: {init_form: a}\n"))
    assert "unknown key 'init_form' in section 'study'; did you mean 'init_from'?" in message


def test_paper_section_is_checked_as_merged_by_the_study_runner(tmp_path):
    message = raises_config_error(write(tmp_path, "paper: {model: {hidden_size: 64, proj_sise: 32}}\n"))
    assert "paper:" in message and "unknown key 'proj_sise' in section 'model'; did you mean 'proj_size'?" in message


def test_option_of_another_front_end_says_so():
    message = raises_config_error(None, {"features": {"type": "raw", "n_mels": 40}})
    assert "'n_mels' in section 'features' is an option of feature front-end 'fbank', 'mfcc'" in message
    assert "features.type is 'raw'" in message
    message = raises_config_error(None, {"features": {"type": "fbank", "n_mfcc": 20}})
    assert "'n_mfcc' in section 'features' is an option of feature front-end 'mfcc'" in message
    # The defaults hold fbank's options whatever the front-end: a merged raw config is valid.
    config = load_config(RAWNET2_SMALL)
    assert config["features"]["n_mels"] == DEFAULTS["features"]["n_mels"]
    check_config(config)


def test_option_of_another_model_or_loss_says_so():
    message = raises_config_error(None, {"model": {"name": "lstm_dvector", "channels": 256}})
    assert "'channels' in section 'model' is an option of model 'ecapa_tdnn'" in message
    assert "model.name is 'lstm_dvector'" in message
    message = raises_config_error(None, {"loss": {"name": "ge2e", "margin": 0.2}})
    assert "'margin' in section 'loss' is an option of loss 'aam_softmax'" in message


@pytest.mark.parametrize("overrides, key", [
    ({"model": {"name": "lstm_dvector", "input_dim": 40}}, "input_dim"),
    ({"loss": {"name": "softmax", "num_classes": 10}}, "num_classes"),
    ({"loss": {"name": "aam_softmax", "embedding_dim": 10}}, "embedding_dim"),
    ({"features": {"sample_rate": 8000}}, "sample_rate"),
])
def test_options_the_code_fills_in_are_rejected(overrides, key):
    message = raises_config_error(None, overrides)
    assert f"key {key!r} in section {next(iter(overrides))!r} is set by voxprint" in message


def test_unknown_names_suggest_the_closest():
    assert "did you mean 'lstm_dvector'?" in raises_config_error(None, {"model": {"name": "lstm_dvectr"}})
    assert "did you mean 'aam_softmax'?" in raises_config_error(None, {"loss": {"name": "aam_sofmax"}})
    assert "did you mean 'mfcc'?" in raises_config_error(None, {"features": {"type": "mfc"}})
    assert "did you mean 'sgd'?" in raises_config_error(None, {"optim": {"name": "sdg"}})


def test_regularizer_key_of_the_other_schedule_says_so():
    message = raises_config_error(None, {"regularizer": {"kind": "so", "schedule": "decreasing", "value": 0.1}})
    assert "'value' in section 'regularizer' is an option of a constant schedule" in message


def test_values_of_built_sections_are_checked_at_load():
    assert "probability" in raises_config_error(None, {"augment": {"reverb_prob": 1.5}})
    assert "non-negative integer" in raises_config_error(None, {"specaugment": {"time_masks": -1}})
    assert "kind must be one of" in raises_config_error(None, {"regularizer": {"kind": "l3"}})


def test_amsgrad_is_an_optim_option():
    assert load_config(None, {"optim": {"name": "adam", "amsgrad": True}})["optim"]["amsgrad"] is True


def test_bad_model_value_is_one_line_naming_the_section_and_option():
    config = load_config(RAWNET2_SMALL, {"model": {"fms": "bogus"}})
    with pytest.raises(ConfigError) as info:
        build_embedding_model(config)
    message = str(info.value)
    assert "\n" not in message
    assert "section 'model'" in message and "option 'fms'" in message and "'bogus'" in message


def test_bad_loss_value_is_a_config_error():
    config = load_config(None, {"loss": {"name": "ge2e", "variant": "cosine"}})
    with pytest.raises(ConfigError, match="section 'loss', option 'variant'"):
        build_loss(config, 16, 4)


def test_check_config_checks_a_merged_config():
    config = merge(DEFAULTS, {"optim": {"lr_patiance": 2}})
    with pytest.raises(ConfigError, match="did you mean 'lr_patience'"):
        check_config(config)
    check_config(load_config(None))
