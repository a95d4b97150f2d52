"""The trust verdict of one model and method, measured once and shown beside every map it makes.

A relevance map is worth what it is measured to be worth. :func:`measure_verdict` runs the two
checks that say the most for their cost on one case: model parameter randomisation (cascading,
Adebayo et al. 2018: does the map change when the learned weights are destroyed? it passes when
the Spearman correlation with the fully randomised network's map is below 0.5 for every class) and
faithfulness correlation (does removing what the map calls relevant change the output?). The
verdict is cached under the user cache folder, keyed by the SHA-256 of the model's weights, so it
is measured once per model and method, whatever case or folder it was measured from;
``segxai trust`` stores what it measured there too.

:func:`badge` is the verdict in a few words ("randomisation passed · faithfulness 0.41"), or
"not checked" before it is measured.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from .. import progress as _progress
from ..io.cache import cache_dir
from ..io.files import file_digest, write_text

if TYPE_CHECKING:
    from ..case import Case
    from ..model.card import ModelCard
    from .assess import CaseTrust

NOT_CHECKED = "not checked"
#: Cascading randomisation depths of a verdict (fewer than ``segxai trust``'s 8: the verdict needs only the deepest).
VERDICT_STEPS = 2


@dataclass(frozen=True)
class Verdict:
    """What was measured for one model (by its weights' digest) and method, on which case, and when."""

    method: str
    weights_sha256: str
    passes_randomisation: bool
    randomisation_spearman: float   # the largest over classes, once every layer is randomised
    faithfulness: float             # the mean over classes (nan when not measured)
    measured_on: str                # the case's name (a pseudonym for DICOM studies)
    created: str

    def badge(self) -> str:
        """The verdict in a few words."""
        sanity = ("randomisation passed" if self.passes_randomisation
                  else f"FAILS randomisation (Spearman {self.randomisation_spearman:.2f})")
        faithful = "" if math.isnan(self.faithfulness) else f" · faithfulness {self.faithfulness:.2f}"
        return sanity + faithful

    def sentence(self) -> str:
        """The verdict with what it means, for a report or a terminal."""
        meaning = ("the map depends on what the model learned" if self.passes_randomisation else
                   "the map barely changes when the model's weights are randomised, so it shows the input more "
                   "than the model's reasoning")
        return f"Trust of {self.method} for this model: {self.badge()} ({meaning}; measured on {self.measured_on}, {self.created[:10]})."


def model_digest(card: "ModelCard") -> str:
    """The SHA-256 of the model's weights (every member's, for an ensemble), which keys its verdicts."""
    paths = [Path(p) for p in card.fold_weights]
    if len(paths) == 1:
        return file_digest(paths[0])
    import hashlib

    return hashlib.sha256("".join(file_digest(p) for p in paths).encode()).hexdigest()


def verdict_path(digest: str, method: str) -> Path:
    """Where the verdict of a model (by digest) and method is cached."""
    return cache_dir() / "trust" / digest[:16] / f"{method}.json"


def read_verdict(card: "ModelCard", method: str) -> Optional[Verdict]:
    """The cached verdict of ``card``'s model and ``method``, or None when it has not been measured (or is unreadable)."""
    path = verdict_path(model_digest(card), method)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Verdict(**{k: raw[k] for k in Verdict.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def badge(card: "ModelCard", method: str) -> str:
    """The cached verdict in a few words, or :data:`NOT_CHECKED`."""
    verdict = read_verdict(card, method)
    return NOT_CHECKED if verdict is None else verdict.badge()


def store_verdicts(trust: "CaseTrust", card: "ModelCard", case_name: str) -> list[Verdict]:
    """The verdicts a trust run measured (methods with a randomisation result), written to the cache."""
    if trust.sanity is None:
        return []
    digest = model_digest(card)
    faithful: dict[str, list[float]] = {}
    for row in trust.quality.rows if trust.quality is not None else ():
        value = float(row.values.get("faithfulness", math.nan))
        if not math.isnan(value):
            faithful.setdefault(row.method, []).append(value)
    written = []
    for method in trust.methods:
        rows = [v for v in trust.sanity.verdicts() if v.method == method]
        if not rows:
            continue
        scores = faithful.get(method, [])
        verdict = Verdict(method=method, weights_sha256=digest,
                          passes_randomisation=all(r.passes for r in rows),
                          randomisation_spearman=max(float(r.values["spearman"]) for r in rows),
                          faithfulness=sum(scores) / len(scores) if scores else math.nan,
                          measured_on=case_name,
                          created=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
        write_text(verdict_path(digest, method), json.dumps(asdict(verdict), indent=2) + "\n")
        written.append(verdict)
    return written


def measure_verdict(case: "Case", card: "ModelCard", methods: Sequence[str], *, device=None,
                    progress: _progress.ProgressFn | None = None,
                    should_cancel: _progress.CancelFn | None = None) -> list[Verdict]:
    """Measure and cache the verdict of each of ``methods`` for ``card``'s model on ``case`` (minutes on a CPU)."""
    return verdict_check(case, card, methods, device=device, progress=progress, should_cancel=should_cancel)[1]


def verdict_check(case: "Case", card: "ModelCard", methods: Sequence[str], *, device=None, network=None,
                  progress: _progress.ProgressFn | None = None,
                  should_cancel: _progress.CancelFn | None = None) -> tuple["CaseTrust", list[Verdict]]:
    """The verdict's measurements on ``case`` (for a Trust table) and the verdicts they gave, cached."""
    from .assess import TrustSettings, assess_case

    settings = TrustSettings(checks=("sanity", "metrics"), modes=("cascading",), max_steps=VERDICT_STEPS,
                             metrics=("faithfulness",))
    trust = assess_case(case, card, list(methods), settings=settings, device=device, network=network,
                        progress=progress, should_cancel=should_cancel)
    return trust, store_verdicts(trust, card, case.name)
