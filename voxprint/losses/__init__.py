"""Training losses. Importing this package registers every loss in :data:`voxprint.registry.LOSSES`."""
from voxprint.losses.ge2e import GE2ELoss, ge2e_similarity

__all__ = ["GE2ELoss", "ge2e_similarity"]
