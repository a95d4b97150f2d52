"""Model cards: the YAML file that says how to build, feed and read a segmentation network."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from .architectures import TORCHSCRIPT, create_network, known_architectures
from ..io.paths import demo_model_card_path
from .ensemble import FoldEnsemble
from .weights import is_torchscript, load_into, load_state_dict, load_torchscript

ACTIVATIONS = ("softmax", "sigmoid")
NORMALIZATIONS = ("zscore_nonzero", "zscore", "minmax", "none")
SPACING_POLICIES = ("resample", "refuse", "ignore")
BLEND_MODES = ("gaussian", "constant")
_AXIS_LETTERS = {"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}
_TOP_LEVEL = (
    "name", "description", "architecture", "kwargs", "weights", "trusted", "spatial_dims",
    "slice_axis", "modalities", "classes", "activation", "preprocessing", "inference", "training",
    "training_data", "source",
)
_PREPROCESSING = ("orientation", "spacing", "spacing_policy", "normalization")
_INFERENCE = ("roi_size", "overlap", "sw_batch_size", "mode", "mirror_axes")
# Colours for classes whose card entry gives none (background first).
_PALETTE = ("#000000", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0")


class ModelCardError(ValueError):
    """A model card that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ClassInfo:
    """One output channel of a model: its name, the label value it writes and its colour."""

    name: str
    label: int
    color: str


