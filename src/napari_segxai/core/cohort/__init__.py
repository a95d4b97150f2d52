"""Cohort analysis (Agg2Exp): segment and explain every case on dask workers, then global importance, anomalies and subgroups."""

from .analysis import (ClassAnomalies, DiceCorrelation, anomaly_scores, cohort_table, dice_correlation, flagged_cases,
                       global_importance, importance_chart, importance_matrix)
from .cases import CohortCase, find_cases
from .report import CohortReport, RankedCase, analyse_cohort, read_ranking
from .runner import CohortRun, CohortSettings, process_case, run_cohort
from .subgroups import SubgroupTest, read_metadata, subgroup_tests

__all__ = [
    "ClassAnomalies", "CohortCase", "CohortReport", "RankedCase", "CohortRun", "CohortSettings", "DiceCorrelation", "SubgroupTest",
    "analyse_cohort", "anomaly_scores", "cohort_table", "dice_correlation", "find_cases", "flagged_cases",
    "global_importance", "importance_chart", "importance_matrix", "process_case", "read_metadata", "read_ranking", "run_cohort",
    "subgroup_tests",
]
