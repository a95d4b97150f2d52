"""The indexed TracIn engine: training gradients per checkpoint and class region, computed once and stored.

The index file lives beside the checkpoints (``<model>/training/influence/``), or in the user
cache folder when that folder cannot be written (an installed package); a current index shipped
beside the checkpoints is read from there even then. Its name encodes the settings; inside, a
fingerprint of the checkpoint and weight files' bytes, learning rates, layers, projection,
threshold, margin, classes, training seeds and generator version (no file paths) says whether it
is still valid. A stale index is rebuilt, never used. Gradient rows are stored as float16, each
row scaled to a largest entry of 1 with its float32 scale kept beside it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..io.files import atomic_path, file_digest, write_text
from ..progress import CancelFn, ProgressFn, step
from .checkpoints import TracInModel
from .projection import PROJECTION_SEED, sketch
from .rows import gradient_rows
from .scoring import common_modes, remove_common_modes, scored
from .regions import DEFAULT_MARGIN
from .training_set import check_generator

INDEX_FORMAT = "segxai-influence-index/2"  # 2: projected rows are a CountSketch (was Gaussian)
#: Version of the per-class-region loss (docs/influence.md); a change makes every index stale.
LOSS_VERSION = 1
#: Gradients with at most this many entries are stored exactly; longer ones are projected.
EXACT_LIMIT = 16384
#: Projection size (CountSketch buckets) used for longer gradients when none is asked for.
DEFAULT_PROJECTION = 2048
#: How gradient rows are stored (with one float32 scale per row; see :func:`compress_rows`).
STORED_DTYPE = np.float16
def resolve_projection(parameters: int, projection: Optional[int]) -> Optional[int]:
    """The projection size an index uses: None (exact) for short gradients unless asked, else the default or ``projection``."""
    if projection is None:
        return None if parameters <= EXACT_LIMIT else DEFAULT_PROJECTION
    projection = int(projection)
    if projection < 0:
        raise ValueError(f"The projection size must be positive (or 0 for none), got {projection}.")
    if projection == 0 or projection >= parameters:
        return None
    return projection


def compress_rows(gradients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., d) float rows -> (STORED_DTYPE rows scaled to a largest absolute entry of 1, float32 scales (...))."""
    gradients = np.asarray(gradients, dtype=np.float32)
    scales = np.abs(gradients).max(axis=-1)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    return (gradients / safe[..., None]).astype(STORED_DTYPE), scales.astype(np.float32)


