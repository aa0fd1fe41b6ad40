"""Experiment configuration: YAML files merged over :data:`DEFAULTS`, checked against one schema.

``${VOXPRINT_DATA}`` in any string is replaced by the shared data root (see :mod:`voxprint.paths`), so
configs and recipes never hard-code where the speech lives.

Every section rejects keys it does not know, naming the closest valid one, so a typo fails at load
instead of silently training with a default. The valid keys come from where the options are used:
:data:`DEFAULTS` for the plain sections, the constructor parameters of the registered front-end,
model and loss that the config selects (:mod:`voxprint.registry`), and the section's own builder for
``augment``, ``specaugment`` and ``regularizer``. All of them report unknown keys through
:func:`check_keys`.
"""
from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from voxprint.errors import ConfigError
from voxprint.fileio import atomic_write_text
from voxprint.paths import data_root

if TYPE_CHECKING:
    from voxprint.registry import Registry

__all__ = [
    "DEFAULTS",
    "FEATURE_KEYS",
    "SOURCE_KEYS",
    "STUDY_KEYS",
    "STUDY_SECTIONS",
    "check_config",
    "check_keys",
    "closest",
    "load_config",
    "merge",
    "save_config",
]

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
    # EM training of the statistical models (model.name gmm_ubm, ivector): iterations of each stage,
    # the frames the UBM is trained on (a random subset beyond this; it converges long before), the
    # variance floor as a fraction of the data's variance per dimension.
    "em": {"ubm_iterations": 8, "split_iterations": 3, "ubm_max_frames": 400_000, "variance_floor": 0.01,
           "tv_iterations": 6},
}


# Sections a config may carry for the recipes' study runners (recipes/study.py); training ignores them.
STUDY_SECTIONS = {"description", "paper", "study"}

#: Keys of a system's ``study:`` section, read by recipes/study.py.
STUDY_KEYS = ("init_from", "clean_with")

#: Keys of ``features`` that every front-end shares (read by the embedding model); the other valid
#: keys are the constructor parameters of the front-end that ``features.type`` selects.
FEATURE_KEYS = ("type", "normalize", "sliding_window_frames")

#: Keys of one ``data.sources`` entry: its folder, loss weight and the batch settings it overrides.
SOURCE_KEYS = ("train", "weight", "speakers_per_batch", "utterances_per_speaker", "crop_frames")

# optim keys without a default: adam's and adamw's AMSGrad switch (off unless given).
_EXTRA_OPTIM_KEYS = ("amsgrad",)

# Sections whose keys are exactly those of DEFAULTS (plus the extras above).
_PLAIN_SECTIONS = {
    "data": tuple(DEFAULTS["data"]),
    "optim": tuple(DEFAULTS["optim"]) + _EXTRA_OPTIM_KEYS,
    "vad": tuple(DEFAULTS["vad"]),
    "inference": tuple(DEFAULTS["inference"]),
    "em": tuple(DEFAULTS["em"]),
}


