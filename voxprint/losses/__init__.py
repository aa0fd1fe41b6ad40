"""Training losses. Importing this package registers every loss in :data:`voxprint.registry.LOSSES`."""
from voxprint.losses.ge2e import GE2ELoss, ge2e_similarity
from voxprint.losses.margin import AAMSoftmaxLoss, AMSoftmaxLoss, SoftmaxLoss, SphereFaceLoss

__all__ = ["AAMSoftmaxLoss", "AMSoftmaxLoss", "GE2ELoss", "SoftmaxLoss", "SphereFaceLoss", "ge2e_similarity"]