@dataclass(eq=False)
class InfluenceIndex:
    """Stored training gradients (T, N, K, d) with where each training region lies."""

    path: Path
    gradients: np.ndarray          # (T, N, K, d) rows scaled by 1 / ``scales`` (float16), projected when ``projection``
    learning_rates: tuple[float, ...]
    projection: Optional[int]
    projection_seed: int
    parameters: int
    case_names: tuple[str, ...]
    seeds: tuple[int, ...]
    voxels: np.ndarray             # (N, K)
    centroids: np.ndarray          # (N, K, 3)
    bboxes: np.ndarray             # (N, K, 3, 2)
    scales: Optional[np.ndarray] = None     # (T, N, K) float32: a stored row times its scale is the gradient
    features: Optional[np.ndarray] = None   # (N, K, F) last-hidden-layer features of each region
    meta: dict = field(default_factory=dict)
    built: bool = False
    build_seconds: float = 0.0

    def scores(self, test_gradients: torch.Tensor, scoring: str = "raw") -> np.ndarray:
        """(K_test, N, K) TracIn scores (``scoring``, core.influence.scoring) of (T, K_test, D) test gradients."""
        t, k_test, d = test_gradients.shape
        if d != self.parameters or t != self.gradients.shape[0]:
            raise ValueError(f"Test gradients ({t} checkpoints x {d} parameters) do not fit the index ({self.gradients.shape[0]} x {self.parameters}).")
        test = test_gradients.float()
        if self.projection:
            test = sketch(test.reshape(t * k_test, d), self.projection, self.projection_seed).reshape(t, k_test, -1)
        test = test.double()
        if scoring == "specific":
            mean, directions, train = self._specific_rows
            test = remove_common_modes(test, mean, directions)
            products = torch.einsum("tad,tnbd->tanb", test, train)
            return scored(products, self.learning_rates, test.norm(dim=-1), train.norm(dim=-1), scoring).numpy()
        train = torch.from_numpy(self.gradients).double()
        products = torch.einsum("tad,tnbd->tanb", test, train)
        if self.scales is not None:
            products = products * torch.from_numpy(self.scales).double()[:, None]
        return scored(products, self.learning_rates, test.norm(dim=-1), self.norms(), scoring).numpy()

    @functools.cached_property
    def _specific_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The common modes of the non-empty training regions and their rows without them (empty regions stay 0), computed once."""
        rows = torch.from_numpy(self.training_gradients()).double()           # (T, N, K, d)
        present = torch.from_numpy(self.voxels > 0)
        mean, directions = common_modes(rows[:, present])
        return mean, directions, remove_common_modes(rows, mean, directions) * present[None, :, :, None]

    @functools.cached_property
    def _norms(self) -> torch.Tensor:
        norms = torch.from_numpy(self.gradients).float().norm(dim=-1).double()
        return norms * torch.from_numpy(self.scales).double() if self.scales is not None else norms

    def norms(self) -> torch.Tensor:
        """(T, N, K) float64 norms of the stored training gradients (scales applied), computed once."""
        return self._norms

    def training_gradients(self) -> np.ndarray:
        """(T, N, K, d) float32 training gradients (projected when ``projection``) as stored, scales applied."""
        rows = self.gradients.astype(np.float32)
        return rows if self.scales is None else rows * self.scales[..., None]

    @property
    def nbytes(self) -> int:
        """Size of the stored gradients (and their scales) in bytes."""
        return int(self.gradients.nbytes) + (0 if self.scales is None else int(self.scales.nbytes))


# --------------------------------------------------------------------------- identity


def index_settings(model: TracInModel, class_indices: Sequence[int], *, threshold: float, projection: Optional[int],
                   margin: int) -> dict:
    """What an index depends on, besides the contents of the weight files."""
    record = model.record
    return {
        "format": INDEX_FORMAT, "loss_version": LOSS_VERSION, "layers": model.layers, "last_k": model.last_k,
        "layer_names": list(model.layer_names), "parameters": model.parameters, "feature_layer": model.feature_layer,
        "projection": projection, "projection_seed": PROJECTION_SEED if projection else None,
        "projection_method": "countsketch" if projection else None,
        "threshold": float(threshold), "margin": int(margin), "classes": [model.card.class_names[i] for i in class_indices],
        "class_indices": [int(i) for i in class_indices], **record.fingerprint(), "architecture": record.architecture,
        "kwargs": record.kwargs, "activation": model.card.activation, "spatial_dims": model.card.spatial_dims,
        "slice_axis": model.card.slice_axis, "preprocessing": [model.card.orientation, model.card.spacing,
                                                              model.card.spacing_policy, model.card.normalization],
        "inference": [model.card.roi_size, model.card.overlap, model.card.mode]
        + ([list(model.card.mirror_axes)] if model.card.mirror_axes else []),  # mirroring moves the regions
    }


def fingerprint(model: TracInModel, settings: dict) -> str:
    """SHA-256 of the settings, every checkpoint file, its learning rate and the final weights that define the regions."""
    files = [[file_digest(c.path), c.lr] for c in model.record.checkpoints]
    payload = {"settings": settings, "checkpoints": files, "weights": file_digest(Path(model.card.weights))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def shipped_folder(model: TracInModel) -> Path:
    """The folder beside the checkpoints, where a model (the bundled demo, say) ships its index."""
    return model.record.folder / "influence"


def index_folder(model: TracInModel, index_dir=None) -> Path:
    """Where a built index is written: ``index_dir``, else beside the checkpoints, else (installed or read-only model) the user cache."""
    if index_dir is not None:
        return Path(index_dir).expanduser()
    beside = shipped_folder(model)
    if _writable(beside) and not _installed(beside):
        return beside
    from ..io.cache import cache_dir

    key = hashlib.sha256(str(model.record.manifest).encode()).hexdigest()[:16]
    return cache_dir() / "influence" / key


def _installed(folder: Path) -> bool:
    """Whether ``folder`` lies inside an installed package (site-packages), where no package manager expects new files."""
    return any(part in ("site-packages", "dist-packages") for part in Path(folder).resolve().parts)


def _writable(folder: Path) -> bool:
    """Whether ``folder`` exists and can be written, or can be created."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def index_name(model: TracInModel, settings: dict) -> str:
    """The index file's name for these settings (the settings' hash names it)."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"index-{model.layers}-{key}.npz"


def index_path(model: TracInModel, settings: dict, index_dir=None) -> Path:
    """Where a built index for these settings is written."""
    return index_folder(model, index_dir) / index_name(model, settings)


# --------------------------------------------------------------------------- build, save, load


def build_index(model: TracInModel, class_indices: Sequence[int], *, threshold: float = 0.5,
                projection: Optional[int] = None, margin: int = DEFAULT_MARGIN, index_dir=None,
                scheduler: Optional[str] = None, workers: Optional[int] = None, distributed: bool = False,
                progress: Optional[ProgressFn] = None, should_cancel: Optional[CancelFn] = None) -> InfluenceIndex:
    """Compute the training gradients of every case, checkpoint and class region, and save the index atomically.

    In this process by default; on dask workers when ``distributed`` (a LocalCluster of ``workers``)
    or a ``scheduler`` address is given.
    """
    check_generator(model.record)
    start = time.perf_counter()
    projection = resolve_projection(model.parameters, projection)
    settings = index_settings(model, class_indices, threshold=threshold, projection=projection, margin=margin)
    seeds = list(model.record.seeds)
    if distributed or scheduler:
        from .distributed import build_rows_distributed

        path = index_path(model, settings, index_dir)
        parts = path.with_name(path.stem + ".parts")  # finished chunks: a killed build resumes from them
        rows = build_rows_distributed(model, class_indices, threshold=threshold, projection=projection, margin=margin,
                                      scheduler=scheduler, workers=workers, progress=progress, should_cancel=should_cancel,
                                      parts=parts, settings_key=fingerprint(model, settings))
    else:
        step(0, len(seeds), progress, should_cancel)
        rows = gradient_rows(model, seeds, class_indices, threshold=threshold, projection=projection, margin=margin,
                             progress=progress, should_cancel=should_cancel, total=len(seeds))
    seconds = time.perf_counter() - start
    stored, scales = compress_rows(rows["gradients"])
    meta = {"settings": settings, "fingerprint": fingerprint(model, settings), "learning_rates": list(model.learning_rates),
            "checkpoints": [os.path.relpath(c.path, model.record.folder) for c in model.record.checkpoints],
            "stored_dtype": np.dtype(STORED_DTYPE).name, "case_names": rows["names"],
            "build_seconds": round(seconds, 2), "built_with": "dask" if (distributed or scheduler) else "in-process",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    index = InfluenceIndex(
        path=index_path(model, settings, index_dir), gradients=stored, scales=scales, learning_rates=model.learning_rates,
        projection=projection, projection_seed=PROJECTION_SEED, parameters=model.parameters,
        case_names=tuple(rows["names"]), seeds=tuple(rows["seeds"]), voxels=rows["voxels"], centroids=rows["centroids"],
        bboxes=rows["bboxes"], features=rows["features"], meta=meta, built=True, build_seconds=seconds,
    )
    save_index(index)
    if distributed or scheduler:
        import shutil

        shutil.rmtree(parts, ignore_errors=True)
    return index


def save_index(index: InfluenceIndex) -> Path:
    """Write ``index`` atomically (a self-ignoring folder keeps it out of version control)."""
    folder = index.path.parent
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / ".gitignore").exists():
        write_text(folder / ".gitignore", "# TracIn indexes are rebuilt on demand (segxai influence)\n*\n")
    arrays = {} if index.scales is None else {"scales": index.scales}
    with atomic_path(index.path, suffix=".npz") as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, gradients=index.gradients, voxels=index.voxels, centroids=index.centroids,
                     bboxes=index.bboxes, seeds=np.asarray(index.seeds, dtype=np.int64), features=index.features,
                     meta=np.frombuffer(json.dumps(index.meta).encode(), dtype=np.uint8), **arrays)
    return index.path


def read_index(path: str | Path) -> InfluenceIndex:
    """An index read back from its file (ValueError when it is not one)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k: data[k] for k in ("gradients", "voxels", "centroids", "bboxes", "seeds", "features")}
            arrays["scales"] = data["scales"] if "scales" in data.files else None  # float32 rows have none
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a readable TracIn index ({err}); delete it to rebuild.") from err
    if meta.get("settings", {}).get("format") != INDEX_FORMAT:
        raise ValueError(f"{path} is not a {INDEX_FORMAT} file; delete it to rebuild.")
    settings = meta["settings"]
    return InfluenceIndex(
        path=path, gradients=arrays["gradients"], learning_rates=tuple(meta["learning_rates"]),
        projection=settings["projection"], projection_seed=settings["projection_seed"] or PROJECTION_SEED,
        parameters=int(settings["parameters"]), case_names=tuple(meta["case_names"]),
        seeds=tuple(int(s) for s in arrays["seeds"]), voxels=arrays["voxels"], centroids=arrays["centroids"],
        bboxes=arrays["bboxes"], scales=arrays["scales"], features=arrays["features"], meta=meta,
        build_seconds=float(meta.get("build_seconds", 0.0)),
    )


