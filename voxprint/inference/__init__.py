"""Inference: loading trained models and extracting embeddings (imports no training code)."""
from voxprint.inference.speaker_model import EmbeddedSet, SpeakerModel, load_model, resolve_device
from voxprint.inference.streaming import StreamingEmbedder
from voxprint.inference.windows import SlidingWindowEmbedder, WindowEmbeddings, window_starts

__all__ = ["EmbeddedSet", "SlidingWindowEmbedder", "SpeakerModel", "StreamingEmbedder", "WindowEmbeddings",
           "load_model", "resolve_device", "window_starts"]
