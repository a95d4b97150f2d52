"""Training datasets of real case files: nnU-Net v2 raw datasets, Medical Segmentation Decathlon
datasets and folders of case folders, read into one :class:`CaseDataset`.

- **nnU-Net v2 raw** (a folder with ``dataset.json`` holding ``channel_names``, ``labels`` and
  ``file_ending``): ``imagesTr/CASE_0000<ending>`` ... one file per channel, ``labelsTr/CASE<ending>``.
- **Medical Segmentation Decathlon** (``dataset.json`` with ``modality``, ``labels`` and
  ``training: [{image, label}]``): one 4D image per case, channels last.
- **A folder of case folders**: each sub-folder a case that :func:`..io.nifti.load_case` opens,
  with its label file (``*_seg.nii.gz`` and the other names :mod:`..naming` knows).

Nothing is read but names and headers until a case is loaded; every mistake is one sentence
naming the case and the field.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import naming
from ..case import Case, label_scheme_for
from ..io.files import read_json_object

NNUNET, MSD, FOLDERS = "nnunet", "msd", "folders"


@dataclass(frozen=True)
class DatasetCase:
    """One training case of a dataset: its name, image files (one per modality, or one 4D file) and label file."""

    name: str
    images: tuple[Path, ...]
    label: Path

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file of the case, images first."""
        return self.images + (self.label,)


@dataclass(frozen=True)
class CaseDataset:
    """A labelled dataset of case files: where it is, its format, modalities, label names and cases."""

    root: Path
    format: str
    modalities: tuple[str, ...]
    labels: dict[str, int]  # class name -> label value, background first
    cases: tuple[DatasetCase, ...]

    def load(self, case: DatasetCase) -> Case:
        """Read one case (channels in :attr:`modalities` order, its label); ValueError names what is wrong."""
        from ..io.nifti import case_from_files

        loaded = case_from_files(case.name, self.modalities, case.images, case.label)
        unknown = sorted(set(np.unique(loaded.label).tolist()) - set(self.labels.values()))
        if unknown:
            raise ValueError(f"Training case {case.name}: its label file {case.label.name} holds values "
                             f"{unknown} that the dataset's labels ({_describe(self.labels)}) do not declare.")
        if len(loaded.shape) != 3:
            raise ValueError(f"Training case {case.name} is not a 3D volume.")
        return loaded

    def check(self, progress=None, should_cancel=None) -> None:
        """Check every case before training starts (headers, grids, label values); ValueError naming the case and file.

        Reads image headers only, and the label volumes, so a bad case is found before anything is written.
        """
        import nibabel as nib

        from ..io.nifti import load_label
        from ..progress import step

        declared = set(self.labels.values())
        for i, case in enumerate(self.cases):
            shapes = []
            for path in case.images:
                try:
                    shapes.append(tuple(int(s) for s in nib.load(str(path)).shape))
                except Exception as err:  # nibabel raises many types for a bad file
                    raise ValueError(f"Training case {case.name}: {path.name} cannot be read as NIfTI ({err}).") from None
            if len(case.images) == 1 and len(self.modalities) > 1:
                if len(shapes[0]) != 4 or shapes[0][3] != len(self.modalities):
                    raise ValueError(f"Training case {case.name}: {case.images[0].name} has shape {shapes[0]}, not "
                                     f"X x Y x Z x {len(self.modalities)} (the dataset declares "
                                     f"{len(self.modalities)} modalities).")
                spatial = shapes[0][:3]
            else:
                for path, shape in zip(case.images, shapes):
                    if len(shape) != 3:
                        raise ValueError(f"Training case {case.name}: {path.name} has shape {shape}; a 3D dataset "
                                         "needs one 3D volume per channel.")
                spatial = shapes[0]
            label, _, _ = load_label(case.label)
            if label.shape != spatial:
                raise ValueError(f"Training case {case.name}: its label {case.label.name} has shape {label.shape}, "
                                 f"its images {spatial}.")
            unknown = sorted(set(np.unique(label).tolist()) - declared)
            if unknown:
                raise ValueError(f"Training case {case.name}: its label file {case.label.name} holds values {unknown} "
                                 f"that the dataset's labels ({_describe(self.labels)}) do not declare.")
            step(i + 1, len(self.cases), progress, should_cancel)

    def relative(self, path: Path) -> str:
        """``path`` relative to the dataset root, with forward slashes (as a training record stores it).

        Links are not followed: a dataset of links to files elsewhere records the links' names.
        """
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root)).as_posix()


