"""A training config: its defaults, validation, the training seeds, and the loss and optimiser it names."""

from __future__ import annotations

import copy
from pathlib import Path

import torch


DEFAULT_CONFIG: dict = {
    "name": "segxai-model",
    "description": "A segmentation network trained on synthetic brain-tumour cases.",
    "architecture": "UNet",
    "kwargs": {},
    "spatial_dims": 3,
    "slice_axis": None,
    "modalities": ["t1", "t1ce", "t2", "flair"],
    "classes": [
        {"name": "background", "label": 0, "color": "#000000"},
        {"name": "necrosis", "label": 1, "color": "#e6194b"},
        {"name": "edema", "label": 2, "color": "#3cb44b"},
        {"name": "enhancing", "label": 4, "color": "#ffe119"},
    ],
    # dataset: a folder of labelled case files (nnU-Net raw, Decathlon, case folders) to train on
    # instead of generated cases; its modalities and labels then replace the two lists above, and
    # generated: N adds N generated cases (seeds from seed_start) after the dataset's;
    # dataset_fraction: F draws that share of the crops from the dataset's own cases when there are
    # generated ones too (None: every case in the pool equally often, so a few real cases among many
    # generated ones are rarely seen); without a dataset it has no effect.
    "data": {"size": "full", "seed_start": 1000, "initial_cases": 40, "cases": 120, "grow_every": 10,
             "dataset": None, "generated": 0, "dataset_fraction": None},
    # offset: the crop's centre moves from the drawn voxel by up to this share of the crop size per axis
    # (0.25 keeps that voxel in the crop's middle half; 0.5 lets it fall anywhere in the crop)
    "crop": {"size": [64, 64, 64], "per_step": 2, "tumour_fraction": 0.7, "offset": 0.25},
    "augmentation": {
        "flip_axes": [0], "gamma": [0.7, 1.5], "gamma_probability": 0.5, "scale": [0.8, 1.25],
        "shift": [-0.25, 0.25], "noise_sd": [0.0, 0.1], "channel_probability": 0.8,
        # unenhanced: {probability, contrast, plain, enhancing, into}: that share of the crops holding the
        # enhancing class lose their contrast uptake (pool.remove_enhancement); None: never
        "unenhanced": None,
    },
    "optimizer": {"name": "Adam", "lr": 0.002, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-5},
    "schedule": {"name": "cosine", "horizon": "steps", "steps": 1500, "warmup_steps": 20, "min_lr": 2e-5},
    "loss": {"name": "DiceCELoss", "kwargs": {"to_onehot_y": True, "softmax": True, "include_background": True}},
    "checkpoints": 5,
    "time_budget_minutes": 45.0,
    "threads": 2,
    "seed": 0,
    # roi_size None: the training crop size (windows the size the network saw in training; a
    # whole-volume window gave the demo model false positives), overlap 0.5 for the same reason.
    "inference": {"roi_size": None, "overlap": 0.5, "sw_batch_size": 1, "mode": "gaussian", "mirror_axes": []},
    "preprocessing": {"orientation": "RAS", "spacing": [2.0, 2.0, 2.0], "spacing_policy": "resample",
                      "normalization": "zscore_nonzero"},
}


LOSSES = ("DiceCELoss", "DiceLoss", "DiceFocalLoss")


OPTIMIZERS = ("Adam", "AdamW", "SGD")


def load_config(path: str | Path) -> dict:
    """A training config read from YAML and merged over :data:`DEFAULT_CONFIG`, validated."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"Training config {path} does not exist; give the path of a YAML config.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"Training config {path} is not valid YAML: {err}".rstrip(".") + ".") from err
    if not isinstance(raw, dict):
        raise ValueError(f"Training config {path} must be a mapping of settings, not {type(raw).__name__}.")
    return make_config(raw, source=str(path))


def make_config(raw: dict, *, source: str = "the training config") -> dict:
    """``raw`` merged over :data:`DEFAULT_CONFIG` and validated."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in raw.items():
        if key not in config:
            raise ValueError(f"{source}: unknown setting {key!r}; known settings are {', '.join(config)}.")
        if isinstance(config[key], dict) and isinstance(value, dict) and key not in ("kwargs",):
            unknown = set(value) - set(config[key]) if key not in ("loss", "optimizer") else set()
            if unknown:
                raise ValueError(f"{source}: unknown setting {key}.{sorted(unknown)[0]}; known: {', '.join(config[key])}.")
            config[key].update(value)
        else:
            config[key] = value
    if config["data"].get("dataset"):
        _adopt_dataset(config, source)
    if config["inference"]["roi_size"] is None:
        config["inference"]["roi_size"] = list(config["crop"]["size"])
    _validate(config, source)
    return config


