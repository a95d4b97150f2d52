"""Train a segmentation network on synthetic cases and record what TracIn needs (checkpoints, learning rates, cases).

A YAML config names the network, the generated training cases, the crops, the augmentation, the
optimiser, the learning-rate schedule, the loss and the budget. :func:`train` writes into an
output folder::

    card.yaml                         model card of the trained network
    weights.safetensors               final weights (also the last checkpoint)
    training/manifest.json            everything needed to replay or attribute training
    training/config.yaml              the config as used
    training/checkpoints/step-NNNNNN.safetensors   intermediate checkpoints (float32 state dicts)

The format of ``manifest.json`` is documented in docs/training_format.md. The same code trains
3D networks on volume crops and 2D networks on slices (``spatial_dims: 2``, ``slice_axis``).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .files import write_text
from .progress import CancelFn, Cancelled, ProgressFn, step

MANIFEST_FORMAT = "segxai-training/1"

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
    "data": {"size": "full", "seed_start": 1000, "initial_cases": 40, "cases": 120, "grow_every": 10},
    "crop": {"size": [64, 64, 64], "per_step": 2, "tumour_fraction": 0.7},
    "augmentation": {
        "flip_axes": [0], "gamma": [0.7, 1.5], "gamma_probability": 0.5, "scale": [0.8, 1.25],
        "shift": [-0.25, 0.25], "noise_sd": [0.0, 0.1], "channel_probability": 0.8,
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
    "inference": {"roi_size": None, "overlap": 0.5, "sw_batch_size": 1, "mode": "gaussian"},
    "preprocessing": {"orientation": "RAS", "spacing": [2.0, 2.0, 2.0], "spacing_policy": "resample",
                      "normalization": "zscore_nonzero"},
}

LOSSES = ("DiceCELoss", "DiceLoss", "DiceFocalLoss")
OPTIMIZERS = ("Adam", "AdamW", "SGD")


@dataclass(frozen=True)
class TrainResult:
    """Where a training run wrote its card and manifest, and how it ended."""

    card: Path
    manifest: Path
    steps: int
    seconds: float
    stopped: str
    final_loss: float


# --------------------------------------------------------------------------- config


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
    if len(config["inference"]["roi_size"]) != dims:
        raise ValueError(f"{source}: inference.roi_size must give {dims} sizes, got {config['inference']['roi_size']}.")
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

    if data["size"] not in SIZES:
        raise ValueError(f"{source}: data.size must be one of {', '.join(SIZES)}, got {data['size']!r}.")
    if data["seed_start"] <= DEMO_SEED < data["seed_start"] + data["cases"]:
        raise ValueError(f"{source}: the training seeds include the demo case's seed {DEMO_SEED}; move data.seed_start.")


def training_seeds(config: dict) -> list[int]:
    """The seeds of the generated training cases, in the order they join the pool."""
    data = config["data"]
    return list(range(int(data["seed_start"]), int(data["seed_start"]) + int(data["cases"])))


# --------------------------------------------------------------------------- data


@dataclass
class _PoolCase:
    image: np.ndarray     # (C, X, Y, Z) float16
    target: np.ndarray    # (X, Y, Z) uint8 class indices
    tumour: np.ndarray    # (N, 3) int16 voxel coordinates of tumour
    brain: np.ndarray     # (M, 3) int16 coordinates of a subsample of brain voxels


def _pool_case(seed: int, size: str, label_to_index: dict[int, int]) -> _PoolCase:
    """One generated case, stored compactly for crop sampling."""
    from .synth import generate_case

    synth = generate_case(seed, size=size)
    lookup = np.zeros(max(label_to_index) + 1, np.uint8)
    for label, index in label_to_index.items():
        lookup[label] = index
    target = lookup[synth.case.label]
    brain = np.argwhere(np.any(synth.case.channels != 0, axis=0))[::5].astype(np.int16)
    tumour = np.argwhere(target > 0).astype(np.int16)
    return _PoolCase(synth.case.channels.astype(np.float16), target, tumour, brain)


def _crop(case: _PoolCase, config: dict, rng: np.random.Generator, near_tumour: bool) -> tuple[np.ndarray, np.ndarray]:
    """One training crop (C, *size) float32 and its class indices (*size), 3D or a 2D slice."""
    size = list(config["crop"]["size"])
    points = case.tumour if (near_tumour and len(case.tumour)) else case.brain
    centre = points[rng.integers(len(points))].astype(int)
    image, target = case.image, case.target
    if config["spatial_dims"] == 2:
        axis = int(config["slice_axis"])
        image = np.take(image, centre[axis], axis=axis + 1)
        target = np.take(target, centre[axis], axis=axis)
        centre = np.delete(centre, axis)
    centre = centre + rng.integers(-size[0] // 4, size[0] // 4 + 1, len(centre))
    spatial = target.shape
    starts = [int(np.clip(c - s // 2, 0, max(n - s, 0))) for c, s, n in zip(centre, size, spatial)]
    box = tuple(slice(a, a + s) for a, s in zip(starts, size))
    img = image[(slice(None),) + box].astype(np.float32)
    tgt = target[box]
    pad = [(0, s - n) for s, n in zip(size, tgt.shape)]
    if any(p[1] for p in pad):
        img = np.pad(img, [(0, 0)] + pad)
        tgt = np.pad(tgt, pad)
    return img, tgt


def augment(image: torch.Tensor, rng: np.random.Generator, settings: dict) -> torch.Tensor:
    """Intensity and contrast randomisation of one (C, *spatial) crop; voxels outside the brain stay zero."""
    brain = (image != 0).any(dim=0, keepdim=True)
    out = image.clone()
    for c in range(out.shape[0]):
        if rng.random() > settings["channel_probability"]:
            continue
        x = out[c]
        inside = brain[0]
        if not inside.any():
            continue
        if rng.random() < settings["gamma_probability"]:
            lo, hi = x[inside].min(), x[inside].max()
            span = torch.clamp(hi - lo, min=1e-6)
            gamma = float(np.exp(rng.uniform(np.log(settings["gamma"][0]), np.log(settings["gamma"][1]))))
            x = lo + span * ((x - lo) / span).clamp(0, 1) ** gamma
        x = x * float(rng.uniform(*settings["scale"])) + float(rng.uniform(*settings["shift"]))
        noise = float(rng.uniform(*settings["noise_sd"]))
        if noise:
            x = x + noise * torch.randn_like(x)
        out[c] = x
    out = out * brain
    return out


def _flip(image: torch.Tensor, target: torch.Tensor, rng: np.random.Generator, axes: Sequence[int], dims: int, slice_axis):
    """Random flips of a crop and its target along the given (volume) axes."""
    for axis in axes:
        if dims == 2:
            if axis == slice_axis:
                continue
            axis = axis - (1 if slice_axis is not None and axis > slice_axis else 0)
        if rng.random() < 0.5:
            image = torch.flip(image, dims=[axis + 1])
            target = torch.flip(target, dims=[axis])
    return image, target


# --------------------------------------------------------------------------- training


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


def learning_rate(step_index: int, fraction: float, config: dict) -> float:
    """The learning rate of update ``step_index`` (0-based) at ``fraction`` (0..1) of the schedule's horizon."""
    base = float(config["optimizer"]["lr"])
    sched = config["schedule"]
    warmup = int(sched.get("warmup_steps", 0))
    if step_index < warmup:
        return base * (step_index + 1) / (warmup + 1)
    if sched["name"] == "constant":
        return base
    low = float(sched["min_lr"])
    t = min(max(fraction, 0.0), 1.0)
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * t))