def _read_meta(path: Path) -> Optional[dict]:
    """The metadata of an index file without its arrays (None when it is not a readable index)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(bytes(data["meta"]).decode())
    except (OSError, ValueError, KeyError):
        return None


def index_status(model: TracInModel, class_indices: Sequence[int], *, threshold: float = 0.5,
                 projection: Optional[int] = None, margin: int = DEFAULT_MARGIN, index_dir=None) -> tuple[Path, str]:
    """Where the index for these settings is and whether it is ``current``, ``stale`` or ``missing``.

    A current index beside the checkpoints (shipped with the model) is used even where new ones go
    to the user cache; otherwise the path is where a build would write.
    """
    projection = resolve_projection(model.parameters, projection)
    settings = index_settings(model, class_indices, threshold=threshold, projection=projection, margin=margin)
    target = index_path(model, settings, index_dir)
    candidates = [target] if index_dir is not None else [shipped_folder(model) / target.name, target]
    present = [path for path in dict.fromkeys(candidates) if path.is_file()]
    expected = fingerprint(model, settings) if present else None
    for path in present:
        meta = _read_meta(path) or {}
        if meta.get("settings", {}).get("format") == INDEX_FORMAT and meta.get("fingerprint") == expected:
            return path, "current"
    return target, "stale" if present else "missing"


#: A training set of files with at least this many cases builds its index on a local dask cluster unless told
#: otherwise (fewer: starting the workers costs more than they save).
CLUSTER_FROM_CASES = 32


def on_a_cluster_by_default(record) -> bool:
    """Whether an index of this training set is built on a local dask cluster when no ``workers`` are given."""
    from .training_set import FILES

    return record.kind == FILES and len(record.cases) >= CLUSTER_FROM_CASES


def load_or_build_index(model: TracInModel, class_indices: Sequence[int], *, threshold: float = 0.5,
                        projection: Optional[int] = None, margin: int = DEFAULT_MARGIN, index_dir=None,
                        scheduler: Optional[str] = None, workers: Optional[int] = None, rebuild: bool = False,
                        progress: Optional[ProgressFn] = None, should_cancel: Optional[CancelFn] = None) -> InfluenceIndex:
    """The current index for these settings: read from disk, or built (and saved) when missing or stale."""
    path, status = index_status(model, class_indices, threshold=threshold, projection=projection, margin=margin,
                                index_dir=index_dir)
    if status == "current" and not rebuild:
        index = read_index(path)
        index.meta["status"] = "current"
        return index
    index = build_index(model, class_indices, threshold=threshold, projection=projection, margin=margin,
                        index_dir=index_dir, scheduler=scheduler, workers=workers,
                        distributed=bool(scheduler) or bool(workers) or on_a_cluster_by_default(model.record),
                        progress=progress, should_cancel=should_cancel)
    index.meta["status"] = "rebuilt (stale)" if status == "stale" else ("rebuilt" if rebuild else "built")
    return index
