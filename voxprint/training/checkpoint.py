"""Atomic checkpoint and model files.

A kill during a save leaves the previous file intact: each file is written beside its target and
moved into place with :func:`os.replace`, which is atomic on POSIX filesystems.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from voxprint.errors import ModelError

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
CONFIG_NAME = "config.yaml"
META_NAME = "meta.json"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise ModelError(f"{path} is not a readable voxprint file: {exc}") from exc
