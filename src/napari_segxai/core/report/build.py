"""Everything a case report shows, computed once: segmentation, relevance, RoI importance, TracIn, trust numbers."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .. import progress as _progress
from ..io.dicom_case import patient_identifiers
from ..model.uncertainty_members import DEFAULT_SAMPLES

from ..attribution.base import DEFAULT_METHOD  # noqa: E402  (re-exported: the report's default method)
DEFAULT_TOP = 4                       # proponents and opponents shown per class
STEPS = ("segment", "explain", "regions", "influence")


@dataclass(frozen=True, eq=False)
class CaseReport:
    """The parts of one case's report and the exact settings that made them."""

    case: Any                                   # core.case.Case
    card: Any                                   # core.model.card.ModelCard
    segmentation: Any                           # core.model.inference.Segmentation
    relevance: Any                              # core.attribution.Relevance; None when no class was predicted
    roi: Any                                    # core.roi.RoiImportance; None when no class was predicted
    influence: Any = None                       # core.influence.InfluenceResult, or None
    influence_note: str = ""                    # why there is no influence section, when there is none
    training_cases: dict = field(default_factory=dict)   # seed -> core.case.Case of the evidence shown
    training_note: str = ""                     # why some evidence shown has no picture (its files are not here)
    trust: dict = field(default_factory=dict)   # "sanity" / "metrics": rows (dicts) for the report's method
    trust_note: str = ""
    settings: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    created: str = ""
    identifiers: dict = field(default_factory=dict)  # the patient's, only when asked for (show_identifiers)
    verdict: str = ""                                 # the method's measured trust for this model, in a sentence
    uncertainty: Any = None                           # core.model.uncertainty.Uncertainty, when asked for
    not_predicted: tuple = ()                         # names of the chosen classes the model did not predict


def build_report(
    case,
    card,
    *,
    method: str = DEFAULT_METHOD,
    classes: Optional[Sequence[int | str]] = None,
    top: int = DEFAULT_TOP,
    influence: bool = True,
    trust_dir: str | Path | None = None,
    device: str | None = None,
    network=None,
    segmentation=None,
    relevance=None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
    show_identifiers: bool = False,
    uncertainty: Optional[str] = None,
    uncertainty_samples: int = DEFAULT_SAMPLES,
    **params: Any,
) -> CaseReport:
    """Segment, explain every predicted class with ``method``, summarise by region, find TracIn evidence.

    "No finding" is a result: a chosen class the model does not predict is named in ``not_predicted``,
    and a case where it predicts none gets a report that says so (no relevance, RoI or TracIn part).

    A ``segmentation`` or ``relevance`` already computed for this case and card is reused, not recomputed.
    A DICOM case's report names it by its pseudonym only, without its folder or file names (which
    may name the patient), unless ``show_identifiers`` asks for the patient's identifiers.
    ``uncertainty`` (checkpoints, flips or dropout) adds where the model is unsure: the segmentation is
    then the one made with the uncertainty ensemble.
    """
    from ..attribution import explain_case, get_method
    from ..model.card import build_network
    from ..roi import case_regions, roi_importance
    from ..model.preprocess import channel_indices
    from ..model.device import pick_device
    from ..model.inference import segment

    if top < 1:
        raise ValueError(f"The report shows at least one proponent per class; top must be 1 or more, got {top}.")
    method_object = get_method(method, **params)
    channel_indices(case, card)
    trust, trust_note = read_trust(trust_dir, method_object.name)
    seconds: dict[str, float] = {}
    stage = _Stages(progress, should_cancel)
    device = pick_device(device)
    start = time.perf_counter()
    if segmentation is None or relevance is None:
        network = build_network(card, device) if network is None else network
    measured = None
    if uncertainty is not None:
        from ..model.uncertainty import segment_with_uncertainty

        with_uncertainty = segment_with_uncertainty(case, card, uncertainty, network=network, device=device,
                                                    samples=uncertainty_samples, progress=stage.part(0),
                                                    should_cancel=should_cancel)
        segmentation, measured = (segmentation or with_uncertainty[0]), with_uncertainty[1]
    if segmentation is None:
        segmentation = segment(case, card, network=network, device=device, progress=stage.part(0),
                               should_cancel=should_cancel)
    seconds["segment"] = segmentation.seconds
    if segmentation.domain is None:  # is the case like the model's training cases? said first
        from ..model.domain import check_domain

        tick = time.perf_counter()
        segmentation = dataclasses.replace(segmentation, domain=check_domain(case, card, network=network, device=device,
                                                                             segmentation=segmentation))
        seconds["domain check"] = time.perf_counter() - tick
    if relevance is not None:
        if relevance.method != method_object.name:
            raise ValueError(f"The relevance given was made with {relevance.method}, not {method_object.name}.")
        classes = list(relevance.class_indices)
    classes, not_predicted = _predicted_classes(card, classes, segmentation.labels)
    if relevance is None and classes:
        relevance = explain_case(case, card, method=method_object, classes=classes, network=network,
                                 device=device, progress=stage.part(1), should_cancel=should_cancel, sequences=True)
    roi = None
    if relevance is not None:
        not_predicted = tuple(dict.fromkeys(not_predicted + tuple(relevance.skipped)))
        seconds["explain"] = relevance.seconds
        tick = time.perf_counter()
        regions = case_regions(segmentation.labels, card.classes, channels=case.channels)
        roi = roi_importance(relevance, regions, progress=stage.part(2), should_cancel=should_cancel)
        seconds["regions"] = time.perf_counter() - tick
    evidence, note, training, training_note = None, "", {}, ""
    if relevance is None:
        note = "No tumour predicted, so there is no training evidence to show."
    elif influence:
        evidence, note, training, training_note = _influence(case, card, segmentation, relevance.class_names, top,
                                                             device, stage.part(3), should_cancel)
        seconds["influence"] = evidence.seconds if evidence is not None else 0.0
    else:
        note = "TracIn was not asked for (--no-influence)."
    seconds["total"] = time.perf_counter() - start
    _progress.step(1000, 1000, progress, None)
    settings = {
        "case": case.name,
        **_case_files(case, show_identifiers),
        "model": card.name,
        "model card": str(card.path),
        "architecture": card.architecture,
        "device": str(device),
        "method": method_object.name,
        "method parameters": dict(method_object.params),
        "classes explained": list(relevance.class_names) if relevance is not None else [],
        "classes not predicted": list(not_predicted),
        "target": relevance.target_description if relevance is not None else "none: no class predicted",
        "sliding window": f"{list(card.roi_size)}, overlap {card.overlap}, {card.mode} blending"
                          + (f", mirrored along axes {list(card.mirror_axes)} (logits averaged)" if card.mirror_axes else ""),
        "preprocessing": f"orientation {card.orientation}, spacing {card.spacing} ({card.spacing_policy}), "
                         f"normalisation {card.normalization}",
        "TracIn": evidence.describe() if evidence is not None else note,
        "top evidence per class": top,
        "trust numbers": str(trust_dir) if trust_dir else "not given",
    }
    return CaseReport(case=case, card=card, segmentation=segmentation, relevance=relevance, roi=roi,
                      influence=evidence, influence_note=note, training_cases=training,
                      training_note=training_note, trust=trust,
                      trust_note=trust_note, settings=settings, seconds=seconds,
                      created=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                      identifiers=patient_identifiers(case.reference_files) if show_identifiers else {},
                      verdict=_verdict(card, method_object.name), uncertainty=measured, not_predicted=not_predicted)


