"""Can the explanations be trusted? Sanity checks, quality metrics and a ground-truth benchmark (numpy/torch/scipy).

- :mod:`.randomisation`: model parameter randomisation (Adebayo et al. 2018), cascading and independent;
- :mod:`.datarandom`: data randomisation (twins trained on true and permuted labels of generated cases);
- :mod:`.quality`: the registry of quality metrics (:func:`register_metric`) and the loop running them;
- :mod:`.metrics`: the built-in ones: faithfulness correlation, deletion curve, max-sensitivity, complexity;
- :mod:`.groundtruth`: explanation precision and modality shares on generated cases, next to edge-filter and random-weights baselines;
- :mod:`.similarity`: the registry of similarity measures: Spearman, SSIM (any dims) and top-k overlap of maps;
- :mod:`.assess`: every chosen measure of one case in one call, and per-case rows summed up over cases.

Everything works on a :class:`Problem`: a network, one input and the segmentation target it explains
(:func:`case_problem` builds it from a case and a model card).
"""

from .assess import CHECKS, CaseQualityRow, case_columns, case_measures, CaseTrust, TrustSettings, assess_case, assess_problem, quality_rows, quality_summary, write_trust
from .datarandom import DataRandomisationResult, DataRandomisationRow, data_randomisation_test
from .groundtruth import EDGE_FILTERS, GroundTruthResult, ModalityRow, PrecisionRow, edge_relevance, explanation_precision, ground_truth_benchmark, modality_shares
from .metrics import DeletionCurve, complexity, deletion_curve, faithfulness_correlation, max_sensitivity  # registers the built-in metrics
from .quality import Column, QualityMetric, QualityResult, QualityRow, QualitySettings, available_metrics, metric_class, metric_columns, quality_metrics, register_metric
from .problem import Problem, case_problem, relevance_of
from .randomisation import MODES, RandomisationResult, SimilarityRow, VerdictRow, randomisation_test, randomised_copy, weight_layers
from .similarity import SimilarityMeasure, abs_spearman, map_ssim, register_similarity, similarity_measures, similarity_names, spearman, ssim, top_k_overlap

__all__ = [
    "CHECKS", "CaseQualityRow", "case_columns", "case_measures", "CaseTrust", "TrustSettings", "assess_case", "assess_problem", "quality_rows",
    "quality_summary", "write_trust",
    "DataRandomisationResult", "DataRandomisationRow", "data_randomisation_test",
    "EDGE_FILTERS", "GroundTruthResult", "ModalityRow", "PrecisionRow", "edge_relevance", "explanation_precision",
    "ground_truth_benchmark", "modality_shares",
    "Column", "QualityMetric", "QualitySettings", "available_metrics", "metric_class", "metric_columns", "register_metric",
    "MODES", "DeletionCurve", "Problem", "QualityResult", "QualityRow", "RandomisationResult",
    "SimilarityRow", "VerdictRow", "abs_spearman", "case_problem", "complexity", "deletion_curve",
    "faithfulness_correlation", "map_ssim", "max_sensitivity", "quality_metrics", "randomisation_test",
    "randomised_copy", "relevance_of", "SimilarityMeasure", "register_similarity", "similarity_measures", "similarity_names", "spearman", "ssim", "top_k_overlap", "weight_layers",
]
