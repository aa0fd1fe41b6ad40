"""The run folder: the one home of its file names, its metadata, its integrity record and its lock.

A run folder is what ``voxprint train`` writes and what :func:`voxprint.load_model` reads::

    RUN/
      model.pt         config + best weights + their content hash (inference needs only this)
      checkpoint.pt    everything needed to resume training
      config.yaml      the merged configuration, for people to read
      history.json     one record per epoch
      meta.json        accept threshold and the back-end it belongs to (``eval --write-threshold``)
      backend/         cohort, PLDA, calibrations and ``manifest.json`` with their hashes (``fit-backend``)
      .lock            held while a process writes into the folder

Nothing here imports training code, so inference stays light.
"""
from voxprint.runs.integrity import (
    hash_file,
    hash_state,
    model_identity,
    verify_manifest,
    write_manifest,
)
from voxprint.runs.layout import (
    BACKEND_DIR,
    BUILTIN_MODELS,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    META_FILE,
    MODEL_FILE,
    is_builtin,
    model_label,
    read_meta,
    resolve_model_dir,
    update_meta,
)
from voxprint.runs.lock import RunLock

__all__ = [
    "BACKEND_DIR",
    "BUILTIN_MODELS",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "HISTORY_FILE",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "META_FILE",
    "MODEL_FILE",
    "RunLock",
    "hash_file",
    "hash_state",
    "is_builtin",
    "model_label",
    "load_torch_file",
    "model_identity",
    "read_meta",
    "resolve_model_dir",
    "save_torch_file",
    "update_meta",
    "verify_manifest",
    "write_manifest",
]


def __getattr__(name: str):
    # The .pt readers import torch (seconds); a torch-free path (an ONNX export's verification) reads
    # meta.json and the back-end through this package without paying for it.
    if name in ("load_torch_file", "save_torch_file"):
        from voxprint.runs import torchfile

        return getattr(torchfile, name)
    raise AttributeError(f"module 'voxprint.runs' has no attribute {name!r}")
