"""Inference: loading trained models and extracting embeddings."""
from voxprint.inference.speaker_model import SpeakerModel, load_model, window_starts

__all__ = ["SpeakerModel", "load_model", "window_starts"]
