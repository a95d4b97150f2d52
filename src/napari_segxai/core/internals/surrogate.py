"""A readable surrogate of the network: a shallow decision tree or a sparse linear model on per-voxel features.

The surrogate predicts the network's labels (not the ground truth) from what each voxel's sequences
show: the intensity, its local mean, gradient and contrast. Its fidelity is how well it mimics the
network on voxels it was not fitted on: agreement (share of head voxels with the same label) and
Dice per class. A surrogate under :data:`LOW_AGREEMENT` agreement or :data:`LOW_DICE` mean foreground
Dice is labelled low fidelity: its rules then do not describe the network.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .maximise import gaussian_blur

KINDS = ("tree", "linear")
LOW_AGREEMENT = 0.9
LOW_DICE = 0.5
#: Voxels the surrogate is fitted on at most (the rest of the head measures its fidelity).
MAX_SAMPLES = 100_000


def voxel_features(image: torch.Tensor, sequence_names: Sequence[str]) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Per-voxel features (F, *spatial) of image (1, C, *spatial): per sequence its value, mean, gradient, contrast."""
    image = image.float()
    near, wide = gaussian_blur(image, 1.0), gaussian_blur(image, 2.0)
    far = gaussian_blur(image, 4.0)
    gradient = torch.zeros_like(image)
    for axis in range(2, image.ndim):
        step = torch.gradient(near, dim=axis)[0]
        gradient += step * step
    parts, names = [], []
    for c, sequence in enumerate(sequence_names):
        parts += [image[0, c], wide[0, c], gradient[0, c].sqrt(), image[0, c] - far[0, c]]
        names += [sequence, f"{sequence} mean s=2", f"{sequence} gradient", f"{sequence} contrast s=4"]
    return torch.stack(parts), tuple(names)


