"""Speaker embedders. Importing this package registers every model in :data:`voxprint.registry.MODELS`."""
from voxprint.models import lstm_dvector  # noqa: F401  (registers "lstm_dvector")
from voxprint.models import ecapa_tdnn  # noqa: F401  (registers "ecapa_tdnn")
from voxprint.models import resnet  # noqa: F401  (registers "resnet34", "resnet18")
from voxprint.models import tdnn  # noqa: F401  (registers "tdnn_xvector")
from voxprint.models import rawnet2  # noqa: F401  (registers "rawnet2")
from voxprint.models import netvlad  # noqa: F401  (registers "lstm_netvlad")
from voxprint.models import gmm_ubm  # noqa: F401  (registers "gmm_ubm")
from voxprint.models import ivector  # noqa: F401  (registers "ivector")
from voxprint.models.embedding import EmbeddingModel, build_embedding_model

__all__ = ["EmbeddingModel", "build_embedding_model"]