def next_checkpoint_step(saved: int, last: int, steps: float, checkpoints: int, warmup: int) -> float:
    """The update count at which intermediate checkpoint ``saved + 1`` of ``checkpoints`` is due in a run of ``steps`` updates.

    The checkpoints sit at 1/n, 2/n, ... of the updates after warm-up; when the expected number
    of updates drops during training, a checkpoint still comes at least half that spacing after
    the previous one (saved at update ``last``) and before the final weights, so they are never
    bunched (some may be left out: then it returns infinity).
    """
    start = min(warmup, steps)
    gap = (steps - start) / (2 * checkpoints)
    due = start + (saved + 1) * (steps - start) / checkpoints
    if saved:
        due = max(due, last + gap)
    return due if due <= steps - gap else math.inf


def train(
    config: dict,
    out: str | Path,
    *,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
    log: Optional[Callable[[str], None]] = None,
) -> TrainResult:
    """Train the configured network on generated cases; write card, weights, checkpoints and manifest into ``out``."""
    import yaml
    import monai

    from .architectures import create_network
    from .synth import GENERATOR_VERSION
    from .weights import save_state_dict

    start = time.perf_counter()
    config = make_config(config)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"Output folder {out} already exists and is not empty; choose a new folder.")
    log = log or (lambda message: None)
    budget = float(config["time_budget_minutes"]) * 60.0
    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(int(config["seed"]))
    rng = np.random.default_rng(int(config["seed"]))
    dims, slice_axis = int(config["spatial_dims"]), config["slice_axis"]
    label_to_index = {int(c["label"]): i for i, c in enumerate(config["classes"])}
    kwargs = {"spatial_dims": dims, "in_channels": len(config["modalities"]), "out_channels": len(config["classes"])}
    kwargs.update(config["kwargs"])
    network = create_network(config["architecture"], kwargs, source="the training config")
    network.train()
    loss_fn = build_loss(config)
    optimizer = build_optimizer(config, network.parameters())
    checkpoints_dir = out / "training" / "checkpoints"
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    write_text(out / "training" / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    seeds = training_seeds(config)
    data = config["data"]
    pool: list[_PoolCase] = []
    joined: list[int] = []
    log(f"generating {data['initial_cases']} training cases")
    for seed in seeds[: int(data["initial_cases"])]:
        pool.append(_pool_case(seed, data["size"], label_to_index))
        joined.append(0)
        if should_cancel is not None and should_cancel():
            raise Cancelled("Cancelled while generating training cases.")
    generation_seconds = time.perf_counter() - start
    log(f"generated in {generation_seconds:.0f} s")

    horizon = config["schedule"]["horizon"]
    warmup = int(config["schedule"]["warmup_steps"])
    planned = int(config["schedule"]["steps"])
    n_checkpoints = int(config["checkpoints"])
    loop_start = time.perf_counter()
    loop_budget = max(budget - (loop_start - start), 1e-3)
    checkpoints: list[dict] = []
    lr_history: list[float] = []
    loss_history: list[float] = []
    crop, aug = config["crop"], config["augmentation"]
    done, stopped, saved, last_saved = 0, "completed", 0, 0
    step_times: list[float] = []

    def fraction() -> float:
        """How far along the schedule's horizon training is: updates after warm-up; for ``time``, also the time used.

        A time horizon ends at whichever comes first, the time budget or the ``steps`` cap, so
        the cosine reaches ``min_lr`` on a machine fast enough to do every update early.
        """
        by_updates = (done - warmup) / max(planned - warmup, 1)
        if horizon == "time":
            return max((time.perf_counter() - loop_start) / loop_budget, by_updates)
        return by_updates

    def save_checkpoint(final: bool) -> None:
        state = {k: v.detach().float() for k, v in network.state_dict().items()}
        if final:
            path = save_state_dict(state, out / "weights.safetensors")
            rel = "../weights.safetensors"
        else:
            path = save_state_dict(state, checkpoints_dir / f"step-{done:06d}.safetensors")
            rel = f"checkpoints/{path.name}"
        recent = loss_history[-20:]
        checkpoints.append({
            "step": done, "path": rel, "lr": lr_history[-1] if lr_history else None,
            "loss": float(np.mean(recent)) if recent else None,
            "seconds": round(time.perf_counter() - start, 1), "cases_in_pool": len(pool),
        })

    try:
        while done < planned:
            if horizon == "time" and fraction() >= 1.0:
                break
            t0 = time.perf_counter()
            if len(pool) < len(seeds) and done > 0 and done % int(data["grow_every"]) == 0:
                pool.append(_pool_case(seeds[len(pool)], data["size"], label_to_index))
                joined.append(done)
            lr = learning_rate(done, fraction(), config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = [], []
            for _ in range(int(crop["per_step"])):
                case = pool[rng.integers(len(pool))]
                img, tgt = _crop(case, config, rng, bool(rng.random() < crop["tumour_fraction"]))
                img, tgt = torch.from_numpy(img), torch.from_numpy(tgt.astype(np.int64))
                img, tgt = _flip(img, tgt, rng, aug["flip_axes"], dims, slice_axis)
                images.append(augment(img, rng, aug))
                targets.append(tgt)
            x = torch.stack(images)
            y = torch.stack(targets).unsqueeze(1)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(x), y)
            loss.backward()
            optimizer.step()
            done += 1
            lr_history.append(lr)
            loss_history.append(float(loss.detach()))
            step_times.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            if horizon == "steps" and done % 25 == 0 and done < planned:
                # Shrink the plan when the budget cannot hold it (recent speed); the cosine follows.
                speed = float(np.median(step_times[-25:]))
                fit = done + int((budget - elapsed) * 0.97 / max(speed, 1e-6))
                if fit < planned:
                    planned = max(fit, done + 1)
                    log(f"step {done}: {speed:.2f} s/step, plan shortened to {planned} steps to fit the time budget")
            # Checkpoints go by updates, never by wall time: slow early updates (cases joining the
            # pool, a shared CPU) would otherwise bunch them at the start.
            if horizon == "time" and len(step_times) >= 5:
                speed = float(np.median(step_times[-25:]))
                remaining = loop_budget - (time.perf_counter() - loop_start)
                expected = min(planned, done + int(max(remaining, 0.0) / max(speed, 1e-6)))
            else:
                expected = planned
            due = next_checkpoint_step(saved, last_saved, expected, n_checkpoints, warmup)
            if saved < n_checkpoints - 1 and done >= due and done < planned:
                saved, last_saved = saved + 1, done
                save_checkpoint(final=False)
                log(f"step {done}: checkpoint {saved}, loss {np.mean(loss_history[-20:]):.4f}, lr {lr:.2e}")
            if done % 10 == 0:
                log(f"step {done} ({100 * min(fraction(), 1):.0f}% of the schedule) loss {np.mean(loss_history[-10:]):.4f} "
                    f"lr {lr:.2e} {np.mean(step_times[-10:]):.2f} s/step, pool {len(pool)}")
            if horizon == "steps" and elapsed > budget and done < planned:
                stopped = "time_budget"
                log(f"time budget reached after {done} steps")
                break
            if horizon == "time":
                step(min(int(fraction() * 1000), 999), 1000, progress, should_cancel)
            else:
                step(done, planned, progress, should_cancel)
        if horizon == "time":
            planned = done
    except (KeyboardInterrupt, Cancelled):
        stopped = "interrupted"
        log(f"interrupted after {done} steps; keeping the checkpoints so far")
        if done:
            _finish(config, out, kwargs, network, save_checkpoint, checkpoints, seeds[: len(pool)], joined,
                    lr_history, loss_history, done, planned, start, stopped, generation_seconds, GENERATOR_VERSION, monai)
        raise
    result = _finish(config, out, kwargs, network, save_checkpoint, checkpoints, seeds[: len(pool)], joined,
                     lr_history, loss_history, done, planned, start, stopped, generation_seconds, GENERATOR_VERSION, monai)
    return result


def _finish(config, out, kwargs, network, save_checkpoint, checkpoints, seeds, joined, lr_history, loss_history,
            done, planned, start, stopped, generation_seconds, generator_version, monai) -> TrainResult:
    """Save the final weights, the manifest and the model card."""
    import yaml

    save_checkpoint(final=True)
    seconds = time.perf_counter() - start
    optimizer = dict(config["optimizer"])
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": config["name"],
        "architecture": config["architecture"],
        "kwargs": kwargs,
        "spatial_dims": config["spatial_dims"],
        "slice_axis": config["slice_axis"],
        "modalities": list(config["modalities"]),
        "classes": [{"name": c["name"], "label": int(c["label"])} for c in config["classes"]],
        "label_to_index": {str(c["label"]): i for i, c in enumerate(config["classes"])},
        "optimizer": optimizer,
        "schedule": {**config["schedule"], "planned_steps": planned, "initial_lr": optimizer["lr"]},
        "loss": config["loss"],
        "training_set": {
            "generator": "napari_segxai.core.synth.generate_case",
            "generator_version": generator_version,
            "size": config["data"]["size"],
            "seeds": [int(s) for s in seeds],
            "joined_at_step": joined,
            "sampling": "each step draws crop.per_step cases uniformly from the cases joined so far",
        },
        "crop": config["crop"],
        "augmentation": config["augmentation"],
        "steps": done,
        "seconds": round(seconds, 1),
        "generation_seconds": round(generation_seconds, 1),
        "stopped": stopped,
        "checkpoints": checkpoints,
        "lr_history": [float(f"{x:.6g}") for x in lr_history],
        "loss_history": [round(x, 5) for x in loss_history],
        "seed": config["seed"],
        "threads": config["threads"],
        "versions": {"torch": torch.__version__, "monai": monai.__version__},
        "parameters": int(sum(p.numel() for p in network.parameters())),
    }
    manifest_path = out / "training" / "manifest.json"
    write_text(manifest_path, json.dumps(manifest, indent=1))
    card = {
        "name": config["name"],
        "description": config["description"],
        "architecture": config["architecture"],
        "kwargs": kwargs,
        "weights": "weights.safetensors",
        "trusted": False,
        "spatial_dims": config["spatial_dims"],
    }
    if config["spatial_dims"] == 2:
        card["slice_axis"] = config["slice_axis"]
    card.update({
        "modalities": list(config["modalities"]),
        "classes": [dict(c) for c in config["classes"]],
        "activation": "softmax",
        "preprocessing": dict(config["preprocessing"]),
        "inference": dict(config["inference"]),
        "training": "training/manifest.json",
    })
    card_path = out / "card.yaml"
    write_text(card_path, yaml.safe_dump(card, sort_keys=False, default_flow_style=None))
    final_loss = float(np.mean(loss_history[-20:])) if loss_history else float("nan")
    return TrainResult(card_path, manifest_path, done, seconds, stopped, final_loss)


