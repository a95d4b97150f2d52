"""Record what TracIn needs from a training loop we do not own: checkpoints, learning rates, losses, the cases.

Add three calls to your own loop (plain PyTorch, MONAI, Lightning, ...)::

    from napari_segxai import TrainingRecorder

    recorder = TrainingRecorder("runs/my-unet", dataset="Dataset001_BraTS", architecture="UNet",
                                kwargs={"spatial_dims": 3, "in_channels": 4, "out_channels": 4,
                                        "channels": [16, 32, 64], "strides": [2, 2]})
    for step in range(1, steps + 1):
        ...; loss.backward(); optimizer.step()
        recorder.update(loss)                          # the loss of this update
        if step % 200 == 0:
            recorder.checkpoint(model, optimizer, step)  # before the scheduler moves the learning rate
    recorder.finish(model, optimizer, steps)           # card.yaml, weights, training/manifest.json

The folder then holds a model card that ``segxai influence`` and the Training evidence widget use
with no other step. With MONAI's ignite trainers, :meth:`TrainingRecorder.attach` does the same
from the trainer's events. The manifest format is docs/training_format.md's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

from ..io.files import file_digest, write_text
from ..io.manifest import write_manifest

DEFAULT_PREPROCESSING = {"orientation": "RAS", "spacing": None, "spacing_policy": "resample",
                         "normalization": "zscore_nonzero"}
DEFAULT_INFERENCE = {"roi_size": [96, 96, 96], "overlap": 0.5, "sw_batch_size": 1, "mode": "gaussian"}


class TrainingRecorder:
    """Writes a training record (and, at the end, a model card) for a network trained on a dataset of files.

    ``dataset`` is a folder :func:`.datasets.open_dataset` reads (nnU-Net raw, Decathlon, case
    folders); ``cases`` the names of the cases the loop trains on (default: all). The files'
    SHA-256 are taken now, so TracIn later refuses files that changed. ``architecture`` and
    ``kwargs`` name a registered architecture that builds the network; ``preprocessing`` and
    ``inference`` are the card's blocks (how a case is fed to the network).
    """

    def __init__(self, out: str | Path, *, dataset, architecture: str, kwargs: dict, name: str = "recorded-model",
                 description: str = "", cases=None, preprocessing: Optional[dict] = None,
                 inference: Optional[dict] = None, activation: str = "softmax"):
        from ..model.architectures import create_network
        from .config import PALETTE
        from .datasets import CaseDataset, label_mapping, open_dataset

        self.out = Path(out).expanduser()
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ValueError(f"Output folder {self.out} already exists and is not empty; choose a new folder.")
        self.dataset = dataset if isinstance(dataset, CaseDataset) else open_dataset(dataset)
        by_name = {c.name: c for c in self.dataset.cases}
        names = list(by_name) if cases is None else [str(c) for c in cases]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"Training case {unknown[0]} is not in the dataset {self.dataset.root}.")
        if not names:
            raise ValueError("No training case given; list the cases the loop trains on, or leave cases out for all.")
        self.cases = [by_name[n] for n in names]
        self.dataset.check()
        self.classes = [{"name": n, "label": int(v), "color": PALETTE[i % len(PALETTE)]}
                        for i, (n, v) in enumerate(self.dataset.labels.items())]
        self.label_to_index = label_mapping(self.dataset.labels, [(c["name"], c["label"]) for c in self.classes],
                                            source=f"Training data {self.dataset.root}")
        self.kwargs = dict(kwargs)
        network = create_network(architecture, self.kwargs, source="TrainingRecorder")
        outputs = getattr(network, "out_channels", self.kwargs.get("out_channels"))
        if outputs is not None and int(outputs) != len(self.classes):
            raise ValueError(f"The network has {outputs} output channels but the dataset has {len(self.classes)} "
                             f"labels ({', '.join(c['name'] for c in self.classes)}); give one output per label.")
        self.architecture, self.name, self.description = architecture, name, description
        self.preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
        dims = int(self.kwargs.get("spatial_dims", 3))
        self.inference = {**DEFAULT_INFERENCE, "roi_size": DEFAULT_INFERENCE["roi_size"][:dims], **(inference or {})}
        self.activation = activation
        self.digests = {c.name: {self.dataset.relative(p): file_digest(p) for p in c.files} for c in self.cases}
        self.checkpoints: list[dict] = []
        self.losses: list[float] = []
        self.start = time.perf_counter()
        (self.out / "training" / "checkpoints").mkdir(parents=True, exist_ok=True)

    def update(self, loss) -> None:
        """Note the loss of one update (a tensor or a number); checkpoints carry the mean of the last 20."""
        self.losses.append(float(loss.detach() if isinstance(loss, torch.Tensor) else loss))

    def checkpoint(self, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer], step: int, *,
                   lr: Optional[float] = None) -> Path:
        """Save the weights after update ``step`` with the learning rate of that update.

        The rate is ``lr``, else the optimizer's first parameter group's: call this after
        ``optimizer.step()`` and before a scheduler changes the rate for the next update.
        """
        return self._save(model, optimizer, step, lr, final=False)

    def finish(self, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer], step: int, *,
               lr: Optional[float] = None) -> Path:
        """Save the final weights (the last checkpoint), the manifest and the model card; the card's path."""
        self._save(model, optimizer, step, lr, final=True)
        from .config import card_mapping

        write_manifest(self.out, {
            "name": self.name, "architecture": self.architecture, "kwargs": self.kwargs,
            "spatial_dims": int(self.kwargs.get("spatial_dims", 3)), "slice_axis": None,
            "modalities": list(self.dataset.modalities),
            "classes": [{"name": c["name"], "label": c["label"]} for c in self.classes],
            "label_to_index": {str(k): v for k, v in self.label_to_index.items()},
            "training_set": {
                "kind": "files", "format": self.dataset.format, "root": str(self.dataset.root.resolve()),
                "modalities": list(self.dataset.modalities), "labels": dict(self.dataset.labels),
                "cases": [{"name": c.name, "images": [self.dataset.relative(p) for p in c.images],
                           "label": self.dataset.relative(c.label), "sha256": self.digests[c.name]} for c in self.cases],
                "joined_at_step": [0] * len(self.cases), "recorded_by": "TrainingRecorder",
            },
            "steps": int(step), "seconds": round(time.perf_counter() - self.start, 1), "stopped": "completed",
            "checkpoints": self.checkpoints, "loss_history": [round(x, 5) for x in self.losses],
            "versions": {"torch": torch.__version__},
        })
        card = card_mapping(name=self.name, description=self.description, architecture=self.architecture,
                            kwargs=self.kwargs, spatial_dims=int(self.kwargs.get("spatial_dims", 3)), slice_axis=None,
                            modalities=self.dataset.modalities, classes=self.classes, activation=self.activation,
                            preprocessing=self.preprocessing, inference=self.inference)
        import yaml

        return write_text(self.out / "card.yaml", yaml.safe_dump(card, sort_keys=False, default_flow_style=None))

    def attach(self, trainer, *, every: int = 100) -> None:
        """Record from a MONAI (ignite) trainer: a checkpoint every ``every`` iterations, the record when it completes."""
        from ignite.engine import Events

        def loss_of(engine):
            output = engine.state.output
            if isinstance(output, list):
                output = output[0]
            return output["loss"] if isinstance(output, dict) else output

        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: self.update(loss_of(engine)))

        @trainer.on(Events.ITERATION_COMPLETED(every=every))
        def _checkpoint(engine):
            if engine.state.iteration < engine.state.max_epochs * engine.state.epoch_length:
                self.checkpoint(engine.network, engine.optimizer, engine.state.iteration)

        trainer.add_event_handler(Events.COMPLETED,
                                  lambda engine: self.finish(engine.network, engine.optimizer, engine.state.iteration))

    def _save(self, model, optimizer, step: int, lr: Optional[float], *, final: bool) -> Path:
        from ..model.weights import save_state_dict

        if lr is None:
            if optimizer is None:
                raise ValueError("Give the optimizer or lr=: TracIn needs the learning rate of each checkpoint's update.")
            lr = float(optimizer.param_groups[0]["lr"])
        state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
        if final:
            path, relative = save_state_dict(state, self.out / "weights.safetensors"), "../weights.safetensors"
        else:
            path = save_state_dict(state, self.out / "training" / "checkpoints" / f"step-{int(step):06d}.safetensors")
            relative = f"checkpoints/{path.name}"
        recent = self.losses[-20:]
        self.checkpoints.append({"step": int(step), "path": relative, "lr": float(lr),
                                 "loss": sum(recent) / len(recent) if recent else None,
                                 "seconds": round(time.perf_counter() - self.start, 1),
                                 "cases_in_pool": len(self.cases)})
        return path
