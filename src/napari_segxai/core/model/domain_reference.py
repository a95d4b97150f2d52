"""The training set as the domain check sees it: pooled network features, intensities, head and lesion volumes, a threshold.

A model trained with ``segxai train`` records its training cases. :func:`build_reference` runs the
final network over up to :data:`TRAINING_CASES` of them and keeps, per case, the deepest layer's
features (the module whose output is coarsest, most channels on a tie) averaged and maximised over
the head: ``2F`` numbers. A case's distance is the mean Euclidean distance to its :data:`NEIGHBOURS`
nearest training cases, each feature standardised by the training cases' spread, divided by
sqrt(2F). The threshold is :data:`THRESHOLD_MARGIN` times the largest distance of
:data:`CALIBRATION_CASES` held-out cases: generated ones with seeds from
``HELD_OUT_SEED_START`` (a generated training set), else each training case left out in turn.
Each training case's lesion is kept too, as three numbers of its label's non-background voxels: the
volume (mL), the volume of its largest connected part (mL) and the share of the volume in that
part (:func:`lesion_parts`). A segmentation whose lesion lies far outside theirs (none at all, for
a model that never saw a case without one; a largest part far smaller; a lesion scattered over
many parts where each training lesion was one mass) is a finding the model was not trained to make.
The reference also keeps how sure the model is of the lesions it predicts on :data:`CALIBRATION_CASES`
cases it did not train on (held-out generated cases when the training set was generated, in whole or
in part; else training cases, on which it is surer): the share of each predicted lesion whose lesion
probability is at least :data:`SURE` (:func:`lesion_confidence`, the maximum softmax probability of
Hendrycks and Gimpel, 2017, summed over the lesion classes). A lesion the model is sure of on far
less of it is, like an out-of-distribution input in their study, a finding it was not trained on.

The reference is saved as ``domain-<fingerprint>.npz`` beside the training manifest (shipped so
for the bundled model) or, when that folder is read-only, in the user cache folder; the
fingerprint covers the weights' bytes and :data:`REFERENCE_VERSION`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np
import torch

from ..progress import step
from .card import ModelCard
from .inference import outside_head, silent_voxels

if TYPE_CHECKING:
    from ..case import Case

#: Percentiles of each channel inside the head, after preprocessing, compared with the training cases'.
PERCENTILES = (1.0, 50.0, 99.0)
#: Changes to what the reference holds or how it is made make older files stale.
REFERENCE_VERSION = 4  # 2: training lesion volumes; 3: their largest parts; 4: lesion confidence
#: Training cases the reference summarises (evenly spaced through the training set).
TRAINING_CASES = 48
#: Held-out cases the threshold is calibrated on.
CALIBRATION_CASES = 10
#: Neighbours the k-NN distance averages over.
NEIGHBOURS = 5
#: The threshold is this many times the largest held-out distance.
THRESHOLD_MARGIN = 1.1
#: A predicted lesion voxel is one the model is sure of at this lesion probability or more.
SURE = 0.9


@dataclass(frozen=True, eq=False)
class DomainReference:
    """Training cases' pooled features (N, D), preprocessed intensity percentiles (N, C, P), head and lesion volumes (N,) in mL.

    ``largest`` (N,) is the volume (mL) of each training lesion's largest connected part, ``focality``
    (N,) the share of the lesion in that part; all three lesion arrays are NaN for unlabelled cases.
    ``confidence`` (M,) is :func:`lesion_confidence` of the model's segmentation of each calibration case
    (NaN where it predicted no lesion); empty in references made before it was kept.
    """

    features: np.ndarray
    percentiles: np.ndarray
    volumes: np.ndarray
    lesions: np.ndarray
    largest: np.ndarray
    focality: np.ndarray
    calibration: np.ndarray  # held-out cases' distances
    threshold: float
    layer: str
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def distance(self, features: np.ndarray) -> float:
        """Mean standardised Euclidean distance (per sqrt feature) of ``features`` to the nearest training cases."""
        return float(knn_distances(self.features, np.asarray(features)[None])[0])

    def save(self, path: Path) -> Path:
        from ..io.files import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, features=self.features, percentiles=self.percentiles, volumes=self.volumes,
                         lesions=self.lesions, largest=self.largest, focality=self.focality,
                         calibration=self.calibration, threshold=np.float64(self.threshold),
                         layer=np.frombuffer(self.layer.encode(), dtype=np.uint8), confidence=self.confidence)
        return path

    @classmethod
    def load(cls, path: Path) -> "DomainReference":
        with np.load(path, allow_pickle=False) as data:
            return cls(features=data["features"], percentiles=data["percentiles"], volumes=data["volumes"],
                       lesions=data["lesions"], largest=data["largest"], focality=data["focality"],
                       calibration=data["calibration"], threshold=float(data["threshold"]),
                       layer=bytes(data["layer"]).decode(),
                       confidence=data["confidence"] if "confidence" in data.files else np.zeros(0))


def knn_distances(train: np.ndarray, queries: np.ndarray, *, leave_out_self: bool = False) -> np.ndarray:
    """(Q,) mean distance of each query (Q, D) to its NEIGHBOURS nearest rows of ``train`` (N, D), standardised."""
    train = np.asarray(train, dtype=np.float64)
    mean, spread = train.mean(axis=0), train.std(axis=0)
    spread = spread + 0.1 * float(np.median(spread)) + 1e-6
    a, b = (train - mean) / spread, (np.asarray(queries, dtype=np.float64) - mean) / spread
    distances = np.sqrt(((b[:, None, :] - a[None]) ** 2).sum(-1)) / np.sqrt(a.shape[1])  # (Q, N)
    if leave_out_self:
        np.fill_diagonal(distances, np.inf)
    k = max(1, min(NEIGHBOURS, a.shape[0] - int(leave_out_self)))
    return np.sort(distances, axis=1)[:, :k].mean(axis=1)


def deepest_layer(network: torch.nn.Module, card: ModelCard, device) -> str:
    """The parametrised leaf module with the coarsest output (most channels on a tie, the last of those)."""
    outputs: list[tuple[int, int, int, str]] = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: outputs.append((int(np.prod(o.shape[2:])), -int(o.shape[1]),
                                                                          -len(outputs), n)))
             for n, m in network.named_modules()
             if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.inference_mode():
            network(torch.zeros((1, len(card.modalities), *card.roi_size), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    if not outputs:
        raise ValueError(f"The network of model {card.name} has no parametrised layers to take features from.")
    return min(outputs)[3]


def pooled_features(network: torch.nn.Module, image: torch.Tensor, card: ModelCard, layer: str) -> np.ndarray:
    """(2F,) mean and maximum of ``layer``'s output features over the head of a preprocessed (1, C, *grid) image."""
    head = ~silent_voxels(image[0])
    if head.any():  # the head's box, so that the case's field of view does not count
        box = [torch.nonzero(head.any(dim=tuple(d for d in range(head.ndim) if d != axis))).flatten()
               for axis in range(head.ndim)]
        region = tuple(slice(int(b[0]), int(b[-1]) + 1) for b in box)
        image, head = image[(slice(None), slice(None)) + region], head[region]
    if card.spatial_dims == 2:  # slice-wise: slices become the batch
        axis = 2 + int(card.slice_axis)
        image, head = image.movedim(axis, 0)[:, 0], head.movedim(axis - 2, 0)
    else:
        head = head[None]
    multiple = 2 ** 4  # pads to a size every stride-2 encoder of up to 4 levels divides
    pad = [p for size in reversed(image.shape[2:]) for p in (0, (-size) % multiple)]
    image = torch.nn.functional.pad(image, pad)
    head = torch.nn.functional.pad(head.float(), pad)
    captured: list[torch.Tensor] = []
    handle = dict(network.named_modules())[layer].register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    try:
        network(image)
    finally:
        handle.remove()
    features = captured[-1].float()                                          # (B, F, *coarse)
    inside = torch.nn.functional.interpolate(head[:, None], size=features.shape[2:], mode="area")[:, 0] >= 0.5
    if not inside.any():
        inside = torch.ones_like(inside)
    flat = features.movedim(1, -1)[inside]                                   # (V, F)
    return torch.cat([flat.mean(0), flat.max(0).values]).cpu().numpy().astype(np.float32)


