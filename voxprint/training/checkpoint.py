"""What training keeps in a run folder, and when a run may be resumed.

:mod:`voxprint.runs` owns the folder's file names, atomic saving and safe loading; this module
decides what ``checkpoint.pt`` and ``model.pt`` hold:

- ``checkpoint.pt``: everything an exact resume needs (:data:`CHECKPOINT_KEYS`), including the
  config the run was trained with, so a resume can refuse a config that would make it another run.
- ``model.pt``: the config, the embedder's weights, the epoch's history record and their content
  hash ``weights_sha256`` (checked by inference).

Both hold only tensors and plain data, so they load with ``weights_only=True``.

The checkpoint is written before ``model.pt``; a kill between the two leaves a checkpoint one epoch
ahead of ``model.pt``, which :func:`repair_model_file` fixes on resume (the reverse order would leave
a ``model.pt`` from an epoch no checkpoint can reproduce).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxprint.errors import ConfigError, ModelError
from voxprint.runs import MODEL_FILE, hash_state, load_torch_file, save_torch_file

#: Keys of ``checkpoint.pt``.
CHECKPOINT_KEYS = ("step", "optimizer", "plateau", "history", "epoch", "torch_rng", "config")

# Config keys a resume may change. Each leaves the epochs already run, and everything the next
# epochs compute, as an uninterrupted run with the new value would have them:
RESUMABLE_KEYS = {
    # how many epochs to run; checked further by _epochs_change_refused (some schedules span it)
    "optim.epochs",
    # only decides when to stop, from plateau counts the checkpoint keeps
    "optim.early_stop_patience",
    # crops are drawn by the sampler and seeded per request, so workers only change who decodes them
    "data.num_workers",
}
# Whole sections a resume may change: sliding-window extraction settings used only by inference,
# and the study runner's notes (recipes/study.py), which training ignores.
RESUMABLE_SECTIONS = ("inference", "description", "paper", "study")


def to_plain(value: Any) -> Any:
    """``value`` as data ``torch.load(weights_only=True)`` accepts: numbers, strings, lists, dicts, tensors.

    Numpy scalars become Python numbers, tuples lists and paths strings.

    Raises:
        TypeError: ``value`` holds an object with no plain equivalent (a bug in the caller).

    Example:
        >>> to_plain({"eer": np.float64(0.25), "frames": (140, 180), "path": Path("/d")})
        {'eer': 0.25, 'frames': [140, 180], 'path': '/d'}
    """
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass torch refuses
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    raise TypeError(f"{type(value).__name__} cannot be stored in a voxprint .pt file: {value!r}")


def embedder_state(step_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The embedder's own state dict out of a training step module's (its ``model.`` entries)."""
    return {key[len("model."):]: value for key, value in step_state.items() if key.startswith("model.")}


def save_model_file(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                    record: Mapping[str, Any]) -> Path:
    """Write ``model.pt``: what inference needs (config, embedder weights) and their hash, no optimiser state.

    Args:
        path: the file to write (atomically).
        state_dict: the embedder's state dict.
        config: the run's config.
        record: the history record of the epoch the weights are from.

    Returns:
        ``path``.
    """
    config = to_plain(config)
    return save_torch_file({"config": config, "state_dict": dict(state_dict), "trained": to_plain(record),
                            "weights_sha256": hash_state(config, state_dict)}, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a ``checkpoint.pt`` (tensors and plain data only) and check it has every key a resume needs.

    Raises:
        ModelError: the file is unreadable, holds Python objects, or lacks keys (e.g. it predates
            the config record); one line naming the file.
    """
    state = load_torch_file(path)
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ModelError(f"{path} lacks {', '.join(missing)} (written by another voxprint version?), so it cannot "
                         "be resumed safely; train into a new --out")
    return state


def check_resumable(saved: Mapping[str, Any], config: Mapping[str, Any], where: str | os.PathLike) -> None:
    """Refuse to resume a run with a config that would make it a different run.

    Args:
        saved: the config the checkpoint was trained with.
        config: the config of the resume.
        where: the run folder, for the message.

    Raises:
        ConfigError: one line listing each differing key that may not change, e.g.
            ``model.channels: 192 -> 256``.
    """
    refused = config_changes(saved, config)
    if refused:
        allowed = ", ".join(sorted(RESUMABLE_KEYS) + ["inference.*"])
        raise ConfigError(f"cannot resume {where}: the config differs from the one it was trained with in "
                          f"{'; '.join(refused)} (a resume may change only {allowed}); "
                          "restore those values or train into a new --out")


def config_changes(saved: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The differences between two configs that a resume may not make, as ``key: old -> new`` lines.

    Example:
        >>> old = {"seed": 1, "optim": {"epochs": 5, "schedule": "plateau"}, "regularizer": {}}
        >>> config_changes(old, {"seed": 2, "optim": {"epochs": 9, "schedule": "plateau"}, "regularizer": {}})
        ['seed: 1 -> 2']
    """
    old, new = _flatten(saved), _flatten(config)
    refused = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, _UNSET), new.get(key, _UNSET)
        if _same(before, after) or key.split(".")[0] in RESUMABLE_SECTIONS:
            continue
        change = f"{key}: {_show(before)} -> {_show(after)}"
        if key == "optim.epochs":
            reason = _epochs_change_refused(config)
            if reason:
                refused.append(f"{change} ({reason})")
            continue
        if key not in RESUMABLE_KEYS:
            refused.append(change)
    return refused


def _epochs_change_refused(config: Mapping[str, Any]) -> str | None:
    """Why ``optim.epochs`` may not change for this config, or None when it may.

    Both schedules below are functions of the run's length, so a new length would change the
    learning rate or penalty of epochs the checkpoint has already been trained with.
    """
    if config["optim"]["schedule"] == "cosine":
        return "the cosine schedule spans optim.epochs"
    regularizer = config.get("regularizer") or {}
    if regularizer.get("schedule") == "decreasing" and "milestones" not in regularizer:
        return "the regularizer's decreasing schedule is scaled to optim.epochs"
    return None


def repair_model_file(out_dir: str | os.PathLike, state: Mapping[str, Any]) -> bool:
    """Re-create ``model.pt`` from the checkpoint when a kill fell between their writes.

    The checkpoint is written first, so the one inconsistency a kill can leave is a checkpoint whose
    last epoch should be in ``model.pt`` (a new best, or the last epoch of a run without validation)
    while ``model.pt`` still holds an earlier epoch, or does not exist yet.

    Args:
        out_dir: the run folder.
        state: its checkpoint (:func:`read_checkpoint`).

    Returns:
        True when ``model.pt`` was rewritten.
    """
    last = state["history"][-1]
    if last["epoch"] == 0 or not last["best"]:
        return False
    path = Path(out_dir) / MODEL_FILE
    if path.is_file():
        try:
            if load_torch_file(path).get("trained", {}).get("epoch") == last["epoch"]:
                return False
        except ModelError:
            pass  # unreadable: replaced by the checkpoint's weights, which are this epoch's
    save_model_file(path, embedder_state(state["step"]), state["config"], last)
    return True


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys; an empty section (e.g. ``augment: {}``) contributes nothing."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _same(a: Any, b: Any) -> bool:
    """Equal as configs: a tuple equals the list YAML reads back, 1 equals 1.0, NaN equals NaN."""
    a, b = to_plain(a) if a is not _UNSET else a, to_plain(b) if b is not _UNSET else b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _show(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width // 2 - 2]}...{text[-(width // 2 - 2):]}"

