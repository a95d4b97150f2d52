"""nnU-Net v2 trained-model folders as models: recognised, read safely, fed and predicted as nnU-Net does.

An nnU-Net v2 trained-model folder (``nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration``)
holds ``plans.json``, ``dataset.json`` and ``fold_N/checkpoint_final.pth`` (and ``checkpoint_best.pth``).
:func:`nnunet_card` derives a :class:`~.card.ModelCard` from it: modalities from ``channel_names``,
classes from ``labels`` (regions for region-based training, with sigmoid outputs), the patch size
as the window and nnU-Net's tile step as the overlap. Everything nnU-Net defines is nnU-Net's own
code, from the installed ``nnunetv2``: the network from the plans, the preprocessing (transposition,
cropping to the non-zero box, per-channel normalisation, resampling), the sliding-window prediction
with Gaussian weighting and mirroring, the resampling back and the label conversion.

nnU-Net crops to the box around the non-zero voxels and writes background outside that box, but it
does not mask inside it: zero voxels between the head and the box's faces are predicted like any
other. :func:`.inference.segment` therefore applies its mask step (``remove_outside_head``) to this
source's labels and probabilities as to every other source's.

Checkpoints are pickles; they are read with ``weights_only=True`` (tensors, plain containers and
the numpy scalars nnU-Net logs), so one carrying anything else is refused until trusted. The
classes the plans name are imported only from ``torch.nn`` and ``dynamic_network_architectures``
unless the model is trusted.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from ..io.files import read_json_object
from ..progress import CancelFn, ProgressFn, cancel_inside, step
from .nnunet_grid import _IDENTITY_ORNT, NnunetGrid, _ornt_voxel_affine, _ras_ornt
from .preprocess import _reorient, channel_indices

if TYPE_CHECKING:
    from ...case import Case
    from .card import ModelCard


#: The checkpoints nnU-Net keeps, by the name ``--checkpoint`` takes.
CHECKPOINTS = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}

#: The reader/writers of plans.json whose arrays are the stored voxels with the axes reversed.
_STORED_ORDER_READERS = ("SimpleITKIO", "NibabelIO")
_REORIENTING_READERS = ("NibabelIOWithReorient",)

#: Module prefixes the plans may name classes from without the model being trusted.
_SAFE_IMPORTS = ("torch.nn.", "dynamic_network_architectures.")

#: nnU-Net's default tile step (a fraction of the patch): windows overlap by 1 - step.
TILE_STEP = 0.5


class NnunetModelError(ValueError):
    """An nnU-Net folder that cannot be used; the message names the folder and what is wrong."""


def is_nnunet_folder(path: str | Path) -> bool:
    """Whether ``path`` is an nnU-Net v2 trained-model folder or one of its ``fold_N`` folders."""
    path = Path(path)
    if not path.is_dir():
        return False
    if path.name.startswith("fold_") and (path.parent / "plans.json").is_file():
        return True
    return (path / "plans.json").is_file() and (path / "dataset.json").is_file()


def nnunet_imports():
    """The nnunetv2 modules this source uses, imported quietly (nnunetv2 prints about unset paths)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import nnunetv2
            from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
            from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    except ImportError as err:
        raise NnunetModelError(
            "This is an nnU-Net v2 model folder, and reading it needs the nnunetv2 package, which is not "
            f"installed ({err}); install it with: pip install 'napari-segxai[nnunet]'."
        ) from err
    return nnunetv2, PlansManager, nnUNetPredictor, convert_predicted_logits_to_segmentation_with_correct_shape


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise NnunetModelError(f"nnU-Net model folder {path.parent} has no {path.name}; give the folder that "
                               "nnUNetv2_train wrote (it holds plans.json, dataset.json and fold_N folders).")
    try:
        return read_json_object(path, what="nnU-Net's fields")
    except ValueError as err:
        raise NnunetModelError(str(err)) from None


