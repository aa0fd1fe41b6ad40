"""Checkpoint and model files, written atomically (a kill during a save keeps the previous file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from voxprint.errors import ModelError
from voxprint.fileio import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
CONFIG_NAME = "config.yaml"
META_NAME = "meta.json"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise ModelError(f"{path} is not a readable voxprint file: {exc}") from exc
