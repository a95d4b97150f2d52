"""Each channel's strongest-responding input patches over the training set, when the model card has a training record.

A few training cases (``cases``, 4 by default) are taken evenly spaced along the record's case list, so the same
model always searches the same ones; each is regenerated or read by the training record's own
:func:`~napari_segxai.core.influence.training_set.training_case` (generated cases are cached on disk). On each,
the layer's feature maps are computed as on the current case (:func:`.features.feature_maps`, the same sliding
pass) and each channel's strongest separate responses are picked (:func:`.filters.strongest_patches`); over all
the searched cases a channel keeps its ``count`` strongest, each labelled with its training case.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .. import progress as _progress
from ..model.card import build_network
from ..model.device import pick_device
from ..model.preprocess import channel_indices
from .features import MAP_BUDGET_BYTES, feature_maps
from .filters import Patch, strongest_patches

#: Training cases searched by default.
DEFAULT_TRAINING_CASES = 4
#: Units of progress per training case (its sliding pass reports within them).
_UNITS = 100


@dataclass(frozen=True, eq=False)
class TrainingPatches:
    """The strongest patches of some channels of one layer over a few training cases."""

    layer: str
    channels: tuple[int, ...]
    cases: tuple[str, ...]                  # the training cases searched, in order
    patches: dict[int, tuple[Patch, ...]]   # channel -> its strongest patches over those cases (``Patch.case`` set)
    maxima: np.ndarray                      # (len(channels), len(cases)) each channel's largest response in each case
    note: str = ""                          # which training cases were skipped because their files are not here

    def describe(self) -> str:
        """One line: layer, cases searched and where each channel responds most (and what was skipped)."""
        best = ", ".join(f"channel {c} in {self.patches[c][0].case} ({self.patches[c][0].response:.3g})"
                         for c in self.channels if self.patches[c])
        line = f"{self.layer} over {len(self.cases)} training case(s) ({', '.join(self.cases)}): strongest {best}"
        return f"{line}. {self.note}" if self.note else line

    def record(self) -> dict:
        """The cases searched and every patch (case, centre on that case's grid, response) as plain JSON."""
        return {"layer": self.layer, "cases": list(self.cases), "channels": {
            str(c): {"maxima": {name: round(float(v), 6) for name, v in zip(self.cases, self.maxima[i])},
                     "patches": [{"case": p.case, "centre": list(p.centre), "response": round(p.response, 6)}
                                 for p in self.patches[c]]}
            for i, c in enumerate(self.channels)}}


def training_keys(card, cases: int = DEFAULT_TRAINING_CASES) -> tuple[int, ...]:
    """The keys of the ``cases`` training cases searched: evenly spaced along the training record's case list."""
    from ..influence.training_set import NoTrainingRecord, training_record

    if cases < 1:
        raise ValueError(f"Search at least one training case for strongest patches, not {cases}.")
    try:
        keys = training_record(card).seeds
    except NoTrainingRecord as err:
        raise ValueError(
            f"Model {card.name} has no training record, so its training cases are unknown and the strongest patches "
            "can only come from the current case; train it with `segxai train` (or give a card whose 'training' "
            "names its training manifest) to search its training set."
        ) from err
    take = min(int(cases), len(keys))
    return tuple(keys[i * len(keys) // take] for i in range(take))


def training_patches(
    card,
    layer: str,
    channels: Sequence[int],
    *,
    cases: int = DEFAULT_TRAINING_CASES,
    count: int = 6,
    size: int = 16,
    network: Optional[torch.nn.Module] = None,
    device=None,
    budget_bytes: int = MAP_BUDGET_BYTES,
    progress: Optional[_progress.ProgressFn] = None,
    should_cancel: Optional[_progress.CancelFn] = None,
) -> TrainingPatches:
    """The ``count`` strongest patches of each of ``channels`` of ``layer`` over ``cases`` training cases of ``card``.

    ValueError (in a sentence) when the card has no training record. ``progress`` counts the cases' sliding
    passes; ``should_cancel`` is heard inside each.
    """
    from ..influence.training_set import TrainingCaseUnavailable, training_case

    if not channels:
        raise ValueError("Name at least one channel whose strongest training patches to find.")
    keys = training_keys(card, cases)
    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    total = len(keys) * _UNITS
    names: list[str] = []
    found: dict[int, list[Patch]] = {int(c): [] for c in channels}
    maxima = np.full((len(channels), len(keys)), np.nan)
    searched: list[int] = []
    missing: list[str] = []
    for k, key in enumerate(keys):
        _progress.step(k * _UNITS, total, progress, should_cancel)
        try:
            case = training_case(card, key)
        except TrainingCaseUnavailable as err:  # a dataset case whose files are not on this machine
            missing.append(str(err))
            continue
        names.append(case.name)
        searched.append(k)

        def within(done: int, of: int, k=k) -> None:
            _progress.step(k * _UNITS + int(_UNITS * done / max(of, 1)), total, progress, None)

        maps = feature_maps(case, card, layer, network=network, device=device, channels=list(channels),
                            budget_bytes=budget_bytes, progress=within if progress else None,
                            should_cancel=should_cancel)
        image = np.asarray(case.channels)[channel_indices(case, card)].astype(np.float32)
        for i, channel in enumerate(maps.channels):
            maxima[i, k] = float(np.nanmax(maps.maps[i]))
            found[channel] += [dataclasses.replace(p, case=case.name)
                               for p in strongest_patches(maps.maps[i], image, channel, count=count, size=size)]
    _progress.step(total, total, progress, None)
    strongest = {c: tuple(sorted(patches, key=lambda p: -p.response)[:count]) for c, patches in found.items()}
    if not names:
        raise ValueError(f"None of the {len(keys)} training case(s) could be read here: {missing[0]}")
    note = f"Skipped {len(missing)} training case(s) whose files are not here: {missing[0]}" if missing else ""
    return TrainingPatches(layer=layer, channels=tuple(int(c) for c in channels), cases=tuple(names),
                           patches=strongest, maxima=maxima[:, searched], note=note)
