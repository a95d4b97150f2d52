"""Every trust measure of one case in one call, and the per-case rows that sum its numbers up over many cases.

:func:`assess_case` segments a case, crops its problem and runs the chosen measures (model
parameter randomisation, quality metrics, data randomisation, ground truth) with one progress
scale; ``segxai trust`` runs it on one case, ``segxai evaluate --methods`` on many.
:func:`quality_rows` flattens one case's results into one :class:`CaseQualityRow` per method
and class; :func:`quality_summary` gives the mean and spread of every measure per method over
the rows of many cases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from .. import progress as _progress
from ..attribution import AttributionMethod
from .cost import CheckCost, check_cost
from .datarandom import DataRandomisationResult, data_randomisation_test
from .groundtruth import EDGES, RANDOM, TRAINED, GroundTruthResult, ground_truth_benchmark
from .quality import Column, QualityResult, QualitySettings, available_metrics, metric_columns, quality_metrics
from .problem import Problem, case_problem, method_label, stages
from .similarity import similarity_measures
from .randomisation import MODES, RandomisationResult, randomisation_test
from .tables import MeasuredValues, SummaryRow, summarise, write_csv

if TYPE_CHECKING:
    import numpy as np

    from ..case import Case
    from ..model.card import ModelCard

CHECKS = ("sanity", "metrics", "data")
NAN = float("nan")


@dataclass(frozen=True)
class TrustSettings:
    """Which measures run on a case and with what settings (the defaults are ``segxai trust``'s)."""

    checks: tuple[str, ...] = ("sanity", "metrics")   # of CHECKS; ground truth is asked for separately
    modes: tuple[str, ...] = MODES
    max_steps: int | None = 8
    metrics: tuple[str, ...] | None = None            # registered quality metrics to run; None: all of them
    baseline: str = "zeros"
    subset: float = 0.1
    n_subsets: int = 32
    deletion_steps: int = 20
    noise_samples: int = 8
    noise_radius: float = 0.05
    data_steps: int = 100
    data_cases: int = 8
    carrier: str = "surroundings"                     # ground truth: which modality carries a class (groundtruth.CARRIERS)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"Unknown trust check {unknown[0]!r}; choose from {', '.join(CHECKS)}.")
        unknown = [m for m in (self.metrics or ()) if m not in available_metrics()]
        if unknown:
            raise ValueError(f"Unknown metric {unknown[0]!r}; choose from {', '.join(available_metrics())}.")

    def quality(self) -> QualitySettings:
        """The settings the quality metrics take."""
        return QualitySettings(baseline=self.baseline, subset=self.subset, n_subsets=self.n_subsets,
                               deletion_steps=self.deletion_steps, noise_samples=self.noise_samples,
                               noise_radius=self.noise_radius, seed=self.seed)


@dataclass(frozen=True, eq=False)
class CaseTrust:
    """The measures run on one case (None for one not run), the problem they measured, the methods and the seconds."""

    problem: Problem
    methods: tuple[str, ...]
    sanity: RandomisationResult | None
    quality: QualityResult | None
    data: DataRandomisationResult | None
    truth: GroundTruthResult | None
    seconds: float
    cost: CheckCost | None = None    # estimated before the measures started
    settings: TrustSettings | None = None  # what was measured with (steps, subsets, ...)


PASSES_COLUMN = Column("randomisation_passes", "Randomisation",
                       "passes when the map of the fully randomised network has a Spearman correlation below 0.5 with "
                       "the trained network's map: the map depends on what the model learned")


def randomisation_columns() -> tuple[Column, ...]:
    """Every registered similarity once all layers are randomised (lower is better), then the verdict."""
    return (*(Column(f"randomisation_{m.name}", f"{m.label}, randomised",
                     f"{m.help} between the trained and the fully randomised network (lower is better)")
              for m in similarity_measures()), PASSES_COLUMN)


DATA_COLUMNS = (Column("data_spearman", "Spearman, permuted labels",
                       "Spearman of |relevance| of the twin trained on true labels and the one on permuted labels"),)
TRUTH_COLUMNS = (
    Column("precision", "Precision", "share of the k most relevant voxels inside the class's true region"),
    Column("precision_random_weights", "Precision, random weights",
           "the same method on the network with every layer re-initialised"),
    Column("tumour_precision", "Tumour precision", "share of the k most relevant voxels inside the true tumour"),
    Column("carrier_share", "Share on the carrier", "share of the relevance on the modality that carries the class"),
    Column("modality_agrees", "Top modality is the carrier", "1 when the top modality is the carrier, else 0"),
)


def case_columns() -> tuple[Column, ...]:
    """The numbers of a :class:`CaseQualityRow` in table order: randomisation, the registered metrics, data, ground truth."""
    return (*randomisation_columns(), *metric_columns(case_table=True), *DATA_COLUMNS, *TRUTH_COLUMNS)


@dataclass(frozen=True)
class CaseQualityRow(MeasuredValues):
    """One method and class of one case: every measure's headline number by :func:`case_columns` (nan: not run).

    A method is an attribution method, or an edge filter (ground-truth baseline: precision only).
    """

    case: str
    method: str
    class_name: str
    values: Mapping[str, float]

    def as_dict(self) -> dict:
        """The row as one flat mapping (CSV columns)."""
        return {"case": self.case, "method": self.method, "class_name": self.class_name, **self.values}


def case_measures() -> tuple[str, ...]:
    """The numeric fields of :class:`CaseQualityRow`, in table order."""
    return tuple(c.name for c in case_columns())


def _stage_weights(settings: TrustSettings, ground_truth: bool) -> list[float]:
    """Rough cost of each measure in explanations, for one progress scale (sanity, metrics, data, ground truth)."""
    steps = settings.max_steps or 8
    return [
        len(settings.modes) * steps + 1 if "sanity" in settings.checks else 0,
        2 + (settings.noise_samples if "sensitivity" in (settings.metrics or available_metrics()) else 0)
        if "metrics" in settings.checks else 0,
        settings.data_steps / 10 + 3 if "data" in settings.checks else 0,
        2 if ground_truth else 0,
    ]


def assess_problem(
    problem: Problem,
    methods: Sequence[str | AttributionMethod],
    *,
    settings: TrustSettings = TrustSettings(),
    card: "ModelCard | None" = None,
    ground_truth: bool = False,
    signature: Mapping[str, Mapping[str, float]] | None = None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
    before: Callable[[CheckCost], Any] | None = None,
) -> CaseTrust:
    """Run the chosen measures on a problem; ``card`` is needed for data randomisation, the true label for ground truth.

    The measures' cost (:func:`.cost.check_cost`, from one timed pass of the crop) is estimated
    first, handed to ``before`` (which may raise :class:`~..progress.Cancelled` to stop) and kept.
    """
    if not methods:
        raise ValueError("No attribution method to measure; give one or more methods.")
    if "data" in settings.checks and card is None:
        raise ValueError("Data randomisation trains twins of the model's architecture; pass its model card.")
    if ground_truth and problem.label is None:
        raise ValueError(f"{problem.name} has no true label; the ground-truth benchmark needs a generated case.")
    start = time.perf_counter()
    sanity_part, metrics_part, data_part, truth_part = stages(progress, _stage_weights(settings, ground_truth))
    s = settings
    cost = check_cost(problem, methods, metrics=(s.metrics or available_metrics()) if "metrics" in s.checks else (),
                      settings=s.quality(), modes=s.modes if "sanity" in s.checks else (), max_steps=s.max_steps,
                      ground_truth=ground_truth)
    if before is not None:
        before(cost)
    sanity = quality = data = truth = None
    if "sanity" in s.checks:
        sanity = randomisation_test(problem, methods, modes=s.modes, max_steps=s.max_steps, seed=s.seed,
                                    progress=sanity_part, should_cancel=should_cancel)
    if "metrics" in s.checks:
        quality = quality_metrics(problem, methods, metrics=s.metrics, settings=s.quality(),
                                  progress=metrics_part, should_cancel=should_cancel)
    if "data" in s.checks:
        data = data_randomisation_test(problem, methods, card, cases=s.data_cases, steps=s.data_steps, seed=s.seed,
                                       progress=data_part, should_cancel=should_cancel)
    if ground_truth:
        truth = ground_truth_benchmark(problem, methods, signature=signature, carrier=s.carrier, seed=s.seed, progress=truth_part,
                                       should_cancel=should_cancel)
    if progress is not None:
        progress(1000, 1000)
    return CaseTrust(problem, tuple(method_label(m) for m in methods), sanity, quality, data, truth,
                     time.perf_counter() - start, cost, settings)


def assess_case(
    case: "Case",
    card: "ModelCard",
    methods: Sequence[str | AttributionMethod],
    *,
    settings: TrustSettings = TrustSettings(),
    classes: Sequence[int | str] | int | str | None = None,
    network: torch.nn.Module | None = None,
    device: str | torch.device | None = None,
    margin: int | None = None,
    target: str = "predicted",
    region: "np.ndarray | None" = None,
    voxel: Sequence[float] | None = None,
    confident: bool = False,
    threshold: float = 0.5,
    ground_truth: bool = False,
    signature: Mapping[str, Mapping[str, float]] | None = None,
    progress: _progress.ProgressFn | None = None,
    should_cancel: _progress.CancelFn | None = None,
    before: Callable[[CheckCost], Any] | None = None,
) -> CaseTrust:
    """Crop the case's problem around its target (by default each class's predicted region) and run the chosen measures on it.

    ``target``, ``region``, ``voxel``, ``confident`` and ``threshold`` as :func:`case_problem` (and
    ``explain_case``) take them; ``before`` gets the measures' estimated cost before they start.
    """
    segment_part, measure_part = stages(progress, (1, sum(_stage_weights(settings, ground_truth))))
    problem = case_problem(case, card, classes=classes, network=network, device=device, margin=margin,
                           target=target, region=region, voxel=voxel, confident=confident, threshold=threshold,
                           progress=segment_part,
                           should_cancel=should_cancel)
    return assess_problem(problem, methods, settings=settings, card=card, ground_truth=ground_truth,
                          signature=signature, progress=measure_part, should_cancel=should_cancel, before=before)


def quality_rows(trust: CaseTrust, case: str | None = None) -> tuple[CaseQualityRow, ...]:
    """One row per method and class of one case's measures (``case`` names it; default the problem's name)."""
    name = trust.problem.name if case is None else case
    verdicts = {(v.method, v.class_name): v for v in trust.sanity.verdicts()} if trust.sanity else {}
    quality = {(r.method, r.class_name): r for r in trust.quality.rows} if trust.quality else {}
    data = {(r.method, r.class_name): r for r in trust.data.rows
            if (r.first, r.second) == ("true labels", "permuted labels")} if trust.data else {}
    precision = {(r.method, r.model, r.class_name): r for r in trust.truth.precision} if trust.truth else {}
    modality = {(r.method, r.model, r.class_name): r for r in trust.truth.modality} if trust.truth else {}
    rows = []
    for method in trust.methods:
        for class_name in trust.problem.class_names:
            v = verdicts.get((method, class_name))
            q = quality.get((method, class_name))
            d = data.get((method, class_name))
            p = precision.get((method, TRAINED, class_name))
            r = precision.get((method, RANDOM, class_name))
            m = modality.get((method, TRAINED, class_name))
            values = dict.fromkeys(case_measures(), NAN)
            if v:
                values.update({f"randomisation_{name}": value for name, value in v.values.items()})
                values["randomisation_passes"] = float(v.passes)
            if q:
                values.update({c.name: getattr(q, c.name) for c in metric_columns(case_table=True)})
            if d:
                values["data_spearman"] = d.spearman
            if p:
                values.update(precision=p.precision, tumour_precision=p.tumour_precision)
            if r:
                values["precision_random_weights"] = r.precision
            if m:
                values.update(carrier_share=m.carrier_share, modality_agrees=float(m.agrees))
            rows.append(CaseQualityRow(name, method, class_name, values))
    edges = [p for p in (trust.truth.precision if trust.truth else ()) if p.model == EDGES]
    for p in edges:
        values = dict.fromkeys(case_measures(), NAN)
        values.update(precision=p.precision, tumour_precision=p.tumour_precision)
        rows.append(CaseQualityRow(name, p.method, p.class_name, values))
    return tuple(rows)


def write_trust(trust: CaseTrust, folder: str | Path, case: str | None = None) -> dict[str, str | list[str]]:
    """Write one case's measures into ``folder`` as ``segxai trust`` does; returns the files written, by kind.

    ``quality.csv`` (one :class:`CaseQualityRow` per method and class), then per measure run:
    ``sanity.csv``, ``sanity_verdicts.csv`` and ``sanity.png`` (randomisation), ``metrics.csv`` and
    ``deletion.png`` (quality metrics), ``data_randomisation.csv``, and the ground-truth tables.
    Every file is written to a temporary name and renamed, so a failure leaves no partial file.
    """
    from .plots import deletion_plot, randomisation_plot

    folder = Path(folder)
    files: dict[str, str | list[str]] = {"quality": str(write_csv(quality_rows(trust, case), folder / "quality.csv"))}
    if trust.sanity is not None:
        files["sanity"] = str(trust.sanity.to_csv(folder / "sanity.csv"))
        files["sanity_verdicts"] = str(write_csv(trust.sanity.verdicts(), folder / "sanity_verdicts.csv"))
        files["sanity_plot"] = str(randomisation_plot(trust.sanity, folder / "sanity.png"))
    if trust.quality is not None:
        files["metrics"] = str(trust.quality.to_csv(folder / "metrics.csv"))
        if trust.quality.curves:
            files["deletion_plot"] = str(deletion_plot(trust.quality, folder / "deletion.png"))
    if trust.data is not None:
        files["data_randomisation"] = str(trust.data.to_csv(folder / "data_randomisation.csv"))
    if trust.truth is not None:
        files["groundtruth"] = [str(p) for p in trust.truth.to_csv(folder)]
    return files


def quality_summary(rows: Sequence[CaseQualityRow]) -> list[SummaryRow]:
    """Mean, sample SD and count of every measure per method, over the cases and classes of ``rows`` (nan left out)."""
    return summarise(rows, ("method",), case_measures())
