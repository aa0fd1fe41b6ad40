"""Experiment configuration: YAML files merged over :data:`DEFAULTS`.

``${VOXPRINT_DATA}`` in any string is replaced by the shared data root (see :mod:`voxprint.paths`), so
configs and recipes never hard-code where the speech lives.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from voxprint.errors import ConfigError
from voxprint.fileio import atomic_write_text
from voxprint.paths import data_root

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    # A run folder whose final weights (model and loss head) start this run: e.g. large-margin
    # fine-tuning after a warm-up, or AM-softmax after softmax.
    "init_from": None,
    "sample_rate": 16000,
    "features": {
        "type": "fbank",  # a registered front-end: fbank, raw (waveform models), ...
        "n_mels": 40,
        "frame_length_ms": 25.0,
        "frame_shift_ms": 10.0,
        # "segment": mean over each training crop / inference window; "sliding": centred 3 s window
        # over the whole input; "none".
        "normalize": "segment",
        "sliding_window_frames": 300,
    },
    "vad": {"enabled": False, "threshold_db": -40.0},
    "model": {"name": "lstm_dvector"},
    "loss": {"name": "ge2e"},
    "data": {
        "train": None,
        "weight": 1.0,  # loss weight of data.train when data.sources adds more (MultiReader)
        # Extra sources, one batch each per step: [{train: FOLDER, weight: 0.5, speakers_per_batch: 6}, ...]
        "sources": [],
        "valid_fraction": 0.2,
        "speakers_per_batch": 16,
        "utterances_per_speaker": 4,
        "crop_frames": [140, 180],
        "batches_per_epoch": None,
        "valid_batches": 8,
        "num_workers": 0,
    },
    # On-the-fly waveform augmentation (voxprint.data.augment.AugmentConfig); empty: off.
    "augment": {},
    # Orthogonal regularisation of named linear layers (voxprint.losses.orthogonal); empty: off.
    "regularizer": {},
    # SpecAugment options (voxprint.features.specaugment.SpecAugment); empty: off.
    "specaugment": {},
    "optim": {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "clip_grad_norm": 3.0,
        # The GE2E paper trains w and b with a 0.01 gradient scale.
        "loss_lr_scale": 0.01,
        # "plateau": multiply by lr_factor when validation stalls (GE2E paper); "cosine": warm-up + cosine.
        "schedule": "plateau",
        "warmup_epochs": 0,
        "lr_patience": 2,
        "lr_factor": 0.5,
        "min_lr": 1.0e-5,
        "early_stop_patience": 8,
        # Metric that picks model.pt and drives LR halving / early stopping: valid_loss or valid_eer.
        "select_by": "valid_loss",
        "epochs": 30,
    },
    # min_seconds: shorter input is rejected (0.2 s still holds a spoken digit of the fsdd passwords).
    "inference": {"window_frames": 160, "overlap": 0.5, "min_seconds": 0.2},
}


# Sections a config may carry for the recipes' study runners (recipes/study.py); training ignores them.
STUDY_SECTIONS = {"description", "paper", "study"}


def merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; unknown top-level sections are errors."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value, f"{where}{key}.")
        else:
            result[key] = copy.deepcopy(value)
    return result


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${VOXPRINT_DATA}", str(data_root()))
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, merge it over the defaults and check it.

    Raises:
        ConfigError: the file is missing, is not a YAML mapping, or names unknown sections.
    """
    user: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(user, dict):
            raise ConfigError(f"{path} must contain a YAML mapping")
    unknown = sorted(set(user) - set(DEFAULTS) - STUDY_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; known: {sorted(DEFAULTS)}")
    config = merge(DEFAULTS, user)
    if overrides:
        config = merge(config, overrides)
    config = _expand(config)
    validate(config)
    return config


def validate(config: dict[str, Any]) -> None:
    """Check values a typo would silently break."""
    feats = config["features"]
    if feats["normalize"] not in ("segment", "sliding", "none"):
        raise ConfigError(f"features.normalize must be segment, sliding or none, not {feats['normalize']!r}")
    data = config["data"]
    low, high = data["crop_frames"]
    if not 0 < low <= high:
        raise ConfigError(f"data.crop_frames must be [low, high] with 0 < low <= high, got {data['crop_frames']}")
    if data["utterances_per_speaker"] < 2:
        raise ConfigError("data.utterances_per_speaker must be at least 2 (GE2E leaves one out of each centroid)")
    if data["speakers_per_batch"] < 2:
        raise ConfigError("data.speakers_per_batch must be at least 2")
    if config["optim"]["schedule"] not in ("plateau", "cosine"):
        raise ConfigError(f"optim.schedule must be plateau or cosine, not {config['optim']['schedule']!r}")
    if config["optim"]["select_by"] not in ("valid_loss", "valid_eer"):
        raise ConfigError(f"optim.select_by must be valid_loss or valid_eer, not {config['optim']['select_by']!r}")
    inference = config["inference"]
    if not 0 <= inference["overlap"] < 1:
        raise ConfigError(f"inference.overlap must be in [0, 1), got {inference['overlap']}")


def save_config(config: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
