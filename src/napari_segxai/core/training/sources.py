"""Where the trainer's cases come from: the generator (seeds) or a dataset of case files.

Each source gives the keys of its cases in the order they join the pool, turns one into a
:class:`~.pool.PoolCase`, and says what the training record stores about the cases that joined
(seeds and generator version, or names, files relative to the dataset root and their SHA-256).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .pool import PoolCase, compact


class GeneratedCases:
    """Generated cases, one per seed of the config's ``data`` block."""

    kind = "generated"
    dataset_cases = 0  # the pool's first cases that come from a dataset of files: none

    def __init__(self, config: dict):
        from .config import training_seeds

        self.size = config["data"]["size"]
        self.keys = training_seeds(config)
        self.label_to_index = {int(c["label"]): i for i, c in enumerate(config["classes"])}

    def pool_case(self, key: int) -> PoolCase:
        from .synth import generate_case

        case = generate_case(int(key), size=self.size).case
        return compact(case.channels, case.label, self.label_to_index)

    def record(self, joined: int) -> dict:
        from .synth import GENERATOR_VERSION

        return {"kind": self.kind, "generator": "napari_segxai.core.training.synth.generate_case",
                "generator_version": GENERATOR_VERSION, "size": self.size,
                "seeds": [int(s) for s in self.keys[:joined]]}


class FileCases:
    """The cases of a dataset of files, preprocessed as the trained model's card will say (orientation, spacing,
    normalisation), optionally followed by ``data.generated`` generated cases relabelled into the dataset's values."""

    kind = "files"

    def __init__(self, config: dict, dataset):
        from .config import training_seeds
        from .datasets import label_mapping

        self.dataset = dataset
        self.seeds = training_seeds(config)[: int(config["data"].get("generated") or 0)]
        self.size = config["data"]["size"]
        if self.seeds and tuple(dataset.modalities) != ("t1", "t1ce", "t2", "flair"):
            raise ValueError(f"Training data {dataset.root}: generated cases have t1, t1ce, t2 and flair, the dataset "
                             f"{', '.join(dataset.modalities)}; train without generated cases (data.generated: 0).")
        if self.seeds:  # a dataset without the generator's classes is refused before anything is written
            from .datasets import relabel_generated

            relabel_generated(np.zeros(1, np.int16), dataset.labels, source=f"Training data {dataset.root}")
        self.keys = list(range(len(dataset.cases) + len(self.seeds)))
        self.dataset_cases = len(dataset.cases)  # the pool's first cases; the generated ones follow
        classes = [(c["name"], int(c["label"])) for c in config["classes"]]
        self.label_to_index = label_mapping(dataset.labels, classes, source=f"Training data {dataset.root}")
        self.card = preprocessing_card(config)
        self.digests: dict[int, dict[str, str]] = {}

    def pool_case(self, key: int) -> PoolCase:
        from ..model.preprocess import preprocess

        case = self.case(key)
        image, grid = preprocess(case, self.card)
        label = grid.to_network_grid(torch.from_numpy(case.label.astype(np.float32)), interpolation="nearest")
        return compact(image[0].numpy(), np.rint(label.numpy()).astype(np.int64), self.label_to_index)

    def case(self, key: int):
        """Case ``key``: a dataset case (its files' SHA-256 noted), or a generated one relabelled into the dataset's values."""
        import dataclasses

        from ..io.files import file_digest
        from .datasets import relabel_generated
        from .synth import generate_case

        if key >= len(self.dataset.cases):
            case = generate_case(self.seeds[key - len(self.dataset.cases)], size=self.size).case
            label = relabel_generated(case.label, self.dataset.labels, source=f"Training data {self.dataset.root}")
            return dataclasses.replace(case, label=label)
        entry = self.dataset.cases[key]
        self.digests[key] = {self.dataset.relative(p): file_digest(p) for p in entry.files}
        return self.dataset.load(entry)

    def record(self, joined: int) -> dict:
        from .synth import GENERATOR_VERSION, case_name

        cases = []
        for key in self.keys[:joined]:
            if key >= len(self.dataset.cases):
                seed = self.seeds[key - len(self.dataset.cases)]
                cases.append({"name": case_name(seed, self.size), "seed": int(seed), "size": self.size,
                              "generator_version": GENERATOR_VERSION})
                continue
            entry = self.dataset.cases[key]
            cases.append({"name": entry.name, "images": [self.dataset.relative(p) for p in entry.images],
                          "label": self.dataset.relative(entry.label), "sha256": self.digests[key]})
        generated = {"size": self.size, "generator_version": GENERATOR_VERSION} if self.seeds else {}
        return {"kind": self.kind, "format": self.dataset.format, "root": str(self.dataset.root.resolve()),
                "modalities": list(self.dataset.modalities), "labels": dict(self.dataset.labels), "cases": cases,
                **generated}


def training_cases(config: dict):
    """The source of ``config``'s training cases: its ``data.dataset`` when set, else the generator."""
    folder = config["data"].get("dataset")
    if not folder:
        return GeneratedCases(config)
    from .datasets import open_dataset

    return FileCases(config, open_dataset(folder))


def preprocessing_card(config: dict):
    """The model card the trained network will have, as far as preprocessing goes (no weights yet)."""
    from ..model.card import ClassInfo, ModelCard

    pre, inference = config["preprocessing"], config["inference"]
    spacing = pre.get("spacing")
    return ModelCard(
        path=Path("training config"), name=config["name"], description=config["description"],
        architecture=config["architecture"], kwargs=dict(config["kwargs"]), weights=Path(), trusted=False,
        spatial_dims=int(config["spatial_dims"]), slice_axis=config["slice_axis"],
        modalities=tuple(config["modalities"]),
        classes=tuple(ClassInfo(c["name"], int(c["label"]), c.get("color", "#ffffff")) for c in config["classes"]),
        activation="softmax", orientation=pre.get("orientation"),
        spacing=tuple(spacing) if spacing is not None else None, spacing_policy=pre["spacing_policy"],
        normalization=pre["normalization"], roi_size=tuple(inference["roi_size"]), overlap=float(inference["overlap"]),
        sw_batch_size=int(inference["sw_batch_size"]), mode=inference["mode"], training=None,
    )
