"""Inference: loading trained models and extracting embeddings (imports no training code).

The names below are imported when first used (PEP 562), so that a torch-free module of this package, such
as :mod:`voxprint.inference.sharding`, can be imported without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EmbeddedSet", "FusedEmbedder", "SlidingWindowEmbedder", "SpeakerModel", "StreamingEmbedder",
           "WindowEmbeddings",
           "load_model", "resolve_device", "window_starts"]

#: Where each public name lives.
_HOMES = {"EmbeddedSet": "speaker_model", "SpeakerModel": "speaker_model", "load_model": "speaker_model",
          "resolve_device": "speaker_model", "FusedEmbedder": "fused", "StreamingEmbedder": "streaming",
          "SlidingWindowEmbedder": "windows", "WindowEmbeddings": "windows", "window_starts": "windows"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