def intensity_percentiles(image: torch.Tensor) -> np.ndarray:
    """(C, P) percentiles of each channel of a preprocessed (1, C, *grid) image inside the head."""
    head = ~silent_voxels(image[0])
    out = np.zeros((image.shape[1], len(PERCENTILES)), dtype=np.float32)
    if head.any():
        for c, channel in enumerate(image[0]):
            out[c] = np.percentile(channel[head].float().cpu().numpy(), PERCENTILES)
    return out


def head_volume_ml(case: Case, card: ModelCard) -> tuple[float, float]:
    """The head's volume (mL) and share of the case's voxels: voxels with signal in some channel the card reads."""
    outside = outside_head(case, card)
    voxel_ml = abs(float(np.linalg.det(np.asarray(case.affine)[:3, :3]))) / 1000.0
    inside = int(outside.size - np.count_nonzero(outside))
    return inside * voxel_ml, inside / max(outside.size, 1)


def has_reference(card: ModelCard) -> bool:
    """Whether the model has a training record to build a domain reference from (native cards from ``segxai train``)."""
    return card.source is None and card.training is not None and Path(card.training).is_file()


def reference_paths(card: ModelCard) -> tuple[Path, Path]:
    """Where the reference is shipped (beside the training manifest) and cached (the user cache folder)."""
    import hashlib

    from ..io.cache import cache_dir
    from ..io.files import file_digest

    weights = Path(card.weights)
    key = hashlib.sha256(json.dumps([REFERENCE_VERSION, file_digest(weights) if weights.is_file() else str(weights),
                                     card.name]).encode()).hexdigest()[:12]
    name = f"domain-{key}.npz"
    return Path(card.training).parent / name, cache_dir() / "domain" / name