def closest(word: Any, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``word`` (difflib ratio at least 0.6), or None.

    Args:
        word: What was written (converted to ``str``).
        candidates: The valid spellings.

    Returns:
        The best match, or None when nothing is close.

    Example:
        >>> closest("warmup_epoch", ["warmup_epochs", "epochs", "lr"])
        'warmup_epochs'
        >>> closest("xyz", ["lr"]) is None
        True
    """
    matches = difflib.get_close_matches(str(word), sorted(candidates), n=1)
    return matches[0] if matches else None


def check_keys(given: Iterable[Any], valid: Collection[str], section: str | None,
               reasons: Mapping[str, str] | None = None) -> None:
    """Raise on the first key of ``given`` that is not in ``valid``: the one unknown-key check.

    Args:
        given: The keys written (a mapping is iterated over its keys).
        valid: The keys the section takes.
        section: Section name for the message (e.g. ``"features"`` or ``"data.sources[0]"``); None
            for the top level, whose keys are sections.
        reasons: Why some invalid keys are wrong, for keys valid elsewhere (e.g. ``{"n_mfcc": "is an
            option of ..."}``); used instead of a spelling suggestion.

    Raises:
        ConfigError: Naming the key, the section and the closest valid key (or the valid keys when
            none is close).

    Example:
        >>> check_keys({"n_mels": 80, "type": "fbank"}, ["n_mels", "type"], "features")
        >>> check_keys({"n_mel": 80}, ["n_mels", "type"], "features")
        Traceback (most recent call last):
        ...
        voxprint.errors.ConfigError: config: unknown key 'n_mel' in section 'features'; did you mean 'n_mels'?
    """
    reasons = reasons or {}
    for key in given:
        if key in valid:
            continue
        where = "config section" if section is None else "key"
        place = "" if section is None else f" in section {section!r}"
        if key in reasons:
            raise ConfigError(f"config: {where} {key!r}{place} {reasons[key]}")
        match = closest(key, valid)
        hint = f"did you mean {match!r}?" if match else f"valid: {', '.join(sorted(valid)) or 'none'}"
        raise ConfigError(f"config: unknown {where} {key!r}{place}; {hint}")


def merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge, anything else replaces).

    Example:
        >>> merge({"optim": {"lr": 0.1, "epochs": 3}}, {"optim": {"lr": 0.2}})
        {'optim': {'lr': 0.2, 'epochs': 3}}
    """
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
    """Read a YAML config, merge it over the defaults and check it (see :func:`check_config`).

    Args:
        path: The YAML file; None starts from :data:`DEFAULTS` alone.
        overrides: Sections merged over the file (e.g. command-line options or a study's ``paper:``).

    Returns:
        The full config.

    Raises:
        ConfigError: The file is missing or is not a YAML mapping, or the config fails
            :func:`check_config`.

    Example:
        >>> load_config(None, {"optim": {"lr": 0.1}})["optim"]["lr"]
        0.1
        >>> load_config(None, {"optim": {"warmup_epoch": 3}})
        Traceback (most recent call last):
        ...
        voxprint.errors.ConfigError: config: unknown key 'warmup_epoch' in section 'optim'; did you mean 'warmup_epochs'?
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
    config = merge(DEFAULTS, user)
    if overrides:
        config = merge(config, overrides)
    config = _expand(config)
    # Only what the user wrote is checked key by key: the defaults carry fbank's options whatever
    # features.type is.
    check_config(config, merge(user, overrides or {}))
    return config


def check_config(config: dict[str, Any], given: Mapping[str, Any] | None = None) -> None:
    """Check a full config: every key against the schema, and the values a typo would silently break.

    The keys of a section that selects a registered class (``features.type``, ``model.name``,
    ``loss.name``) are the constructor parameters of that class, less those the code fills in
    (e.g. a model's ``input_dim``); ``augment``, ``specaugment`` and ``regularizer`` are checked by
    building them. A ``paper:`` section (a study's paper-size overrides) must give a valid config too.

    Args:
        config: :data:`DEFAULTS` merged with the user's config.
        given: The part the user wrote, before the defaults: its keys are checked strictly. None
            checks the keys of ``config``, where ``features`` may also hold the defaults' keys.

    Raises:
        ConfigError: An unknown section or key (with the closest valid name), an option of another
            front-end, model or loss than the selected one, or a bad value.
    """
    written = config if given is None else given
    check_keys(written, set(DEFAULTS) | STUDY_SECTIONS, None)
    for name, default in DEFAULTS.items():
        if isinstance(default, dict) and not isinstance(config.get(name), Mapping):
            raise ConfigError(f"config: section {name!r} must be a mapping of options, got {config.get(name)!r}")
    _check_registered_sections(config, written, defaults_allowed=given is None)
    for name, valid in _PLAIN_SECTIONS.items():
        check_keys(written.get(name) or {}, valid, name)
    for index, source in enumerate(config["data"]["sources"] or []):
        if not isinstance(source, Mapping):
            raise ConfigError(f"config: data.sources[{index}] must be a mapping like "
                              f"{{train: FOLDER, weight: 0.5}}, got {source!r}")
        check_keys(source, SOURCE_KEYS, f"data.sources[{index}]")
    study = config.get("study")
    if study is not None:
        if not isinstance(study, Mapping):
            raise ConfigError(f"config: section 'study' must be a mapping like {{init_from: SYSTEM}}, got {study!r}")
        check_keys(study, STUDY_KEYS, "study")
    _check_values(config)
    _check_built_sections(config)
    _check_paper(config, given)


def _check_registered_sections(config: dict[str, Any], written: Mapping[str, Any], defaults_allowed: bool) -> None:
    """Keys of ``features``, ``model`` and ``loss``: those of the front-end, model or loss they select."""
    # Importing registers the front-ends, models and losses; done here because they import torch and
    # this module is imported by light code paths too.
    import voxprint.features  # noqa: F401
    import voxprint.losses  # noqa: F401
    import voxprint.models  # noqa: F401
    from voxprint.registry import FRONTENDS, LOSSES, MODELS

    feature_keys = FEATURE_KEYS + (tuple(DEFAULTS["features"]) if defaults_allowed else ())
    for section, selector, registry, shared in (("features", "type", FRONTENDS, feature_keys),
                                                ("model", "name", MODELS, ("name",)),
                                                ("loss", "name", LOSSES, ("name",))):
        options = written.get(section)
        if options is None:
            continue
        selected = config[section].get(selector)
        valid = registry.options(selected)  # also rejects an unknown name
        if valid is None:
            continue  # a constructor taking **options checks them itself when built
        valid = set(shared) | set(valid)
        check_keys(options, valid, section, _reasons(registry, selected, valid, f"{section}.{selector}"))


def _reasons(registry: Registry, selected: str, valid: Collection[str], selector: str) -> dict[str, str]:
    """Why keys of other registered classes, and keys the code fills in, are not valid here."""
    owners: dict[str, list[str]] = {}
    for other in registry.names():
        for key in registry.options(other) or ():
            if key not in valid:
                owners.setdefault(key, []).append(other)
    reasons = {key: (f"is an option of {registry.kind} {', '.join(map(repr, names))}, but {selector} is "
                     f"{selected!r}; select that {registry.kind} or remove the key")
               for key, names in owners.items()}
    for key, source in registry.injected.items():
        if key in (registry.parameters(selected) or ()):
            reasons[key] = f"is set by voxprint from {source}, not by the config; remove it"
    return reasons


def _check_values(config: dict[str, Any]) -> None:
    """Values a typo would silently break."""
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
    optim = config["optim"]
    from voxprint.training.trainer import OPTIMIZERS  # the trainer owns the optimiser names

    if optim["name"] not in OPTIMIZERS:
        match = closest(optim["name"], OPTIMIZERS)
        raise ConfigError(f"config: unknown optimizer {optim['name']!r} in section 'optim'; "
                          + (f"did you mean {match!r}?" if match else f"known: {', '.join(sorted(OPTIMIZERS))}"))
    if optim["schedule"] not in ("plateau", "cosine"):
        raise ConfigError(f"optim.schedule must be plateau or cosine, not {optim['schedule']!r}")
    if optim["select_by"] not in ("valid_loss", "valid_eer"):
        raise ConfigError(f"optim.select_by must be valid_loss or valid_eer, not {optim['select_by']!r}")
    inference = config["inference"]
    if not 0 <= inference["overlap"] < 1:
        raise ConfigError(f"inference.overlap must be in [0, 1), got {inference['overlap']}")


def _check_built_sections(config: dict[str, Any]) -> None:
    """Build ``augment``, ``specaugment`` and ``regularizer``: their builders check keys and values."""
    from voxprint.data.augment import AugmentConfig
    from voxprint.features.specaugment import SpecAugment
    from voxprint.losses.orthogonal import OrthogonalRegularizer

    AugmentConfig.from_dict(config["augment"])
    if config["specaugment"]:
        SpecAugment.from_config(config["specaugment"])
    if config["regularizer"]:
        OrthogonalRegularizer.from_config(config["regularizer"], config["optim"]["epochs"])


def _check_paper(config: dict[str, Any], given: Mapping[str, Any] | None) -> None:
    """A ``paper:`` section is merged over the config by the study runners' ``--paper``: check that result."""
    paper = config.get("paper")
    if paper is None:
        return
    if not isinstance(paper, Mapping):
        raise ConfigError(f"config: section 'paper' must be a mapping of config sections, got {paper!r}")

    def without_paper(sections: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sections.items() if k != "paper"}

    try:
        check_config(merge(without_paper(config), _expand(dict(paper))),
                     None if given is None else merge(without_paper(given), dict(paper)))
    except ConfigError as exc:
        raise ConfigError(f"config, with its paper: section merged: {str(exc).removeprefix('config: ')}") from None


def save_config(config: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``config`` as YAML, atomically (a run folder never holds a half-written config).

    Args:
        config: The config to write.
        path: The ``.yaml`` file.
    """
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))