def open_dataset(path: str | Path) -> CaseDataset:
    """The dataset at ``path`` (a folder, or its ``dataset.json``); ValueError saying what is missing."""
    path = Path(path).expanduser()
    if path.name == "dataset.json":
        path = path.parent
    if not path.is_dir():
        raise ValueError(f"Training data {path} is not a folder; give an nnU-Net raw dataset, a Decathlon "
                         "dataset or a folder of case folders.")
    meta = path / "dataset.json"
    if meta.is_file():
        raw = read_json_object(meta, what="the dataset's fields")
        if "channel_names" in raw:
            return _nnunet(path, raw)
        if "training" in raw:
            return _msd(path, raw)
        raise ValueError(f"{meta} has neither 'channel_names' (nnU-Net v2) nor 'training' (Decathlon); "
                         "give one of those formats.")
    return _folders(path)


def _describe(labels: dict[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in labels.items())


def modalities_from_channel_names(channel_names: dict, source: str) -> tuple[str, ...]:
    """Channel names in channel order, as canonical modality names where known (``FLAIR`` -> ``flair``)."""
    try:
        order = sorted(channel_names, key=int)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: the channel keys must be 0, 1, 2, ...; got {sorted(channel_names)}.") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise ValueError(f"{source}: the channel keys must be 0 to {len(order) - 1} without gaps; got {order}.")
    names = tuple(naming.normalize_modality(str(channel_names[k])) for k in order)
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: two channels have the same name ({', '.join(names)}).")
    return names


def _labels(raw: dict, source: str, *, values_are_keys: bool) -> dict[str, int]:
    """The label table as {name: value}, background (0) first; region-based (list-valued) labels refused."""
    table = raw.get("labels")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{source}: 'labels' is missing or empty; list the label values and their names.")
    labels: dict[str, int] = {}
    for key, value in table.items():
        name, number = (value, key) if values_are_keys else (key, value)
        if isinstance(number, (list, tuple)):
            raise ValueError(f"{source}: label {name!r} is a region ({number}); region-based labels are not "
                             "supported for training here; give one value per class.")
        try:
            labels[str(name)] = int(number)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: label {name!r} has value {number!r}, not a whole number.") from None
    if 0 not in labels.values():
        raise ValueError(f"{source}: no label has value 0 (background); declare it.")
    if len(set(labels.values())) != len(labels):
        raise ValueError(f"{source}: two labels share a value ({_describe(labels)}).")
    return dict(sorted(labels.items(), key=lambda item: item[1]))


def _nnunet(root: Path, raw: dict) -> CaseDataset:
    source = str(root / "dataset.json")
    if not isinstance(raw["channel_names"], dict) or not raw["channel_names"]:
        raise ValueError(f"{source}: 'channel_names' must map channel numbers to names, e.g. {{\"0\": \"T1\"}}.")
    modalities = modalities_from_channel_names(raw["channel_names"], f"{source} channel_names")
    labels = _labels(raw, source, values_are_keys=False)
    ending = raw.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise ValueError(f"{source}: 'file_ending' is missing; give it, e.g. \".nii.gz\".")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise ValueError(f"{root} has no {folder.name} folder, which an nnU-Net raw dataset needs.")
    cases = []
    for label in sorted(p for p in labels_dir.iterdir() if p.name.endswith(ending) and not p.name.startswith(".")):
        name = label.name[: -len(ending)]
        images = tuple(images_dir / f"{name}_{i:04d}{ending}" for i in range(len(modalities)))
        missing = [p.name for p in images if not p.is_file()]
        if missing:
            raise ValueError(f"Training case {name}: imagesTr has no {', '.join(missing)} "
                             f"(channel_names declares {len(modalities)} channels).")
        cases.append(DatasetCase(name, images, label))
    extra = sorted({p.name.rsplit("_", 1)[0] for p in images_dir.iterdir() if p.name.endswith(ending)}
                   - {c.name for c in cases})
    if extra:
        raise ValueError(f"Training case {extra[0]}: imagesTr has its images but labelsTr has no {extra[0]}{ending}.")
    declared = raw.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        raise ValueError(f"{source}: numTraining is {declared} but labelsTr holds {len(cases)} cases.")
    return _checked(CaseDataset(root, NNUNET, modalities, labels, tuple(cases)))


def _msd(root: Path, raw: dict) -> CaseDataset:
    source = str(root / "dataset.json")
    channel_names = raw.get("modality") or raw.get("channel_names")
    if not isinstance(channel_names, dict) or not channel_names:
        raise ValueError(f"{source}: 'modality' must map channel numbers to names, e.g. {{\"0\": \"FLAIR\"}}.")
    modalities = modalities_from_channel_names(channel_names, f"{source} modality")
    labels = _labels(raw, source, values_are_keys=True)
    entries = raw["training"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: 'training' must list the cases as {{\"image\": ..., \"label\": ...}}.")
    cases = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise ValueError(f"{source}: training entry {i} needs both 'image' and 'label'.")
        image, label = root / entry["image"], root / entry["label"]
        name = naming.file_stem(image)
        for field, path in (("image", image), ("label", label)):
            if not path.is_file():
                raise ValueError(f"Training case {name}: its {field} file {entry[field]} does not exist in {root}.")
        cases.append(DatasetCase(name, (image,), label))
    return _checked(CaseDataset(root, MSD, modalities, labels, tuple(cases)))


def _folders(root: Path) -> CaseDataset:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root} has no dataset.json and no case folders; give an nnU-Net raw dataset, a "
                         "Decathlon dataset or a folder of case folders.")
    cases, modalities = [], None
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.is_file() and naming.is_nifti(p) and not p.name.startswith("."))
        labels = [p for p in files if naming.is_label_name(p)]
        by_modality = {m: p for p in files if (m := naming.modality_from_name(p)) is not None and p not in labels}
        if len(labels) != 1:
            raise ValueError(f"Training case {folder.name}: needs exactly one label file (such as "
                             f"{folder.name}_seg.nii.gz), found {len(labels)}.")
        these = tuple(sorted(by_modality, key=naming.modality_sort_key))
        if modalities is None:
            modalities = these
        elif these != modalities:
            raise ValueError(f"Training case {folder.name} has modalities {', '.join(these) or 'none'}, the first "
                             f"case {folders[0].name} {', '.join(modalities)}; every case needs the same ones.")
        cases.append(DatasetCase(folder.name, tuple(by_modality[m] for m in modalities), labels[0]))
    if not modalities:
        raise ValueError(f"Training case {folders[0].name}: no file names a modality (t1, t1ce, t2, flair, ...).")
    from ..io.nifti import load_label

    values = set()
    for case in cases:
        values |= set(np.unique(load_label(case.label)[0]).tolist())
    scheme = label_scheme_for(values)
    labels = {name: value for value, name in sorted(scheme.classes.items())}
    return _checked(CaseDataset(root, FOLDERS, modalities, labels, tuple(cases)))


