"""``segxai convert``: a DICOM study as NIfTI (each series on its grid, and the case on one grid)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import TerminalProgress, UserError, output_folder, series_choices


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``convert`` and its options."""
    parser = subparsers.add_parser(
        "convert",
        help="write a DICOM study as NIfTI: each series on its own grid and the case on one grid",
        description=(
            "Read a DICOM study (a folder searched recursively, a zip or a multi-frame file), map its series to modalities and write, "
            "under OUT/<pseudonym>/, the case (one NIfTI per modality on the reference series' grid: a case "
            "folder every segxai command opens), each image series on its own grid (series/series-N.nii.gz) "
            "and series.json (what each series is, and how well each modality's head agrees with the "
            "reference's). Series are resampled in world coordinates, not registered."
        ),
    )
    parser.add_argument("study", type=Path, help="a DICOM study or series: a folder, a zip of one, or a multi-frame file")
    parser.add_argument("--series", default=None, metavar="MOD=N[,MOD=N]",
                        help="the series of each modality by series number or UID (e.g. t1ce=7,flair=5); "
                             "default: chosen from the series descriptions")
    parser.add_argument("--reference", default=None, metavar="MOD",
                        help="the modality whose series gives the case's grid; default: the first of t1, t1ce, t2, "
                             "flair the study has")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Convert, then say where the files are and what the user should know."""
    from ..core.io.dicom import is_dicom_input
    from ..core.io.dicom_convert import convert_study

    study = Path(args.study).expanduser()
    if not study.exists():
        raise UserError(f"No such file or folder: {study}.")
    if not is_dicom_input(study):
        raise UserError(f"{study} is not a DICOM study or series (a folder, a zip or a multi-frame file); give what "
                        "was exported from the PACS.")
    output_folder(args.out)
    with TerminalProgress("reading series") as bar:
        folder, notes = convert_study(study, args.out, series=series_choices(args.series), reference=args.reference,
                                      progress=bar)
    for note in notes:
        print(f"note: {note}")
    print(f"Case (one NIfTI per modality on one grid): {folder}")
    print(f"Series as acquired: {folder / 'series'}; what each one is: {folder / 'series.json'}")
    return 0
