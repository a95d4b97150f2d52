"""``influence()``: TracIn proponents and opponents of a case's predicted class regions among the training cases."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from ..progress import CancelFn, ProgressFn
from .gradients import DEFAULT_LAST_K, DEFAULT_LAYERS
from .regions import DEFAULT_MARGIN, prepare_example
from .result import InfluenceResult
from .scoring import check_scoring
from .training_set import GENERATED

if TYPE_CHECKING:
    from ..case import Case
    from ..model.card import ModelCard

ENGINES = ("indexed", "exact")


def class_indices(card: ModelCard, names: Optional[Sequence[str]], what: str = "class") -> list[int]:
    """Output-channel indices of the named classes; all classes but background (label 0) when ``names`` is None."""
    if names is None:
        indices = [i for i, c in enumerate(card.classes) if c.label != 0]
        return indices or list(range(len(card.classes)))
    if isinstance(names, str):
        names = [names]
    known = card.class_names
    out = []
    for name in names:
        if name not in known:
            raise ValueError(f"Model {card.name} has no {what} {name!r}; choose from {', '.join(known)}.")
        if known.index(name) not in out:
            out.append(known.index(name))
    if not out:
        raise ValueError(f"No {what} was chosen; name at least one of {', '.join(known)}.")
    return out


def influence(
    case: Case,
    card: ModelCard,
    *,
    classes: Optional[Sequence[str]] = None,
    train_classes: Optional[Sequence[str]] = None,
    engine: str = "indexed",
    layers: str = DEFAULT_LAYERS,
    last_k: int = DEFAULT_LAST_K,
    threshold: float = 0.5,
    projection: Optional[int] = None,
    margin: int = DEFAULT_MARGIN,
    device: Optional[str] = "cpu",
    index_dir=None,
    scheduler: Optional[str] = None,
    workers: Optional[int] = None,
    rebuild: bool = False,
    scoring: Optional[str] = None,
    segmentation=None,
    within: Optional[np.ndarray] = None,
    model=None,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> InfluenceResult:
    """TracIn scores of each predicted class region of ``case`` against each class region of every training case.

    ``engine="exact"`` recomputes every training gradient; ``"indexed"`` reads them from an index file
    beside the checkpoints (built on first use, rebuilt when stale). ``scoring`` None is the engine's
    default (``specific`` indexed, ``relative`` exact; core.influence.scoring). A ``segmentation`` of the case
    by this card is reused for the regions; ``within`` (a boolean mask on the case's grid, e.g. the
    uncertain voxels) keeps only the part of each class region inside it. Raises
    :class:`NoTrainingRecord` when the card has no recorded checkpoints.
    """
    from .checkpoints import load_tracin_model
    from .exact import exact_influence

    start = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"Unknown TracIn engine {engine!r}; use one of {', '.join(ENGINES)}.")
    scoring = check_scoring(scoring, engine)
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"The confidence threshold must be in [0, 1), got {threshold}.")
    if engine == "exact" and projection:
        raise ValueError("The exact engine does not project gradients; drop projection or use the indexed engine.")
    test_indices = class_indices(card, classes)
    train_indices = class_indices(card, train_classes, "training class")
    if model is None:
        model = load_tracin_model(card, layers=layers, last_k=last_k, device=device)
    test = prepare_example(case, card, model.network, test_indices, threshold=threshold, target="prediction",
                           margin=margin, device=model.device, segmentation=segmentation, within=within)
    seeds = model.record.seeds
    details: dict = {}
    if engine == "exact":
        scores, examples, train_features = exact_influence(model, test, seeds, train_indices, threshold=threshold, margin=margin, scoring=scoring,
                                           progress=progress, should_cancel=should_cancel)
        centroids = np.stack([e.centroids for e in examples])
        bboxes = np.stack([e.bboxes for e in examples])
        voxels = np.stack([e.voxels for e in examples])
        names = tuple(e.name for e in examples)
        used_projection = None
    else:
        from .index import load_or_build_index

        index = load_or_build_index(model, train_indices, threshold=threshold, projection=projection, margin=margin,
                                    index_dir=index_dir, scheduler=scheduler, workers=workers,
                                    rebuild=rebuild, progress=progress, should_cancel=should_cancel)
        scores = index.scores(model.gradients(test), scoring)
        centroids, bboxes, voxels, names = index.centroids, index.bboxes, index.voxels, index.case_names
        train_features = index.features
        used_projection = index.projection
        details.update(index_path=str(index.path), index_status=index.meta.get("status"),
                       index_seconds=index.build_seconds, index_bytes=index.nbytes)
    from .features import cosine_similarity

    similarity = cosine_similarity(model.features(test), train_features)
    return InfluenceResult(
        test_classes=tuple(card.class_names[i] for i in test_indices),
        train_classes=tuple(card.class_names[i] for i in train_indices),
        scores=scores, training_cases=tuple(names), seeds=tuple(int(s) for s in seeds),
        centroids=centroids, bboxes=bboxes, train_voxels=voxels, test_voxels=test.voxels,
        engine=engine, layers=model.layers if model.layers != "last" else f"last {model.last_k}",
        layer_names=model.layer_names, projection=used_projection, threshold=float(threshold),
        checkpoints=tuple(str(c.path) for c in model.record.checkpoints), learning_rates=model.learning_rates,
        seconds=time.perf_counter() - start, case_name=case.name, parameters=model.parameters,
        key_name="seed" if model.record.kind == GENERATED else "case number", scoring=scoring,
        details={**details, "test_centroids": test.centroids.tolist(), "test_bboxes": test.bboxes.tolist(),
                 "feature_layer": model.feature_layer},
        similarity=similarity,
    )