@dataclass(frozen=True)
class Fidelity:
    """How well the surrogate's labels agree with the network's on voxels it was not fitted on."""

    agreement: float
    dice: dict            # class name -> Dice (classes the network or the surrogate predicts)
    voxels: int

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the classes in :attr:`dice` (nan when none)."""
        return float(np.mean(list(self.dice.values()))) if self.dice else float("nan")

    @property
    def low(self) -> bool:
        """Whether the surrogate is too unfaithful for its rules to describe the network."""
        return self.agreement < LOW_AGREEMENT or not self.mean_dice >= LOW_DICE


@dataclass(frozen=True, eq=False)
class Surrogate:
    """A fitted surrogate: the scikit-learn model, its feature and class names, its rules and its fidelity."""

    kind: str
    model: object
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]    # by class index
    fidelity: Fidelity
    seconds: float

    @property
    def verdict(self) -> str:
        """``faithful`` or the low-fidelity label."""
        return ("low fidelity: its rules do not describe the network" if self.fidelity.low else "faithful")

    def rules(self) -> str:
        """The tree's rules, or the sparse model's non-zero coefficients per class (standardised features)."""
        if self.kind == "tree":
            from sklearn.tree import export_text

            names = [self.class_names[int(c)] for c in self.model.classes_]
            return export_text(self.model, feature_names=list(self.feature_names), class_names=names, decimals=3)
        linear = self.model[-1]
        lines = []
        rows = linear.coef_ if len(linear.classes_) > 2 else np.stack([-linear.coef_[0], linear.coef_[0]])
        for k, coefficients in zip(linear.classes_, rows):
            terms = [f"{w:+.3f} x {self.feature_names[i]}" for i, w in enumerate(coefficients) if abs(w) > 1e-6]
            lines.append(f"{self.class_names[int(k)]}: {' '.join(terms) if terms else '(no feature)'}")
        return "\n".join(lines)

    def predict(self, features: torch.Tensor) -> np.ndarray:
        """Class indices (*spatial) predicted from features (F, *spatial), in chunks."""
        flat = features.reshape(features.shape[0], -1).T
        out = np.empty(flat.shape[0], dtype=np.int16)
        for s in range(0, flat.shape[0], 500_000):
            out[s: s + 500_000] = self.model.predict(flat[s: s + 500_000].cpu().numpy())
        return out.reshape(tuple(features.shape[1:]))

    def describe(self) -> str:
        """One line: kind, fidelity and verdict."""
        dice = ", ".join(f"{k} {v:.2f}" for k, v in self.fidelity.dice.items())
        return (f"{self.kind} surrogate: agreement {self.fidelity.agreement:.3f}, Dice {dice or 'none'} "
                f"on {self.fidelity.voxels} held-out voxels; {self.verdict}")

    def record(self) -> dict:
        """The surrogate as plain JSON."""
        return {"kind": self.kind, "agreement": round(self.fidelity.agreement, 5),
                "dice": {k: round(v, 5) for k, v in self.fidelity.dice.items()}, "voxels": self.fidelity.voxels,
                "low_fidelity": self.fidelity.low, "verdict": self.verdict, "seconds": round(self.seconds, 3),
                "features": list(self.feature_names), "rules": self.rules()}


def measure_fidelity(predicted: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                     foreground: Sequence[int]) -> Fidelity:
    """Agreement and Dice per foreground class between predicted and network labels (1D, same voxels)."""
    if labels.size == 0:
        raise ValueError("No voxel is left to measure the surrogate's fidelity on; give a case with a head in it.")
    agreement = float(np.mean(predicted == labels))
    dice = {}
    for k in foreground:
        a, b = predicted == k, labels == k
        total = int(a.sum() + b.sum())
        if total:
            dice[str(class_names[k])] = 2.0 * float(np.sum(a & b)) / total
    return Fidelity(agreement, dice, int(labels.size))


def fit_surrogate(
    features: torch.Tensor,
    labels: np.ndarray,
    feature_names: Sequence[str],
    class_names: Sequence[str],
    *,
    kind: str = "tree",
    depth: int = 3,
    strength: float = 20.0,
    foreground: Optional[Sequence[int]] = None,
    max_samples: int = MAX_SAMPLES,
    seed: int = 0,
) -> Surrogate:
    """Fit a surrogate of the network's ``labels`` (*spatial class indices, -1 = left out) on ``features`` (F, *spatial).

    ``depth`` bounds the tree; ``strength`` is the L1 penalty of the linear model on standardised features
    (larger: fewer features). Fidelity is measured on the voxels not drawn for fitting (all of them when every
    voxel was drawn).
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown surrogate {kind!r}; choose one of {', '.join(KINDS)}.")
    if strength <= 0:
        raise ValueError(f"The L1 strength of a sparse linear surrogate must be above 0, not {strength}.")
    if depth < 1:
        raise ValueError(f"A decision tree needs a depth of at least 1, not {depth}.")
    began = time.perf_counter()
    flat = features.reshape(features.shape[0], -1).T.cpu().numpy()
    labels = np.asarray(labels).reshape(-1)
    used = np.flatnonzero(labels >= 0)
    if used.size == 0:
        raise ValueError("The network labels no voxel inside the head here; fit the surrogate on a case with a head.")
    rng = np.random.default_rng(seed)
    drawn = used if used.size <= max_samples else _drawn(used, labels, max_samples, rng)
    if np.unique(labels[drawn]).size < 2:
        raise ValueError("The network predicts a single class on these voxels, so there is nothing for a surrogate "
                         "to separate; choose a case where the network finds a lesion.")
    from sklearn.exceptions import ConvergenceWarning

    model = _model(kind, depth, strength, seed)
    with warnings.catch_warnings():  # saga's "max_iter reached": the fidelity below says how good the fit is
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(flat[drawn], labels[drawn])
    held = np.setdiff1d(used, drawn, assume_unique=True)
    held = held if held.size else used
    foreground = tuple(range(len(class_names))) if foreground is None else tuple(foreground)
    fidelity = measure_fidelity(model.predict(flat[held]), labels[held], class_names, foreground)
    return Surrogate(kind, model, tuple(feature_names), tuple(class_names), fidelity, time.perf_counter() - began)


def _drawn(used: np.ndarray, labels: np.ndarray, count: int, rng) -> np.ndarray:
    """``count`` voxels: up to a share of each class (rare classes entirely), the rest at random."""
    classes = np.unique(labels[used])
    per_class = count // (2 * len(classes))
    chosen = []
    for k in classes:
        members = used[labels[used] == k]
        chosen.append(members if members.size <= per_class else rng.choice(members, per_class, replace=False))
    chosen = np.unique(np.concatenate(chosen))
    rest = np.setdiff1d(used, chosen, assume_unique=True)
    extra = rng.choice(rest, min(count - chosen.size, rest.size), replace=False) if count > chosen.size else rest[:0]
    return np.sort(np.concatenate([chosen, extra]))


def _model(kind: str, depth: int, strength: float, seed: int):
    if kind == "tree":
        from sklearn.tree import DecisionTreeClassifier

        return DecisionTreeClassifier(max_depth=int(depth), min_samples_leaf=20, random_state=seed)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / float(strength), l1_ratio=1.0, solver="saga",
                                                              max_iter=300, tol=1e-3, random_state=seed))