def _checked(dataset: CaseDataset) -> CaseDataset:
    if not dataset.cases:
        raise ValueError(f"Training data {dataset.root} holds no labelled case.")
    names = [c.name for c in dataset.cases]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"Training data {dataset.root} names case {twice[0]} twice; case names must be distinct.")
    return dataset


def _key(name: str) -> str:
    """A label name compared loosely: lower case, no spaces, underscores or dashes, British oedema as edema."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return key.replace("oedema", "edema").replace("tumour", "tumor")


def label_mapping(dataset_labels: dict[str, int], classes: Sequence[tuple[str, int]], *, source: str) -> dict[int, int]:
    """{dataset label value: output index of the model's class} by name, else by value; ValueError when one has no match.

    ``classes`` are the model's (name, label value) in output order.
    """
    by_name = {_key(name): i for i, (name, _) in enumerate(classes)}
    by_value = {int(value): i for i, (_, value) in enumerate(classes)}
    mapping: dict[int, int] = {}
    for name, value in dataset_labels.items():
        index = by_name.get(_key(name))
        unnamed = _key(name).startswith("label") or int(value) == 0  # "label 3" (no real name), or background
        if index is None and unnamed:
            index = by_value.get(int(value))
        if index is None:
            model = ", ".join(f"{n}={v}" for n, v in classes)
            raise ValueError(f"{source}: the dataset's label {name!r} (value {value}) is not a class of the model "
                             f"({model}); rename it in dataset.json or train a model with that class.")
        mapping[int(value)] = index
    missing = sorted(set(range(len(classes))) - set(mapping.values()))
    if missing:
        raise ValueError(f"{source}: the model's class {classes[missing[0]][0]!r} has no label in the dataset "
                         f"({_describe(dataset_labels)}).")
    return mapping


def relabel_generated(label: np.ndarray, dataset_labels: dict[str, int], *, source: str) -> np.ndarray:
    """A generated case's label (BraTS 1/2/4) in a dataset's label values, matched by class name.

    ValueError when the dataset has no class of that name (then generated cases cannot join it).
    """
    from .synth import COMPARTMENTS

    by_key = {_key(name): value for name, value in dataset_labels.items()}
    out = np.zeros_like(label)
    for value, name in COMPARTMENTS.items():
        if _key(name) not in by_key:
            raise ValueError(f"{source}: generated cases have {name} regions but the dataset has no {name!r} label "
                             f"({_describe(dataset_labels)}); train without generated cases.")
        out[label == value] = by_key[_key(name)]
    return out
