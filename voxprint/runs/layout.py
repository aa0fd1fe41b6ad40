"""File names of a run folder, the built-in models, and ``meta.json`` (read checked, written atomically)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from voxprint.errors import ModelError
from voxprint.fileio import atomic_write_text
from voxprint.paths import PACKAGE_DIR

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"
META_FILE = "meta.json"
BACKEND_DIR = "backend"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"

#: Models shipped inside the package, by the name a user passes instead of a folder.
BUILTIN_MODELS: dict[str, Path] = {name: PACKAGE_DIR / "pretrained" / name for name in ("default", "ivector", "fused")}

_BACKEND_KEYS = {"kind": str, "norm": str, "calibrated": bool, "top_n": int}


def is_builtin(name_or_dir: str | os.PathLike) -> bool:
    """True when ``name_or_dir`` names a model shipped inside the package (which nothing may change).

    Example:
        >>> is_builtin("default"), is_builtin("exp/mine")
        (True, False)
    """
    return str(name_or_dir) in BUILTIN_MODELS


def model_label(model_dir: str | os.PathLike | None) -> str | None:
    """How to name a loaded model's folder to a user: a built-in model's name, else the folder's path (None for
    a model built in memory); what ``--model`` takes.

    Example:
        >>> model_label(BUILTIN_MODELS["fused"]), model_label(None)
        ('fused', None)
    """
    if model_dir is None:
        return None
    folder = Path(model_dir).resolve()
    return next((name for name, path in BUILTIN_MODELS.items() if path.resolve() == folder), str(folder))


def resolve_model_dir(name_or_dir: str | os.PathLike) -> Path:
    """The folder of a built-in model name, a run folder, or a file inside one.

    Raises:
        ModelError: nothing of that name exists.
    """
    if is_builtin(name_or_dir):
        return BUILTIN_MODELS[str(name_or_dir)]
    path = Path(name_or_dir).expanduser()
    if path.is_file():
        return path.parent
    if not path.is_dir():
        raise ModelError(f"model {str(name_or_dir)!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                         f"nor a folder holding {MODEL_FILE}")
    return path


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of ``folder/meta.json`` (``{}`` when there is none).

    Raises:
        ModelError: the file is not a JSON object, or its threshold or back-end has the wrong type.
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not readable JSON ({_first_line(exc)}); restore it or delete it and run "
                         "`voxprint eval --write-threshold` again") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path} must hold a JSON object")
    threshold = meta.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not math.isfinite(threshold)):
        raise ModelError(f"{path}: threshold must be a finite number, not {threshold!r}")
    backend = meta.get("backend", {})
    if not isinstance(backend, dict):
        raise ModelError(f"{path}: backend must be an object like {{\"kind\": \"plda\", \"norm\": \"none\"}}")
    for key, value in backend.items():
        expected = _BACKEND_KEYS.get(key)
        if expected is None or not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ModelError(f"{path}: backend.{key} = {value!r} is not valid "
                             f"(keys: {', '.join(f'{k} ({t.__name__})' for k, t in _BACKEND_KEYS.items())})")
    return meta


def update_meta(folder: str | os.PathLike, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into ``folder/meta.json`` and rewrite it atomically; returns the new contents."""
    meta = read_meta(folder)
    meta.update(values)
    atomic_write_text(Path(folder) / META_FILE, json.dumps(meta, indent=1))
    return meta


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
