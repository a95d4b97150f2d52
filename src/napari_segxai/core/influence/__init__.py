"""TracIn for segmentation: which training cases' class regions taught the model to draw a case's classes."""

from .gradients import DEFAULT_LAST_K, LAYER_CHOICES, region_loss
from .query import ENGINES, influence
from .result import Evidence, InfluenceResult
from .training_set import NoTrainingRecord, TrainingCaseUnavailable, training_case, training_record, unavailable_note

__all__ = [
    "DEFAULT_LAST_K", "ENGINES", "LAYER_CHOICES", "Evidence", "InfluenceResult", "NoTrainingRecord",
    "TrainingCaseUnavailable", "influence", "region_loss", "training_case", "training_record", "unavailable_note",
]
