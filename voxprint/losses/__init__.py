"""Training losses. Importing this package registers every loss in :data:`voxprint.registry.LOSSES`."""
from voxprint.losses.ge2e import GE2ELoss, ge2e_similarity
from voxprint.losses.margin import AAMSoftmaxLoss, AMSoftmaxLoss, SoftmaxLoss, SphereFaceLoss
from voxprint.losses.te2e import TE2ELoss

__all__ = ["AAMSoftmaxLoss", "AMSoftmaxLoss", "GE2ELoss", "SoftmaxLoss", "SphereFaceLoss", "TE2ELoss",
           "ge2e_similarity"]
