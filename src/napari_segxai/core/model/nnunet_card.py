"""The model card of an nnU-Net v2 model folder: modalities, classes, network, grid and windows from its files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from .nnunet import TILE_STEP, _check_plans_imports, nnunet_source

if TYPE_CHECKING:
    from .card import ModelCard


def _label_key(value) -> int | tuple[int, ...]:
    """A label value or region (list of values) as a lookup key; a one-value region is that value."""
    if isinstance(value, (list, tuple)):
        values = tuple(sorted(int(v) for v in value))
        return values[0] if len(values) == 1 else values
    return int(value)


def nnunet_card(path: str | Path, *, folds: Sequence[str] | str = "all", checkpoint: str = "final",
                mirroring: bool = True, trusted: bool = False, card_path: Optional[Path] = None) -> ModelCard:
    """The model card of the nnU-Net model folder at ``path`` (``card_path``: a card written for it)."""
    from .card import ClassInfo, ModelCard, card_palette

    source = nnunet_source(path, folds=folds, checkpoint=checkpoint, mirroring=mirroring)
    manager = source.configuration_manager
    _check_plans_imports({"network_class_name": manager.network_arch_class_name,
                          "arch_kwargs": manager.network_arch_init_kwargs,
                          "_kw_requires_import": manager.network_arch_init_kwargs_req_import}, source.folder, trusted)
    from ..training.datasets import modalities_from_channel_names

    channel_names = source.dataset_json.get("channel_names") or source.dataset_json.get("modality") or {}
    modalities = modalities_from_channel_names(channel_names, f"{source.folder / 'dataset.json'} channel_names")
    labels = source.label_manager
    names = {_label_key(v): str(k) for k, v in source.dataset_json["labels"].items()}
    if labels.has_regions:
        regions = labels.foreground_regions
        order = source.dataset_json.get("regions_class_order") or list(range(1, len(regions) + 1))
        classes = tuple(
            ClassInfo(name=names.get(_label_key(r), f"region {i + 1}"),
                      label=int(order[i]), color=card_palette(i + 1))
            for i, r in enumerate(regions))
        activation = "sigmoid"
    else:
        values = [v for v in labels.all_labels if v != labels.ignore_label]
        classes = tuple(ClassInfo(name=names.get(_label_key(v), f"label {v}"), label=int(v), color=card_palette(i))
                        for i, v in enumerate(values))
        activation = "softmax"
    patch = tuple(int(p) for p in manager.patch_size)
    spatial_dims = len(patch)
    axes = [[2, 1, 0][t] for t in source.plans_manager.transpose_forward]  # network axis i -> case axis
    spacing = [None, None, None]
    target = list(manager.spacing)
    for i, axis in enumerate(axes[-len(target):] if spatial_dims == 2 else axes):
        spacing[axis] = float(target[i])
    kwargs = {"network_class_name": manager.network_arch_class_name,
              "arch_kwargs": dict(manager.network_arch_init_kwargs),
              "arch_kwargs_req_import": list(manager.network_arch_init_kwargs_req_import),
              "input_channels": len(modalities), "output_channels": int(labels.num_segmentation_heads)}
    dataset = source.plans.get("dataset_name", source.folder.parent.name)
    card = ModelCard(
        path=card_path or source.folder, name=f"{dataset} {source.configuration}",
        description=(f"nnU-Net v2 model {source.folder.name} (folds {', '.join(source.folds)}, checkpoint "
                     f"{source.checkpoint}), read from {source.folder}"),
        architecture="nnunet", kwargs=kwargs, weights=source.checkpoint_paths[0], trusted=trusted,
        spatial_dims=spatial_dims, slice_axis=0 if spatial_dims == 2 else None, modalities=modalities,
        classes=classes, activation=activation, orientation=None, spacing=tuple(spacing), spacing_policy="resample",
        normalization="nnunet", roi_size=patch, overlap=1.0 - TILE_STEP, sw_batch_size=1, mode="gaussian",
        training=None, source=source,
    )
    return card
