"""PyTorch files of a run folder, written atomically and read without running any code.

``torch.load`` unpickles; with ``weights_only=False`` a crafted ``model.pt`` runs whatever it
likes. Every file voxprint writes holds only tensors and plain data (dicts, lists, strings,
numbers), so it is always read with ``weights_only=True`` and anything else is refused.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from voxprint.errors import ModelError
from voxprint.fileio import atomic_write


def save_torch_file(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through an atomic write: a kill mid-save keeps the previous file."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def load_torch_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a voxprint ``.pt`` file as tensors and plain data only.

    Raises:
        ModelError: the file is missing, truncated, not a PyTorch file, or holds Python objects
            (which could execute code when loaded); the message is one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the unpickler met a reference to Python code, and refused it
            raise ModelError(f"{path} was refused: it holds Python objects, not only tensors and plain data, and "
                             "loading it could run code; voxprint never writes such files") from None
        raise ModelError(f"{path} is not a readable voxprint file (truncated or corrupt?)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        # torch raises many types for truncated or foreign files; the first line says which
        raise ModelError(f"{path} is not a readable voxprint file (truncated or corrupt?): {_first_line(exc)}") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path} is not a voxprint file (it holds a {type(state).__name__}, not a mapping)")
    return state


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
