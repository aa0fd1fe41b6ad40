"""Speaker identification: the speaker models a back-end needs and their scores (:mod:`.scoring`), quality-aware
calibration of identification scores (:mod:`.calibration`), the calibration trials that vary test duration and
enrollment count (:mod:`.trials`), and the eval-id protocol with its metrics (:mod:`.evaluation`). The speaker
store (:mod:`voxprint.store`) keeps and scores the same speaker models and applies the calibration."""
from voxprint.identification.calibration import CrossFittedCalibration, QualityCalibration, calibration_by_bin
from voxprint.identification.evaluation import (
    IdentificationData,
    dir_at_fpir,
    evaluate_identification,
    fit_identification,
    load_identification_data,
    open_set_statistic,
    split_protocol,
    top_k_accuracy,
)
from voxprint.identification.scoring import backend_scorer, cosine_scorer, speaker_scoring

__all__ = ["CrossFittedCalibration", "IdentificationData", "QualityCalibration", "backend_scorer",
           "calibration_by_bin", "cosine_scorer", "dir_at_fpir", "evaluate_identification", "fit_identification",
           "load_identification_data", "open_set_statistic", "speaker_scoring", "split_protocol", "top_k_accuracy"]