def read_manifest(path: str | Path) -> dict:
    """A training manifest with checkpoint paths resolved to absolute paths."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "training" / "manifest.json"
    if not path.is_file():
        raise ValueError(f"Training manifest {path} does not exist; train with segxai train or give its path.")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} training manifest.")
    for ckpt in manifest["checkpoints"]:
        ckpt["path"] = str((path.parent / ckpt["path"]).resolve())
    return manifest


# --------------------------------------------------------------------------- evaluation


REGIONS: dict[str, tuple[int, ...]] = {"whole_tumour": (1, 2, 4), "tumour_core": (1, 4), "enhancing": (4,)}
"""BraTS evaluation regions: label values that make up each."""


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    p, r = prediction.astype(bool), reference.astype(bool)
    total = int(p.sum()) + int(r.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(p, r).sum()) / total


def region_dice(prediction: np.ndarray, reference: np.ndarray, regions: dict[str, tuple[int, ...]] = REGIONS) -> dict[str, float]:
    """Dice per region, each region the union of its label values, in both label volumes."""
    return {name: dice(np.isin(prediction, values), np.isin(reference, values)) for name, values in regions.items()}


def largest_component(labels: np.ndarray) -> np.ndarray:
    """The label volume with everything outside the largest connected non-zero component set to 0."""
    from scipy import ndimage

    components, n = ndimage.label(labels > 0)
    if n <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.where(components == int(np.argmax(sizes)), labels, 0).astype(labels.dtype)


HELD_OUT_SEED_START = 900_000
"""First seed of the held-out generated cases used for evaluation (never used for training)."""


def evaluate_generated(
    card,
    seeds: Sequence[int],
    *,
    network: Optional[torch.nn.Module] = None,
    device: Optional[str] = None,
    size: str = "full",
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> list[dict]:
    """Region Dice of the card's model on generated cases, raw and after keeping the largest component."""
    from .model_card import build_network
    from .segment import pick_device, segment
    from .synth import DEMO_SEED, generate_case

    training = set()
    if card.training is not None and Path(card.training).is_file():
        training = set(json.loads(Path(card.training).read_text())["training_set"]["seeds"])
    overlap = sorted(training.intersection(int(s) for s in seeds))
    if overlap:
        raise ValueError(f"Seeds {overlap[:5]} were used to train {card.name}; evaluate on held-out seeds.")
    device = str(pick_device(device))
    network = network if network is not None else build_network(card, device)
    rows = []
    for i, seed in enumerate(seeds):
        synth = generate_case(int(seed), size=size)
        seg = segment(synth.case, card, network=network, device=device)
        rows.append(_dice_row(synth.case.name, seg, synth.case.label, seed=int(seed), demo=int(seed) == DEMO_SEED))
        step(i + 1, len(seeds), progress, should_cancel)
    return rows