@dataclass(frozen=True, eq=False)
class NnunetSource:
    """Where an nnU-Net model's files are and which of them to use."""

    folder: Path
    configuration: str
    folds: tuple[str, ...]
    checkpoint: str  # a key of CHECKPOINTS
    mirroring: bool
    plans: dict = field(repr=False)
    dataset_json: dict = field(repr=False)
    kind = "nnunet"

    @property
    def checkpoint_paths(self) -> tuple[Path, ...]:
        """One checkpoint file per fold, in fold order."""
        return tuple(self.folder / f"fold_{f}" / CHECKPOINTS[self.checkpoint] for f in self.folds)

    @cached_property
    def plans_manager(self):
        return nnunet_imports()[1](self.plans)

    @cached_property
    def configuration_manager(self):
        return self.plans_manager.get_configuration(self.configuration)

    @cached_property
    def label_manager(self):
        return self.plans_manager.get_label_manager(self.dataset_json)

    def settings(self) -> dict:
        """The ``source`` mapping of a card written for this model."""
        return {"kind": self.kind, "folder": str(self.folder), "configuration": self.configuration,
                "folds": [int(f) if f.isdigit() else f for f in self.folds], "checkpoint": self.checkpoint,
                "mirroring": self.mirroring}

    def mirror_axes(self, trusted: bool) -> Optional[tuple[int, ...]]:
        """The axes nnU-Net mirrors at inference (from the first checkpoint), or None when mirroring is off."""
        if not self.mirroring:
            return None
        axes = read_checkpoint(self.checkpoint_paths[0], trusted).get("inference_allowed_mirroring_axes")
        return None if axes is None else tuple(int(a) for a in axes)

    # --- the grid -------------------------------------------------------------------------------

    def preprocess(self, case: Case, card: ModelCard, *, device="cpu") -> tuple[torch.Tensor, "NnunetGrid"]:
        """nnU-Net's preprocessing of ``case``: the network input (1, C, *grid) and the grid to map back."""
        indices = channel_indices(case, card)
        reader = self.plans_manager.plans.get("image_reader_writer", "SimpleITKIO")
        if reader not in _STORED_ORDER_READERS + _REORIENTING_READERS:
            raise NnunetModelError(
                f"nnU-Net model {self.folder} reads its images with {reader}; napari-segxai feeds nnU-Net models "
                f"trained with {', '.join(_STORED_ORDER_READERS + _REORIENTING_READERS)} (3D medical images)."
            )
        ornt = _ras_ornt(case.affine) if reader in _REORIENTING_READERS else _IDENTITY_ORNT
        channels = np.asarray(case.channels)
        channels = channels if indices == list(range(channels.shape[0])) else channels[indices]
        data = _reorient(torch.from_numpy(channels), ornt).numpy()  # a view: nnU-Net's preprocessor copies
        affine = np.asarray(case.affine, dtype=np.float64) @ _ornt_voxel_affine(ornt, case.shape)
        spacing = [float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))][::-1]
        data = data.transpose(0, 3, 2, 1)  # x, y, z -> z, y, x: nnU-Net's (SimpleITK's) axis order
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        with contextlib.redirect_stdout(io.StringIO()):
            data, _, properties = preprocessor.run_case_npy(
                data, None, {"spacing": spacing}, self.plans_manager, self.configuration_manager, self.dataset_json)
        grid = NnunetGrid(case_shape=tuple(case.shape), case_affine=np.asarray(case.affine, dtype=np.float64),
                          orientation=ornt, reoriented_affine=affine, properties=properties,
                          transpose_forward=tuple(self.plans_manager.transpose_forward),
                          shape=tuple(int(s) for s in data.shape[1:]))
        return torch.from_numpy(np.ascontiguousarray(data)).to(device).unsqueeze(0), grid

    # --- prediction -----------------------------------------------------------------------------

    def predictor(self, network: torch.nn.Module, device: torch.device, card: ModelCard):
        """An ``nnUNetPredictor`` set up with ``network`` and this model's plans, as nnUNetv2_predict sets it up."""
        predictor_class = nnunet_imports()[2]
        with contextlib.redirect_stdout(io.StringIO()):
            predictor = predictor_class(tile_step_size=1.0 - card.overlap, use_gaussian=card.mode == "gaussian",
                                        use_mirroring=self.mirroring,
                                        perform_everything_on_device=device.type == "cuda", device=device,
                                        allow_tqdm=False)
        predictor.manual_initialization(network, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, "segxai", self.mirror_axes(card.trusted))
        return predictor

    def count_forwards(self, shape: Sequence[int], card: ModelCard) -> int:
        """Forward passes of one fold's sliding-window prediction over a grid of ``shape`` (as nnU-Net steps)."""
        from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

        patch = list(self.configuration_manager.patch_size)
        padded = [max(s, p) for s, p in zip(list(shape)[-len(patch):], patch)]
        steps = compute_steps_for_sliding_window(padded, patch, 1.0 - card.overlap)
        windows = math.prod(len(s) for s in steps) * (int(shape[0]) if len(patch) < len(shape) else 1)
        axes = self.mirror_axes(card.trusted) or ()
        return windows * 2 ** len(axes)

    def logits(self, image: torch.Tensor, card: ModelCard, network: Optional[torch.nn.Module] = None, *,
               progress=None, should_cancel=None) -> torch.Tensor:
        """nnU-Net's sliding-window logits (1, K, *grid), float32, of ``network`` (default: the card's folds).

        The folds of a :class:`~.card.FoldEnsemble` predict one after another and their half-precision
        logits are summed and divided as nnU-Net does.
        """
        from .card import build_network
        from .ensemble import ensemble_members

        members = ensemble_members(network if network is not None else build_network(card, image.device))
        counter = _Counter(self.count_forwards(image.shape[2:], card) * len(members), progress, should_cancel)
        total = None
        for member in members:
            predictor = self.predictor(_CountingNetwork(member, counter), image.device, card)
            with cancel_inside(member, should_cancel):
                fold = predictor.predict_sliding_window_return_logits(image[0]).to("cpu")
            total = fold if total is None else total + fold
        if len(members) > 1:
            total /= len(members)
        step(counter.total, counter.total, progress, None)
        return total.float().unsqueeze(0)

    def segment(self, case: Case, card: ModelCard, network: Optional[torch.nn.Module] = None, *, device,
                progress=None, should_cancel=None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (K, *case shape) and labels of ``case`` exactly as ``nnUNetv2_predict`` makes them."""
        convert = nnunet_imports()[3]
        image, grid = self.preprocess(case, card, device=device)
        with torch.inference_mode():
            logits = self.logits(image, card, network, progress=progress, should_cancel=should_cancel)[0]
            with contextlib.redirect_stdout(io.StringIO()):
                labels, probabilities = convert(logits.half(), self.plans_manager, self.configuration_manager,
                                                self.label_manager, grid.properties, return_probabilities=True,
                                                num_threads_torch=torch.get_num_threads())
        probabilities = grid.from_nnunet_order(np.asarray(probabilities, dtype=np.float32))
        labels = grid.from_nnunet_order(np.asarray(labels).astype(np.int16))
        return probabilities, labels


class _Counter:
    def __init__(self, total: int, progress: Optional[ProgressFn], should_cancel: Optional[CancelFn]):
        self.total, self.done, self.progress, self.should_cancel = max(total, 1), 0, progress, should_cancel

    def tick(self) -> None:
        step(min(self.done, self.total), self.total, self.progress, self.should_cancel)
        self.done += 1


class _CountingNetwork(torch.nn.Module):
    """The network, counting forward passes for the progress bar and stopping when cancelled."""

    def __init__(self, network: torch.nn.Module, counter: _Counter):
        super().__init__()
        self.network, self.counter = network, counter

    def forward(self, x):
        self.counter.tick()
        output = self.network(x)
        return output[0] if isinstance(output, (list, tuple)) else output


# --- reading the folder ---------------------------------------------------------------------------


def read_checkpoint(path: Path, trusted: bool) -> dict:
    """An nnU-Net checkpoint's dict, read safely (weights only unless ``trusted``); cached per file state."""
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise NnunetModelError(f"nnU-Net checkpoint {path} does not exist; train that fold or choose other folds "
                               "(--folds) or the other checkpoint (--checkpoint).")
    return _read_checkpoint(str(path), stat.st_mtime_ns, stat.st_size, trusted)


@lru_cache(maxsize=4)
def _read_checkpoint(path: str, mtime: int, size: int, trusted: bool) -> dict:
    from .weights import load_pickle

    raw = load_pickle(Path(path), trusted)
    if not isinstance(raw, dict) or not isinstance(raw.get("network_weights"), dict):
        raise NnunetModelError(f"{path} is not an nnU-Net checkpoint (it has no 'network_weights'); give the "
                               "checkpoint_final.pth or checkpoint_best.pth that nnUNetv2_train wrote.")
    return raw


def _folds(folder: Path, folds: Sequence[str] | str, checkpoint_file: str) -> tuple[str, ...]:
    available = sorted((p.name[len("fold_"):] for p in folder.glob("fold_*")
                        if p.is_dir() and (p / checkpoint_file).is_file() and p.name != "fold_all"),
                       key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
    if folds in ("all", None, ()):
        if not available:
            trained = sorted(p.name for p in folder.glob("fold_*"))
            where = f"its {', '.join(trained)} hold{'s' if len(trained) == 1 else ''} no {checkpoint_file}" if trained \
                else "it has no fold_N folder"
            raise NnunetModelError(f"nnU-Net model folder {folder} has no trained fold ({where}); train a fold with "
                                   "nnUNetv2_train, or choose --checkpoint best when only that one exists.")
        return tuple(available)
    chosen = tuple(str(f) for f in folds)
    missing = [f for f in chosen if not (folder / f"fold_{f}" / checkpoint_file).is_file()]
    if missing:
        raise NnunetModelError(f"nnU-Net model folder {folder} has no fold_{missing[0]}/{checkpoint_file}; "
                               f"folds with that checkpoint: {', '.join(available) or 'none'}.")
    return chosen


def _check_plans_imports(architecture: dict, folder: Path, trusted: bool) -> None:
    """Refuse (until trusted) plans that name classes outside torch.nn and dynamic_network_architectures."""
    names = [architecture.get("network_class_name", "")]
    names += [architecture.get("arch_kwargs", {}).get(k) for k in architecture.get("_kw_requires_import", ())]
    foreign = [n for n in names if n and not str(n).startswith(_SAFE_IMPORTS)]
    if foreign and not trusted:
        raise NnunetModelError(
            f"nnU-Net model {folder}: plans.json names {', '.join(map(str, foreign))}, code outside torch.nn and "
            "dynamic_network_architectures that would be imported and called; if you trust its source, pass "
            "--trust-model (in the viewer: open the model as trusted)."
        )


def nnunet_source(path: str | Path, *, folds: Sequence[str] | str = "all", checkpoint: str = "final",
                  mirroring: bool = True, configuration: Optional[str] = None) -> NnunetSource:
    """The :class:`NnunetSource` of the folder at ``path`` (the model folder or one of its ``fold_N``)."""
    path = Path(path).expanduser().resolve()
    if path.name.startswith("fold_") and (path.parent / "plans.json").is_file():
        folds, path = (path.name[len("fold_"):],), path.parent
    if checkpoint not in CHECKPOINTS:
        raise NnunetModelError(f"Checkpoint {checkpoint!r} is not one nnU-Net keeps; use final or best.")
    plans = _read_json(path / "plans.json")
    dataset_json = _read_json(path / "dataset.json")
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        raise NnunetModelError(f"{path / 'plans.json'} has no configurations; it is not an nnU-Net v2 plans file.")
    if configuration is None:
        parts = path.name.split("__")
        configuration = parts[-1] if len(parts) == 3 and parts[-1] in configurations else None
    if configuration is None:
        raise NnunetModelError(f"nnU-Net model folder {path} is not named Trainer__Plans__configuration, so its "
                               f"configuration is unknown; rename it as nnUNetv2_train named it "
                               f"(configurations: {', '.join(configurations)}).")
    if configuration not in configurations:
        raise NnunetModelError(f"{path / 'plans.json'} has no configuration {configuration!r}; it has "
                               f"{', '.join(configurations)}.")
    source = NnunetSource(folder=path, configuration=configuration, folds=_folds(path, folds, CHECKPOINTS[checkpoint]),
                          checkpoint=checkpoint, mirroring=mirroring, plans=plans, dataset_json=dataset_json)
    _check_known_to_installed_nnunet(source)
    return source


def _check_known_to_installed_nnunet(source: NnunetSource) -> None:
    """One sentence when the plans need something the installed nnunetv2 lacks (a newer nnU-Net's plans)."""
    nnunetv2 = nnunet_imports()[0]
    version = getattr(nnunetv2, "__version__", None)
    if version is None:
        from importlib.metadata import version as package_version

        version = package_version("nnunetv2")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            manager = source.configuration_manager
            architecture = source.plans["configurations"][source.configuration].get("architecture")
            if not isinstance(architecture, dict):  # resolved through inheritance
                architecture = {"network_class_name": manager.network_arch_class_name,
                                "arch_kwargs": manager.network_arch_init_kwargs,
                                "_kw_requires_import": manager.network_arch_init_kwargs_req_import}
            _ = manager.preprocessor_class, manager.resampling_fn_data, manager.resampling_fn_probabilities
            _ = source.label_manager, source.plans_manager.image_reader_writer_class
            import pydoc

            # only names the trust check lets through unasked are looked up (locating imports the module)
            missing = [n for n in [architecture.get("network_class_name")]
                       if str(n).startswith(_SAFE_IMPORTS) and pydoc.locate(str(n)) is None]
    except NnunetModelError:
        raise
    except Exception as err:  # nnU-Net raises RuntimeError/KeyError/AssertionError for names it cannot find
        raise NnunetModelError(
            f"nnU-Net model {source.folder}: the installed nnunetv2 {version} cannot read its plans ({err}); the "
            "model was probably made by a newer nnU-Net: upgrade nnunetv2."
        ) from None
    if missing:
        raise NnunetModelError(
            f"nnU-Net model {source.folder}: plans.json names the network {missing[0]}, which the installed "
            f"dynamic_network_architectures does not have; the model was made by a newer nnU-Net: upgrade nnunetv2 "
            f"(installed: {version})."
        )