def _validate(config: dict, source: str) -> None:
    """Raise ValueError naming the first setting of ``config`` that cannot work."""
    dims = config["spatial_dims"]
    if dims not in (2, 3):
        raise ValueError(f"{source}: spatial_dims must be 2 or 3, got {dims!r}.")
    if dims == 2 and config["slice_axis"] not in (0, 1, 2):
        raise ValueError(f"{source}: a 2D model needs slice_axis 0, 1 or 2, got {config['slice_axis']!r}.")
    if len(config["crop"]["size"]) != dims:
        raise ValueError(f"{source}: crop.size must give {dims} sizes for a {dims}D model, got {config['crop']['size']}.")
    offset = config["crop"]["offset"]
    if not isinstance(offset, (int, float)) or not 0 <= offset <= 0.5:
        raise ValueError(f"{source}: crop.offset must be a share of the crop size from 0 to 0.5, got {offset!r}.")
    if len(config["inference"]["roi_size"]) != dims:
        raise ValueError(f"{source}: inference.roi_size must give {dims} sizes, got {config['inference']['roi_size']}.")
    axes = config["inference"]["mirror_axes"]
    if not isinstance(axes, list) or len(set(map(str, axes))) != len(axes) or not all(
            isinstance(a, int) and not isinstance(a, bool) and 0 <= a < dims for a in axes):
        raise ValueError(f"{source}: inference.mirror_axes must list distinct window axes 0 to {dims - 1}, got {axes!r}.")
    _validate_unenhanced(config, source)
    kwargs = config["kwargs"]
    if kwargs.get("spatial_dims", dims) != dims:
        raise ValueError(f"{source}: kwargs.spatial_dims ({kwargs.get('spatial_dims')}) differs from spatial_dims ({dims}).")
    if kwargs.get("in_channels", len(config["modalities"])) != len(config["modalities"]):
        raise ValueError(f"{source}: kwargs.in_channels must equal the number of modalities ({len(config['modalities'])}).")
    if kwargs.get("out_channels", len(config["classes"])) != len(config["classes"]):
        raise ValueError(f"{source}: kwargs.out_channels must equal the number of classes ({len(config['classes'])}).")
    if config["loss"]["name"] not in LOSSES:
        raise ValueError(f"{source}: loss.name {config['loss']['name']!r} is not one of {', '.join(LOSSES)}.")
    if config["optimizer"]["name"] not in OPTIMIZERS:
        raise ValueError(f"{source}: optimizer.name {config['optimizer']['name']!r} is not one of {', '.join(OPTIMIZERS)}.")
    if config["schedule"]["horizon"] not in ("steps", "time"):
        raise ValueError(f"{source}: schedule.horizon must be steps or time, got {config['schedule']['horizon']!r}.")
    if config["schedule"]["name"] not in ("cosine", "constant"):
        raise ValueError(f"{source}: schedule.name must be cosine or constant, got {config['schedule']['name']!r}.")
    data = config["data"]
    if data["cases"] < 1 or data["initial_cases"] < 1 or data["initial_cases"] > data["cases"]:
        raise ValueError(f"{source}: data needs 1 <= initial_cases <= cases, got {data['initial_cases']} and {data['cases']}.")
    if config["schedule"]["steps"] < 1:
        raise ValueError(f"{source}: schedule.steps must be at least 1.")
    if config["checkpoints"] < 1:
        raise ValueError(f"{source}: checkpoints must be at least 1.")
    from .synth import DEMO_SEED, SIZES

    fraction = data.get("dataset_fraction")
    if fraction is not None:
        if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError(f"{source}: data.dataset_fraction must be a number between 0 and 1 (exclusive), got {fraction!r}.")
        if data.get("dataset") and not int(data.get("generated") or 0):
            raise ValueError(f"{source}: data.dataset_fraction shares the crops between the dataset and generated cases; "
                             "add generated cases (data.generated or --generated) or remove it.")
    if data.get("dataset"):
        return
    if data["size"] not in SIZES:
        raise ValueError(f"{source}: data.size must be one of {', '.join(SIZES)}, got {data['size']!r}.")
    if data["seed_start"] <= DEMO_SEED < data["seed_start"] + data["cases"]:
        raise ValueError(f"{source}: the training seeds include the demo case's seed {DEMO_SEED}; move data.seed_start.")


UNENHANCED_KEYS = ("probability", "contrast", "plain", "enhancing", "into")