def _predicted_classes(card, classes, labels) -> tuple[list[int], tuple[str, ...]]:
    """The chosen classes (default: all but background) the segmentation holds, and the names of those it lacks."""
    from ..attribution.explain_case import class_indices

    present = {int(v) for v in np.unique(labels)}
    chosen = [i for i in class_indices(card, classes) if classes is not None or card.classes[i].label != 0]
    kept = [i for i in chosen if card.classes[i].label in present]
    return kept, tuple(card.classes[i].name for i in chosen if i not in kept)


def _verdict(card, method: str) -> str:
    """The measured trust of ``method`` for ``card``'s model, or how to measure it."""
    from ..trust.verdict import read_verdict

    verdict = read_verdict(card, method)
    if verdict is None:
        return (f"Trust of {method} for this model: not checked (segxai trust CASE --methods {method}, or Check in "
                "the Explain widget, measures it once for this model).")
    return verdict.sentence()


def _case_files(case, show_identifiers: bool) -> dict:
    """Where the case came from: the folder and files, a DICOM study's only when identifiers are shown."""
    if case.reference_files and not show_identifiers:
        return {"case files": case.shown_sources()}
    return {"case folder": str(Path(case.source_paths[0]).parent) if case.source_paths else "(in memory)",
            "case files": [Path(p).name for p in case.source_paths] if not case.reference_files
            else f"{len(case.source_paths)} DICOM files"}


def _influence(case, card, segmentation, class_names, top, device, progress, should_cancel):
    """The TracIn result, a note when there is none, the training cases of the evidence shown, and why some are not."""
    from ..influence import NoTrainingRecord, TrainingCaseUnavailable, influence, training_case, unavailable_note

    try:
        result = influence(case, card, classes=list(class_names), segmentation=segmentation, device=str(device),
                           progress=progress, should_cancel=should_cancel)
    except NoTrainingRecord as err:
        return None, str(err), {}, ""
    seeds = {e.seed for name in result.test_classes
             for e in result.proponents(name, top=top) + result.opponents(name, top=top)}
    cases, missing = {}, []
    for seed in sorted(seeds):
        try:
            cases[seed] = training_case(card, seed)
        except TrainingCaseUnavailable as err:  # listed without its picture
            missing.append(err)
    return result, "", cases, unavailable_note(missing)


def read_trust(folder: str | Path | None, method: str) -> tuple[dict, str]:
    """The sanity verdicts and quality metrics of ``method`` from a ``segxai trust`` output folder."""
    if folder is None:
        return {}, "Not computed: run `segxai trust CASE --out DIR` and give DIR to the report (--trust DIR)."
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--trust {folder} is not a folder; give the --out folder of `segxai trust`.")
    found = {}
    for key, name in (("sanity", "sanity_verdicts.csv"), ("metrics", "metrics.csv")):
        path = folder / name
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                rows = [row for row in csv.DictReader(handle) if row.get("method") == method]
            if rows:
                found[key] = rows
    if not found:
        return {}, (f"{folder} holds no sanity_verdicts.csv or metrics.csv rows for {method}; "
                    f"run `segxai trust CASE --methods {method} --out {folder}`.")
    return found, ""


class _Stages:
    """Progress of the report's steps on one 0..1000 scale (each step its share)."""

    SHARES = {"segment": 0.15, "explain": 0.45, "regions": 0.05, "influence": 0.35}

    def __init__(self, progress, should_cancel):
        self.progress, self.should_cancel = progress, should_cancel

    def part(self, index: int):
        """A progress callback for step ``index`` of :data:`STEPS`."""
        before = sum(self.SHARES[s] for s in STEPS[:index])
        return _progress.span(self.progress, before, before + self.SHARES[STEPS[index]])