def domain_reference(card: ModelCard, *, network=None, device=None, progress=None) -> DomainReference:
    """The model's reference: shipped or cached when current, else built (:func:`build_reference`) and saved."""
    shipped, cached = reference_paths(card)
    for path in (shipped, cached):
        if path.is_file():
            return DomainReference.load(path)
    reference = build_reference(card, network=network, device=device, progress=progress)
    try:
        reference.save(shipped)
    except OSError:
        reference.save(cached)
    return reference


def build_reference(card: ModelCard, *, network=None, device=None, progress=None) -> DomainReference:
    """Run the network over the training cases and held-out cases; the reference with its calibrated threshold."""
    from ..influence.record import GENERATED
    from ..influence.training_set import training_case, training_record
    from ..training.evaluate import HELD_OUT_SEED_START
    from .card import build_network
    from .device import pick_device

    device = pick_device(device)
    network = build_network(card, device) if network is None else network.to(device).eval()
    record = training_record(card)
    keys = list(record.seeds)
    keys = [keys[int(i)] for i in np.unique(np.linspace(0, len(keys) - 1, min(TRAINING_CASES, len(keys))).round())]
    generated = record.kind == GENERATED
    generates = generated or any(c.seed is not None for c in record.cases)  # held-out cases can be made
    total = len(keys) + CALIBRATION_CASES
    layer = deepest_layer(network, card, device)
    rows = [case_summary(training_case(card, key), card, network, layer, device) for key in _stepped(keys, total, progress)]
    features = np.stack([r[0] for r in rows])
    if generates:
        from ..training.synth import generate_case

        seeds = range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + CALIBRATION_CASES)
        held_out = (generate_case(s, size=record.size).case for s in seeds)
    else:
        held_out = (training_case(card, key) for key in keys[:CALIBRATION_CASES])
    held_features, confidence = [], []
    for case in _stepped(held_out, total, progress, start=len(keys)):
        held_features.append(case_summary(case, card, network, layer, device)[0])
        confidence.append(segmented_confidence(case, card, network, device))
    if generated:
        calibration = knn_distances(features, np.stack(held_features))
    else:
        calibration = knn_distances(features, features, leave_out_self=True)
    step(total, total, progress, None)
    lesions = np.array([r[3] for r in rows])  # (N, 3)
    return DomainReference(features=features, percentiles=np.stack([r[1] for r in rows]),
                           volumes=np.array([r[2] for r in rows]), lesions=lesions[:, 0], largest=lesions[:, 1],
                           focality=lesions[:, 2], calibration=calibration,
                           threshold=THRESHOLD_MARGIN * float(calibration.max()), layer=layer,
                           confidence=np.array(confidence, dtype=np.float64))


def case_summary(case, card: ModelCard, network, layer: str, device) -> tuple[np.ndarray, np.ndarray, float, tuple]:
    """One case's pooled features, preprocessed intensity percentiles, head volume and labelled lesion's :func:`lesion_parts`."""
    from .preprocess import preprocess

    with torch.inference_mode():
        image, _ = preprocess(case, card, device=device)
        lesion = lesion_parts(case.label, case.affine)[:3] if case.label is not None else (float("nan"),) * 3
        return (pooled_features(network, image, card, layer), intensity_percentiles(image),
                head_volume_ml(case, card)[0], lesion)


def segmented_confidence(case, card: ModelCard, network, device) -> float:
    """:func:`lesion_confidence` of the model's segmentation of ``case``."""
    from .inference import segment

    seg = segment(case, card, network=network, device=device)
    return lesion_confidence(seg.probabilities, seg.labels, card.activation)


def lesion_confidence(probabilities: np.ndarray, labels: np.ndarray, activation: str) -> float:
    """The share of the predicted lesion (non-background ``labels``) whose lesion probability is at least
    :data:`SURE`: one minus the background's for softmax (K, *grid) probabilities, the largest region's for
    sigmoid; NaN without a lesion."""
    lesion = np.asarray(labels) != 0
    if not lesion.any():
        return float("nan")
    probabilities = np.asarray(probabilities)
    inside = probabilities[:, lesion]                                        # (K, V)
    sure = 1.0 - inside[0] if activation == "softmax" else inside.max(axis=0)
    return float(np.count_nonzero(sure >= SURE) / sure.size)


def lesion_parts(labels: np.ndarray, affine: np.ndarray) -> tuple[float, float, float, int]:
    """The lesion (non-background voxels of ``labels`` on the grid of ``affine``): volume (mL), its largest
    connected part's volume (mL, voxels touching by a face, edge or corner), that part's share of the
    volume (1 without a lesion) and the number of parts."""
    from scipy import ndimage

    voxel_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    lesion = np.asarray(labels) != 0
    parts, count = ndimage.label(lesion, ndimage.generate_binary_structure(lesion.ndim, lesion.ndim))
    if count == 0:
        return 0.0, 0.0, 1.0, 0
    sizes = np.bincount(parts.ravel())[1:]
    return float(sizes.sum()) * voxel_ml, float(sizes.max()) * voxel_ml, float(sizes.max() / sizes.sum()), int(count)


def _stepped(items, total: int, progress, start: int = 0):
    for i, item in enumerate(items):
        step(start + i, total, progress, None)
        yield item
