"""Training: the loop, checkpoints and distributed support."""
from voxprint.training.trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
