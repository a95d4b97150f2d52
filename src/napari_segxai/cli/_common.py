"""Options and progress bars shared by every ``segxai`` sub-command."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.progress import Cancelled  # noqa: F401  (re-exported for main)

if TYPE_CHECKING:
    from ..core.model.card import ModelCard


class UserError(ValueError):
    """A mistake the user can fix; printed as one sentence, exit status 2."""


def output_folder(path: str | Path) -> Path:
    """The --out folder, created when missing; a UserError when it is a file or cannot be written to."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; give a folder for the outputs.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise UserError(f"Cannot write into the output folder {out} ({err.strerror or err}); "
                        "choose a folder you can write to.") from None
    return out


def add_model_options(parser: argparse.ArgumentParser, *, model_required: bool = False) -> None:
    """Add --model (a card or a model folder), --trust-model and the nnU-Net choices, read back by :func:`load_card`."""
    if model_required:
        parser.add_argument("model", type=Path, metavar="MODEL",
                            help="a model card (YAML) or an nnU-Net v2 trained-model folder (or one of its fold_N)")
    else:
        parser.add_argument(
            "--model", type=Path, default=None, metavar="MODEL",
            help="a model card (YAML) or an nnU-Net v2 trained-model folder (plans.json, dataset.json, fold_N/); "
                 "default: the bundled demo model",
        )
    parser.add_argument(
        "--trust-model", action="store_true",
        help="allow full unpickling of a .pt/.pth weights file and the classes a model folder names (this runs "
             "code from the files: use only for models from a source you trust); same as 'trusted: true' in a card",
    )
    parser.add_argument(
        "--folds", default=None, metavar="all|N[,N...]",
        help="nnU-Net models: the folds to use, as nnUNetv2_predict -f (default: all folds trained, the ensemble)",
    )
    parser.add_argument(
        "--checkpoint", default=None, choices=["final", "best"],
        help="nnU-Net models: checkpoint_final.pth (default) or checkpoint_best.pth",
    )
    parser.add_argument(
        "--no-mirroring", action="store_true",
        help="predict without mirroring, the test-time augmentation of nnU-Net models (8x faster in 3D) and of "
             "cards whose inference.mirror_axes names axes (2x per axis)",
    )


def load_card(args: argparse.Namespace) -> "ModelCard":
    """The card of --model (the bundled demo card without it), marked trusted when --trust-model is given."""
    import dataclasses

    from ..core.model.card import default_model_card
    from ..core.model.loading import load_model_card

    model = getattr(args, "model", None)
    folds = getattr(args, "folds", None)
    if folds not in (None, "all"):
        folds = [f.strip() for f in str(folds).split(",") if f.strip()]
        if not folds:
            raise UserError("--folds is empty; give all or fold numbers such as 0,1,2.")
    no_mirroring = bool(getattr(args, "no_mirroring", False))
    options = {"folds": folds, "checkpoint": getattr(args, "checkpoint", None)}
    if model is None:
        if any(v is not None for v in options.values()):
            raise UserError("--folds and --checkpoint choose parts of an nnU-Net model; give its folder with --model.")
        card = default_model_card()
        card = dataclasses.replace(card, trusted=True) if args.trust_model and not card.trusted else card
    else:
        card = load_model_card(model, trusted=args.trust_model, mirroring=False if no_mirroring else None, **options)
        if card.source is None and any(v is not None for v in options.values()):
            raise UserError(f"--folds and --checkpoint choose parts of an nnU-Net model, and {model} is a model card "
                            "of one network; leave them out.")
    return dataclasses.replace(card, mirror_axes=()) if no_mirroring and card.source is None else card


def add_case_options(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """Add the options every case command shares: CASE, --model, --trust-model, --out, --device."""
    parser.add_argument(
        "case", type=Path,
        help="a case: a 3D or 4D NIfTI file, a folder with one NIfTI per modality, or a DICOM study folder",
    )
    add_series_options(parser)
    if model:
        add_model_options(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR",
        help="output folder (created if missing; never an input's folder files)",
    )
    parser.add_argument(
        "--device", default=None, choices=["auto", "cpu", "cuda", "mps"],
        help="where to run the model; default: CUDA, then MPS, then CPU",
    )


def add_series_options(parser: argparse.ArgumentParser) -> None:
    """Add --series and --reference: which DICOM series make the case and which gives its grid."""
    parser.add_argument(
        "--series", default=None, metavar="MOD=N[,MOD=N]",
        help="DICOM studies: the series of each modality by series key (its number; number.echo, number.plane where one series was split) or UID (e.g. t1ce=7,flair=5); "
             "default: chosen from the series descriptions",
    )
    parser.add_argument(
        "--reference", default=None, metavar="MOD",
        help="DICOM studies: the modality whose series gives the case's grid (the others are resampled onto it "
             "in world coordinates, without registration); default: the model's first modality",
    )


def add_format_option(parser: argparse.ArgumentParser, dicom_files: str) -> None:
    """Add --format (NIfTI, DICOM beside a DICOM study, or both)."""
    parser.add_argument(
        "--format", default="nifti", choices=["nifti", "dicom", "both"],
        help=f"nifti (default), dicom ({dicom_files}, referencing the study's images: the CASE must be a DICOM "
             "study) or both",
    )


def check_format(args: argparse.Namespace, case) -> None:
    """A UserError when --format asks for DICOM output of a case that is not a DICOM study."""
    from ..core.io.dicom_results import require_dicom_case

    if args.format in ("dicom", "both"):
        try:
            require_dicom_case(case)
        except ValueError as err:
            raise UserError(f"--format {args.format}: {err}") from None


def series_choices(text: str | None) -> dict[str, str] | None:
    """``--series t1ce=7,flair=5`` as {modality: series}; a UserError when malformed."""
    if not text:
        return None
    pairs = [p.strip() for p in str(text).split(",") if p.strip()]
    if not all("=" in p and p.split("=", 1)[0] and p.split("=", 1)[1] for p in pairs):
        raise UserError(f"--series {text} is not MOD=N[,MOD=N]; give e.g. t1ce=7,flair=5.")
    return dict(p.split("=", 1) for p in pairs)


def open_case(args: argparse.Namespace, card: "ModelCard | None" = None):
    """The CASE argument opened (``--series``, ``--reference`` and the card's modalities choosing DICOM series).

    What the user should know about how a DICOM study became the case (series left out, misregistered
    series) is printed, one line each.
    """
    import sys

    from ..core.io.nifti import load_case

    case = load_case(args.case, series=series_choices(getattr(args, "series", None)),
                     reference=getattr(args, "reference", None), prefer=card.modalities if card is not None else ())
    for note in case.notes:
        print(f"note: {note}", file=sys.stderr)
    return case


def say_cost(cost) -> None:
    """Print the estimated cost (an explanation's or a trust check's) before the work starts."""
    print(f"\nEstimated cost: {cost.sentence()}.", flush=True)


class TerminalProgress:
    """A tqdm progress bar fed by ``(done, total)`` callbacks from the core."""

    def __init__(self, description: str):
        from tqdm import tqdm

        self._bar = tqdm(desc=description, unit="step", leave=False)

    def __call__(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "TerminalProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