def _validate_unenhanced(config: dict, source: str) -> None:
    """Raise ValueError when ``augmentation.unenhanced`` names what the config does not have."""
    setting = config["augmentation"]["unenhanced"]
    if setting is None:
        return
    where = f"{source}: augmentation.unenhanced"
    if not isinstance(setting, dict) or sorted(setting) != sorted(UNENHANCED_KEYS):
        raise ValueError(f"{where} must give {', '.join(UNENHANCED_KEYS)} (for example probability: 0.3, contrast: t1ce, "
                         f"plain: t1, enhancing: enhancing, into: necrosis), got {setting!r}.")
    p = setting["probability"]
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"{where}.probability must be a number from 0 to 1, got {p!r}.")
    for key in ("contrast", "plain"):
        if setting[key] not in config["modalities"]:
            raise ValueError(f"{where}.{key} {setting[key]!r} is not one of the modalities ({', '.join(config['modalities'])}).")
    names = [c["name"] for c in config["classes"][1:]]
    for key in ("enhancing", "into"):
        if setting[key] not in names:
            raise ValueError(f"{where}.{key} {setting[key]!r} is not one of the classes ({', '.join(names)}).")
    if setting["contrast"] == setting["plain"] or setting["enhancing"] == setting["into"]:
        raise ValueError(f"{where} needs two different modalities and two different classes, got {setting!r}.")


def unenhanced_indices(config: dict) -> dict | None:
    """``augmentation.unenhanced`` as channel and class indices for :func:`pool.remove_enhancement`, or None."""
    setting = config["augmentation"]["unenhanced"]
    if setting is None or not setting["probability"]:
        return None
    names = [c["name"] for c in config["classes"]]
    return {"contrast": config["modalities"].index(setting["contrast"]), "plain": config["modalities"].index(setting["plain"]),
            "enhancing": names.index(setting["enhancing"]), "into": names.index(setting["into"])}


#: Colours of a dataset's classes, background first (the demo's for the BraTS classes).
PALETTE = ("#000000", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0")


def _adopt_dataset(config: dict, source: str) -> None:
    """Take the modalities and classes from ``data.dataset`` and train on all its cases."""
    from .datasets import open_dataset

    try:
        dataset = open_dataset(config["data"]["dataset"])
    except ValueError as err:
        raise ValueError(f"{source}: data.dataset: {err}") from None
    config["data"]["dataset"] = str(dataset.root.resolve())
    config["modalities"] = list(dataset.modalities)
    config["classes"] = [{"name": name, "label": int(value), "color": PALETTE[i % len(PALETTE)]}
                         for i, (name, value) in enumerate(dataset.labels.items())]
    generated = int(config["data"].get("generated") or 0)
    if generated < 0:
        raise ValueError(f"{source}: data.generated must be 0 or more, got {generated}.")
    config["data"]["cases"] = len(dataset.cases) + generated
    config["data"]["initial_cases"] = min(int(config["data"]["initial_cases"]), config["data"]["cases"])
    for key in ("in_channels", "out_channels"):
        config["kwargs"].pop(key, None)


def training_seeds(config: dict) -> list[int]:
    """The seeds of the generated training cases, in the order they join the pool."""
    data = config["data"]
    return list(range(int(data["seed_start"]), int(data["seed_start"]) + int(data["cases"])))


def build_loss(config: dict) -> torch.nn.Module:
    """The MONAI loss of ``config['loss']`` (name and keyword arguments)."""
    from monai import losses

    return getattr(losses, config["loss"]["name"])(**config["loss"]["kwargs"])


def build_optimizer(config: dict, params) -> torch.optim.Optimizer:
    """The torch optimiser of ``config['optimizer']`` over ``params``."""
    opt = dict(config["optimizer"])
    name = opt.pop("name")
    if name == "SGD":
        opt.pop("betas", None), opt.pop("eps", None)
    else:
        opt["betas"] = tuple(opt.get("betas", (0.9, 0.999)))
    return getattr(torch.optim, name)(params, **opt)


def card_mapping(*, name: str, description: str, architecture: str, kwargs: dict, spatial_dims: int,
                 slice_axis, modalities, classes, activation: str, preprocessing: dict, inference: dict) -> dict:
    """The model card (as written to ``card.yaml``) of a network trained into a folder with a training record."""
    card = {"name": name, "description": description, "architecture": architecture, "kwargs": kwargs,
            "weights": "weights.safetensors", "trusted": False, "spatial_dims": int(spatial_dims)}
    if int(spatial_dims) == 2:
        card["slice_axis"] = slice_axis
    card.update({
        "modalities": list(modalities),
        "classes": [dict(c) for c in classes],
        "activation": activation,
        "preprocessing": dict(preprocessing),
        "inference": dict(inference),
        "training": "training/manifest.json",
    })
    return card