@dataclass(frozen=True)
class ModelCard:
    """A validated model card; paths are absolute."""

    path: Path
    name: str
    description: str
    architecture: str
    kwargs: dict = field(hash=False)
    weights: Path
    trusted: bool
    spatial_dims: int
    slice_axis: Optional[int]
    modalities: tuple[str, ...]
    classes: tuple[ClassInfo, ...]
    activation: str
    orientation: Optional[str]
    spacing: Optional[tuple[Optional[float], ...]]
    spacing_policy: str
    normalization: str
    roi_size: tuple[int, ...]
    overlap: float
    sw_batch_size: int
    mode: str
    training: Optional[Path]
    training_data: Optional[Path] = None  # where a training set of files is now, when it moved since training
    source: Any = field(default=None, hash=False)  # a model folder the card was derived from (nnunet.NnunetSource)
    mirror_axes: tuple[int, ...] = ()  # window axes mirrored at inference, logits averaged (test-time augmentation)

    @property
    def fold_weights(self) -> tuple[Path, ...]:
        """The weights of each member of the model: one per nnU-Net fold, else the card's one file."""
        return self.source.checkpoint_paths if self.source is not None else (self.weights,)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names in output-channel order."""
        return tuple(c.name for c in self.classes)

    @property
    def label_values(self) -> tuple[int, ...]:
        """The label values in output-channel order."""
        return tuple(c.label for c in self.classes)


def card_palette(index: int) -> str:
    """The colour of the class at output ``index`` when its card gives none (background first)."""
    return _PALETTE[index % len(_PALETTE)]


def read_card_yaml(path: str | Path) -> tuple[Any, Path]:
    """The mapping in the card YAML file at ``path`` (or ``path/card.yaml``) and the file's absolute path."""
    import yaml

    path = Path(path).expanduser().resolve()
    if path.is_dir():
        if not (path / "card.yaml").is_file():
            raise ModelCardError(
                f"Model folder {path} holds no card.yaml and is neither an nnU-Net v2 model folder (plans.json, "
                "dataset.json and fold_N/checkpoint_final.pth) nor a MONAI bundle (configs/metadata.json); give a "
                "model card or a model folder."
            )
        path = path / "card.yaml"
    if not path.is_file():
        raise ModelCardError(f"Model card {path} does not exist; give the path of a card YAML file or a model folder.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "cannot be parsed"
        raise ModelCardError(f"Model card {path} is not valid YAML{where} ({problem}); fix the file.") from err
    except UnicodeDecodeError as err:
        raise ModelCardError(f"Model card {path} is not UTF-8 text; give a YAML file.") from err
    return raw, path


def default_model_card() -> ModelCard:
    """The bundled 3D demo model's card."""
    path = demo_model_card_path("demo3d")
    if not path.is_file():
        raise ModelCardError(
            f"The bundled demo model is missing ({path} does not exist); reinstall napari-segxai "
            "or pass a model card with --model."
        )
    return parse_model_card(*read_card_yaml(path))


def parse_model_card(raw: Any, path: Path) -> ModelCard:
    """Validate the mapping read from the card at ``path`` (relative paths are taken from its folder)."""
    check = _Checker(path)
    if not isinstance(raw, dict):
        check.fail(None, "must be a YAML mapping of fields (name, architecture, weights, ...)")
    check.known_fields(raw, _TOP_LEVEL, None)

    name = check.string(raw, "name")
    description = check.string(raw, "description", default="")
    architecture = check.string(raw, "architecture")
    if architecture not in known_architectures():
        check.fail("architecture", f"is {architecture!r}, which is not a known architecture; "
                                   f"use one of {', '.join(known_architectures())}")
    kwargs = check.mapping(raw, "kwargs", default={})
    if architecture == TORCHSCRIPT and kwargs:
        check.fail("kwargs", "must be empty when architecture is torchscript (the archive holds the network)")
    trusted = check.boolean(raw, "trusted", default=False)

    spatial_dims = check.integer(raw, "spatial_dims", default=kwargs.get("spatial_dims", 3))
    if spatial_dims not in (2, 3):
        check.fail("spatial_dims", f"is {spatial_dims}; use 3 for a 3D model or 2 for a slice-wise model")
    if "spatial_dims" in kwargs and kwargs["spatial_dims"] != spatial_dims:
        check.fail("kwargs", f"has spatial_dims {kwargs['spatial_dims']} but the card's spatial_dims is {spatial_dims}")
    slice_axis = raw.get("slice_axis")
    if spatial_dims == 2:
        if slice_axis is None:
            check.fail("slice_axis", "is missing; a slice-wise model (spatial_dims 2) needs the axis (0, 1 or 2) "
                                     "its slices are taken along")
        slice_axis = check.integer(raw, "slice_axis")
        if slice_axis not in (0, 1, 2):
            check.fail("slice_axis", f"is {slice_axis}; use 0, 1 or 2")
    elif slice_axis is not None:
        check.fail("slice_axis", "is only used by slice-wise models; remove it or set spatial_dims to 2")

    modalities = tuple(m.lower() for m in check.string_list(raw, "modalities"))
    if len(set(modalities)) != len(modalities):
        check.fail("modalities", f"lists a modality twice: {list(modalities)}")
    if "in_channels" in kwargs and kwargs["in_channels"] != len(modalities):
        check.fail("kwargs", f"has in_channels {kwargs['in_channels']} but 'modalities' lists "
                             f"{len(modalities)} input channels")

    classes = check.classes(raw)
    if "out_channels" in kwargs and kwargs["out_channels"] != len(classes):
        check.fail("classes", f"lists {len(classes)} classes but kwargs has out_channels {kwargs['out_channels']}; "
                              "give one class per output channel")
    activation = check.choice(raw, "activation", ACTIVATIONS, default="softmax")
    if activation == "softmax" and len(classes) < 2:
        check.fail("classes", "lists one class; softmax needs at least two (include background)")

    weights = check.existing_path(raw, "weights", "weights file")
    if architecture != TORCHSCRIPT and is_torchscript(weights):
        check.fail("architecture", f"is {architecture} but {weights.name} is a TorchScript archive; "
                                   "set architecture to torchscript")

    pre = check.mapping(raw, "preprocessing", default={})
    check.known_fields(pre, _PREPROCESSING, "preprocessing")
    orientation = pre.get("orientation")
    if orientation is not None:
        orientation = str(orientation).upper()
        axes = [_AXIS_LETTERS.get(c) for c in orientation]
        if len(orientation) != 3 or None in axes or sorted(axes) != [0, 1, 2]:
            check.fail("preprocessing.orientation", f"is {pre.get('orientation')!r}; use three axis codes such "
                                                     "as RAS or LPS, or null to keep the stored orientation")
    spacing = check.spacing(pre, spatial_dims, slice_axis)
    spacing_policy = check.choice(pre, "spacing_policy", SPACING_POLICIES, default="resample",
                                  where="preprocessing.spacing_policy")
    normalization = check.choice(pre, "normalization", NORMALIZATIONS, default="zscore_nonzero",
                                 where="preprocessing.normalization")

    inf = check.mapping(raw, "inference", default={})
    check.known_fields(inf, _INFERENCE, "inference")
    roi_size = check.roi_size(inf, spatial_dims)
    overlap = check.number(inf, "overlap", default=0.25, where="inference.overlap")
    if not 0.0 <= overlap < 1.0:
        check.fail("inference.overlap", f"is {overlap}; use a fraction in [0, 1)")
    sw_batch_size = check.integer(inf, "sw_batch_size", default=1, where="inference.sw_batch_size")
    if sw_batch_size < 1:
        check.fail("inference.sw_batch_size", f"is {sw_batch_size}; use 1 or more")
    mode = check.choice(inf, "mode", BLEND_MODES, default="gaussian", where="inference.mode")
    mirror_axes = check.mirror_axes(inf, spatial_dims)

    training = check.existing_path(raw, "training", "training manifest", required=False)
    # Not required to exist: a training set of files may be absent on this machine (TracIn then lists
    # its cases without pictures and says why).
    training_data = check.optional_path(raw, "training_data")

    return ModelCard(
        path=path, name=name, description=description, architecture=architecture, kwargs=dict(kwargs),
        weights=weights, trusted=trusted, spatial_dims=spatial_dims, slice_axis=slice_axis,
        modalities=modalities, classes=classes, activation=activation, orientation=orientation,
        spacing=spacing, spacing_policy=spacing_policy, normalization=normalization, roi_size=roi_size,
        overlap=float(overlap), sw_batch_size=sw_batch_size, mode=mode, training=training,
        training_data=training_data, mirror_axes=mirror_axes,
    )


def build_network(card: ModelCard, device: str | torch.device = "cpu", *, member: Optional[int] = None) -> torch.nn.Module:
    """The card's network with its weights loaded safely, in eval mode on ``device``.

    A model of several members (nnU-Net folds) gives a :class:`FoldEnsemble` of them; ``member``
    picks one of :attr:`ModelCard.fold_weights` instead.
    """
    if member is None and len(card.fold_weights) > 1:
        return FoldEnsemble([build_network(card, device, member=i) for i in range(len(card.fold_weights))])
    weights = card.fold_weights[member or 0]
    if card.architecture == TORCHSCRIPT:
        network = load_torchscript(weights, device, trusted=card.trusted)
    else:
        network = create_network(card.architecture, card.kwargs, source=f"Model card {card.path}")
        state = load_state_dict(weights, trusted=card.trusted)
        load_into(network, state, weights)
        network = network.to(device)
    return network.eval()


class _Checker:
    """Field readers that raise one ModelCardError sentence naming the card file and field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: Optional[str], problem: str):
        subject = f"Model card {self.path}" + (f": field '{where}'" if where else "")
        raise ModelCardError(f"{subject} {problem}.")

    def known_fields(self, raw: dict, allowed: tuple[str, ...], where: Optional[str]) -> None:
        unknown = [str(k) for k in raw if k not in allowed]
        if unknown:
            inside = f" in '{where}'" if where else ""
            raise ModelCardError(
                f"Model card {self.path} has unknown field{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(u) for u in unknown)}{inside}; known fields are {', '.join(allowed)}."
            )

    def _get(self, raw: dict, key: str, default: Any, where: Optional[str]) -> Any:
        if raw.get(key) is None:
            if default is _REQUIRED:
                self.fail(where or key, "is missing")
            return default
        return raw[key]

    def string(self, raw, key, default=None, where=None) -> str:
        default = _REQUIRED if default is None else default
        value = self._get(raw, key, default, where)
        if not isinstance(value, str) or (default is _REQUIRED and not value.strip()):
            self.fail(where or key, f"must be a non-empty text, not {value!r}")
        return value

    def boolean(self, raw, key, default, where=None) -> bool:
        value = self._get(raw, key, default, where)
        if not isinstance(value, bool):
            self.fail(where or key, f"must be true or false, not {value!r}")
        return value

    def integer(self, raw, key, default=None, where=None) -> int:
        value = self._get(raw, key, _REQUIRED if default is None else default, where)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where or key, f"must be a whole number, not {value!r}")
        return value

    def number(self, raw, key, default, where=None) -> float:
        value = self._get(raw, key, default, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where or key, f"must be a number, not {value!r}")
        return float(value)

    def mapping(self, raw, key, default) -> dict:
        value = self._get(raw, key, default, None)
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping of names to values, not {value!r}")
        return value

    def choice(self, raw, key, choices, default, where=None) -> str:
        value = self._get(raw, key, default, where)
        if not isinstance(value, str) or value.lower() not in choices:
            self.fail(where or key, f"is {value!r}; use one of {', '.join(choices)}")
        return value.lower()

    def string_list(self, raw, key) -> list[str]:
        value = self._get(raw, key, _REQUIRED, None)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"must be a non-empty list of names, not {value!r}")
        return value

    def optional_path(self, raw, key) -> Optional[Path]:
        """An optional path, relative to the card's folder, that need not exist."""
        value = self._get(raw, key, None, None)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a folder path, not {value!r}")
        return (self.path.parent / Path(value).expanduser()).resolve()

    def existing_path(self, raw, key, what, required=True) -> Optional[Path]:
        value = self._get(raw, key, _REQUIRED if required else None, None)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a file path, not {value!r}")
        resolved = (self.path.parent / Path(value).expanduser()).resolve()
        if not resolved.exists():
            self.fail(key, f"names {what} {resolved}, which does not exist")
        return resolved

    def classes(self, raw) -> tuple[ClassInfo, ...]:
        value = self._get(raw, "classes", _REQUIRED, None)
        if not isinstance(value, list) or not value:
            self.fail("classes", "must be a list with one {name, label, color} entry per output channel")
        classes = []
        for i, entry in enumerate(value):
            where = f"classes[{i}]"
            if not isinstance(entry, dict):
                self.fail(where, f"must be a mapping with name, label and color, not {entry!r}")
            self.known_fields(entry, ("name", "label", "color"), where)
            name = self.string(entry, "name", where=f"{where}.name")
            label = self.integer(entry, "label", where=f"{where}.label")
            if not -32768 <= label <= 32767:
                self.fail(f"{where}.label", f"is {label}; label values must fit in int16")
            color = self._get(entry, "color", card_palette(i), None)
            if not isinstance(color, str) or not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
                self.fail(f"{where}.color", f"is {color!r}; use a hex colour such as '#e6194b'")
            classes.append(ClassInfo(name=name, label=label, color=color.lower()))
        labels = [c.label for c in classes]
        if len(set(labels)) != len(labels):
            self.fail("classes", f"gives the same label value to two classes: {labels}")
        names = [c.name for c in classes]
        if len(set(names)) != len(names):
            self.fail("classes", f"gives the same name to two classes: {names}")
        return tuple(classes)

    def spacing(self, pre, spatial_dims, slice_axis) -> Optional[tuple[Optional[float], ...]]:
        value = pre.get("spacing")
        where = "preprocessing.spacing"
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value] * 3
        if not isinstance(value, list) or len(value) not in (2, 3) or (len(value) == 2 and spatial_dims != 2):
            self.fail(where, f"is {value!r}; give three voxel sizes in mm (or two in-plane sizes for a slice-wise model)")
        if len(value) == 2:
            value = list(value)
            value.insert(slice_axis, None)
        for v in value:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                self.fail(where, f"is {pre['spacing']!r}; voxel sizes must be positive numbers (null: keep)")
        return tuple(None if v is None else float(v) for v in value)

    def roi_size(self, inf, spatial_dims) -> tuple[int, ...]:
        where = "inference.roi_size"
        value = self._get(inf, "roi_size", _REQUIRED, where)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value] * spatial_dims
        if (not isinstance(value, list) or len(value) != spatial_dims
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            self.fail(where, f"is {value!r}; give {spatial_dims} positive window sizes in voxels")
        return tuple(value)

    def mirror_axes(self, inf, spatial_dims) -> tuple[int, ...]:
        value = self._get(inf, "mirror_axes", [], "inference.mirror_axes")
        if (not isinstance(value, list) or len(set(map(str, value))) != len(value)
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < spatial_dims for v in value)):
            self.fail("inference.mirror_axes", f"is {value!r}; give distinct axes of the network's window "
                                               f"(0 to {spatial_dims - 1}), or [] for none")
        return tuple(value)


_REQUIRED = object()
