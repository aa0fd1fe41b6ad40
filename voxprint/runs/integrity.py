"""Content hashes of a run folder: they catch corrupted weights or back-end files before they score.

- ``model.pt`` carries ``weights_sha256``, a hash of its config and every tensor's dtype, shape and
  bytes, computed when it is written and checked when it is loaded.
- ``backend/manifest.json`` lists the SHA-256 of every back-end file; it is written inside the new
  back-end folder before that folder is swapped in, so the manifest and the files always agree.
- :func:`model_identity` combines the two: the identity a speaker store records, so embeddings of
  different models (or of one model with a refitted back-end) are never mixed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from voxprint.errors import ModelError
from voxprint.fileio import atomic_write_text
from voxprint.runs.layout import MANIFEST_FILE

if TYPE_CHECKING:
    import torch


def hash_state(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a config and a state dict, independent of how the file was serialised.

    Example:
        >>> import torch
        >>> a = hash_state({"n": 1}, {"w": torch.zeros(2)})
        >>> a == hash_state({"n": 1}, {"w": torch.zeros(2)}), a == hash_state({"n": 1}, {"w": torch.ones(2)})
        (True, False)
    """
    import torch  # here, so reading a manifest or a model identity never imports torch

    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode("utf-8"))
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, str]:
    """Record the hash of each named file of ``folder`` in ``folder/manifest.json``; returns the record."""
    folder = Path(folder)
    record = {name: hash_file(folder / name) for name in sorted(names)}
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(record, indent=1))
    return record


def read_manifest(folder: str | os.PathLike) -> dict[str, str] | None:
    """The hashes recorded in ``folder/manifest.json``, or None when the folder has no manifest."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path} is corrupt; run `voxprint fit-backend` on the model again") from None
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise ModelError(f"{path} is not a manifest; run `voxprint fit-backend` on the model again")
    return record


def verify_manifest(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Check that each named file of ``folder`` still has the hash its manifest recorded.

    Raises:
        ModelError: there is no manifest, a file is not listed, or its content changed; the message
            names the file.
    """
    folder = Path(folder)
    record = read_manifest(folder)
    if record is None:
        raise ModelError(f"{folder} has no {MANIFEST_FILE}, so its files cannot be checked; "
                         "run `voxprint fit-backend` on the model again")
    for name in names:
        expected = record.get(name)
        if expected is None:
            raise ModelError(f"{folder / name} is not listed in {folder / MANIFEST_FILE}; "
                             "run `voxprint fit-backend` on the model again")
        if hash_file(folder / name) != expected:
            raise ModelError(f"{folder / name} does not match the hash recorded when it was written "
                             "(corrupted or changed); run `voxprint fit-backend` on the model again")


def model_identity(weights_sha256: str, backend_folder: str | os.PathLike | None = None) -> str:
    """A short identity of the weights plus the back-end files (their manifest), for speaker stores.

    Example:
        >>> model_identity("ab" * 32)  # doctest: +ELLIPSIS
        'vp1-...'
    """
    digest = hashlib.sha256(weights_sha256.encode("ascii"))
    record = read_manifest(backend_folder) if backend_folder is not None else None
    if record:
        digest.update(json.dumps(record, sort_keys=True).encode("utf-8"))
    return "vp1-" + digest.hexdigest()[:24]
