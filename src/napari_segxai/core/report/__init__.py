"""One-page case report: segmentation, per-class relevance, RoI importance, TracIn evidence, trust numbers, settings."""

from .build import DEFAULT_METHOD, DEFAULT_TOP, CaseReport, build_report, read_trust
from .page import write_report

__all__ = ["DEFAULT_METHOD", "DEFAULT_TOP", "CaseReport", "build_report", "read_trust", "write_report"]