def _dice_row(name: str, seg, reference: np.ndarray, **extra) -> dict:
    """One result row: Dice per region, raw and largest-component, and the segmentation time."""
    row = {"case": name, **extra, "seconds": round(seg.seconds, 2)}
    for region, value in region_dice(seg.labels, reference).items():
        row[region] = round(value, 4)
    for region, value in region_dice(largest_component(seg.labels), reference).items():
        row[f"{region}_lcc"] = round(value, 4)
    return row


def evaluate_case(case, reference: np.ndarray, card, *, network=None, device: Optional[str] = None) -> dict:
    """Region Dice of the card's model on one case against a reference label volume on the case's grid."""
    from .segment import segment

    if reference.shape != case.shape:
        raise ValueError(f"The reference label of {case.name} has shape {reference.shape}, the case {case.shape}; give a label on the case's grid.")
    seg = segment(case, card, network=network, device=device)
    return _dice_row(case.name, seg, reference)


def summarize(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean, SD, min and count of every Dice column over result rows."""
    columns = [k for k in rows[0] if k.startswith(tuple(REGIONS))] if rows else []
    out = {}
    for column in columns:
        values = np.array([r[column] for r in rows], dtype=float)
        out[column] = {"mean": round(float(values.mean()), 4), "sd": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4),
                       "min": round(float(values.min()), 4), "n": int(len(values))}
    return out
