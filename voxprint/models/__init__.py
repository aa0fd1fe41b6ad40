"""Speaker embedders. Importing this package registers every model in :data:`voxprint.registry.MODELS`."""
from voxprint.models import lstm_dvector  # noqa: F401  (registers "lstm_dvector")
from voxprint.models.embedding import EmbeddingModel, build_embedding_model

__all__ = ["EmbeddingModel", "build_embedding_model"]
