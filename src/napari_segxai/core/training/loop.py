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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..io.files import write_text
from ..io.manifest import write_manifest
from ..progress import CancelFn, Cancelled, ProgressFn, step
from .config import build_loss, build_optimizer, card_mapping, make_config, unenhanced_indices
from .pool import PoolCase, augment, flip, pick_case, random_crop, remove_enhancement
from .schedule import learning_rate, next_checkpoint_step
from .sources import training_cases


@dataclass(frozen=True)
class TrainResult:
    """Where a training run wrote its card and manifest, and how it ended."""

    card: Path
    manifest: Path
    steps: int
    seconds: float
    stopped: str
    final_loss: float


def train(
    config: dict,
    out: str | Path,
    *,
    progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
    log: Optional[Callable[[str], None]] = None,
) -> TrainResult:
    """Train the configured network on generated cases or a dataset of files; write card, weights, checkpoints and manifest into ``out``.

    Training runs on the config's ``threads``; the process's torch threads are restored after, so a
    training run inside the viewer (or any other program) leaves the rest of its work as it was.
    """
    threads = torch.get_num_threads()
    try:
        return _train(config, out, progress=progress, should_cancel=should_cancel, log=log)
    finally:
        torch.set_num_threads(threads)


def _train(config: dict, out: str | Path, *, progress: Optional[ProgressFn], should_cancel: Optional[CancelFn],
           log: Optional[Callable[[str], None]]) -> TrainResult:
    """:func:`train` on the config's threads."""
    import yaml
    import monai

    from ..model.architectures import create_network
    from ..model.weights import save_state_dict

    start = time.perf_counter()
    config = make_config(config)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"Output folder {out} already exists and is not empty; choose a new folder.")
    log = log or (lambda message: None)
    source = training_cases(config)
    if source.kind == "files":  # a bad case is reported before anything is written
        log(f"checking the {len(source.keys)} cases of {source.dataset.root}")
        source.dataset.check(should_cancel=should_cancel)
    budget = float(config["time_budget_minutes"]) * 60.0
    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(int(config["seed"]))
    rng = np.random.default_rng(int(config["seed"]))
    dims, slice_axis = int(config["spatial_dims"]), config["slice_axis"]
    kwargs = {"spatial_dims": dims, "in_channels": len(config["modalities"]), "out_channels": len(config["classes"])}
    kwargs.update(config["kwargs"])
    network = create_network(config["architecture"], kwargs, source="the training config")
    network.train()
    loss_fn = build_loss(config)
    optimizer = build_optimizer(config, network.parameters())
    checkpoints_dir = out / "training" / "checkpoints"
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    write_text(out / "training" / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    seeds = source.keys
    data = config["data"]
    pool: list[PoolCase] = []
    joined: list[int] = []
    first = min(int(data["initial_cases"]), len(seeds))
    log(f"preparing {first} training cases ({source.kind})")
    for seed in seeds[:first]:
        pool.append(source.pool_case(seed))
        joined.append(0)
        if should_cancel is not None and should_cancel():
            raise Cancelled("Cancelled while preparing training cases.")
    generation_seconds = time.perf_counter() - start
    log(f"prepared in {generation_seconds:.0f} s")

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
    unenhanced = unenhanced_indices(config)
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
                pool.append(source.pool_case(seeds[len(pool)]))
                joined.append(done)
            lr = learning_rate(done, fraction(), config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, targets = [], []
            for _ in range(int(crop["per_step"])):
                case = pool[pick_case(len(pool), source.dataset_cases, data.get("dataset_fraction"), rng)]
                img, tgt = random_crop(case, config, rng, bool(rng.random() < crop["tumour_fraction"]))
                if unenhanced and (tgt == unenhanced["enhancing"]).any() and rng.random() < aug["unenhanced"]["probability"]:
                    img, tgt = remove_enhancement(img, tgt, **unenhanced)
                img, tgt = torch.from_numpy(img), torch.from_numpy(tgt.astype(np.int64))
                img, tgt = flip(img, tgt, rng, aug["flip_axes"], dims, slice_axis)
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
                log(f"step {done} ({100 * min(max(fraction(), 0.0), 1):.0f}% of the schedule) loss {np.mean(loss_history[-10:]):.4f} "
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
            _finish(config, out, kwargs, network, save_checkpoint, checkpoints, source, len(pool), joined,
                    lr_history, loss_history, done, planned, start, stopped, generation_seconds, monai)
        raise
    result = _finish(config, out, kwargs, network, save_checkpoint, checkpoints, source, len(pool), joined,
                     lr_history, loss_history, done, planned, start, stopped, generation_seconds, monai)
    return result


def sampling_text(dataset_fraction: float | None, dataset_cases: int) -> str:
    """How each step chose its cases (the manifest's ``training_set.sampling``)."""
    if dataset_fraction is None or not dataset_cases:
        return "each step draws crop.per_step cases uniformly from the cases joined so far"
    return (f"each crop comes with probability {dataset_fraction:g} from the dataset's {dataset_cases} cases, "
            "else from the generated cases joined so far, uniformly within each")


def _finish(config, out, kwargs, network, save_checkpoint, checkpoints, source, n_joined, joined, lr_history,
            loss_history, done, planned, start, stopped, generation_seconds, monai) -> TrainResult:
    """Save the final weights, the manifest and the model card."""
    import yaml

    save_checkpoint(final=True)
    seconds = time.perf_counter() - start
    optimizer = dict(config["optimizer"])
    manifest = {
        "name": config["name"],
        "architecture": config["architecture"],
        "kwargs": kwargs,
        "spatial_dims": config["spatial_dims"],
        "slice_axis": config["slice_axis"],
        "modalities": list(config["modalities"]),
        "classes": [{"name": c["name"], "label": int(c["label"])} for c in config["classes"]],
        "label_to_index": {str(value): index for value, index in source.label_to_index.items()},
        "optimizer": optimizer,
        "schedule": {**config["schedule"], "planned_steps": planned, "initial_lr": optimizer["lr"]},
        "loss": config["loss"],
        "training_set": {
            **source.record(n_joined),
            "joined_at_step": joined,
            "sampling": sampling_text(config["data"].get("dataset_fraction"), source.dataset_cases),
            "dataset_fraction": config["data"].get("dataset_fraction"),
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
    manifest_path = write_manifest(out, manifest)
    card = card_mapping(name=config["name"], description=config["description"], architecture=config["architecture"],
                        kwargs=kwargs, spatial_dims=config["spatial_dims"], slice_axis=config["slice_axis"],
                        modalities=config["modalities"], classes=config["classes"], activation="softmax",
                        preprocessing=config["preprocessing"], inference=config["inference"])
    card_path = out / "card.yaml"
    write_text(card_path, yaml.safe_dump(card, sort_keys=False, default_flow_style=None))
    final_loss = float(np.mean(loss_history[-20:])) if loss_history else float("nan")
    return TrainResult(card_path, manifest_path, done, seconds, stopped, final_loss)
