"""The case report as one self-contained HTML page (images embedded, no network) and as one PNG."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io.files import atomic_path, write_text
from . import figures

PAGE_PX = 1100
STYLE = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 24px auto; max-width: 1100px; color: #1d1d1f; }
h1 { font-size: 22px; margin-bottom: 2px; } h2 { font-size: 17px; border-bottom: 1px solid #ccc; padding-top: 10px; }
.sub { color: #555; font-size: 13px; } img { max-width: 100%; } .note { color: #8a4b00; font-size: 13px; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0; } td, th { border: 1px solid #ddd; padding: 3px 7px; text-align: left; }
th { background: #f3f3f3; } .warn { color: #8a4b00; } code { font-size: 12px; }
"""


def class_table(report) -> list[list[str]]:
    """Per predicted class: voxels, volume in mL and, when the case has a reference, Dice."""
    case, seg = report.case, report.segmentation
    voxel_ml = float(abs(np.linalg.det(np.asarray(case.affine)[:3, :3]))) / 1000.0
    rows = [["class", "label", "voxels", "volume (mL)"] + (["Dice vs reference"] if case.label is not None else [])]
    for info in seg.classes:
        if info.label == 0:
            continue
        predicted = seg.labels == info.label
        row = [info.name, str(info.label), str(int(predicted.sum())), f"{predicted.sum() * voxel_ml:.1f}"]
        if case.label is not None:
            truth = case.label == info.label
            total = predicted.sum() + truth.sum()
            row.append(f"{2 * np.logical_and(predicted, truth).sum() / total:.3f}" if total else "n/a")
        rows.append(row)
    return rows


def roi_table(report) -> list[list[str]]:
    """e_{b->a} per explained class (rows) and region (columns), in percent."""
    roi = report.roi
    rows = [["class"] + list(roi.region_names) + list(roi.modality_names)]
    for k, name in enumerate(roi.class_names):
        rows.append([name] + [f"{v:.0%}" for v in roi.importance[k]] + [f"{v:.0%}" for v in roi.modality_share[k]])
    return rows


def evidence_table(report, class_name: str, top: int) -> list[list[str]]:
    """The proponents and opponents of one class as rows: role, training case, its class, score."""
    result = report.influence
    rows = [["role", "training case", result.key_name, "its class", "TracIn score", "region (voxels)"]]
    for role, items in (("proponent", result.proponents(class_name, top=top)),
                        ("opponent", result.opponents(class_name, top=top))):
        rows += [[role, e.training_case, str(e.seed), e.train_class, f"{e.score:+.3g}", str(e.voxels)] for e in items]
    return rows


def trust_tables(report) -> list[tuple[str, list[list[str]]]]:
    """The trust numbers given to the report (from `segxai trust`), as titled tables."""
    out = []
    for key, title in (("sanity", "Sanity check: similarity once every layer is randomised (pass: Spearman < 0.5)"),
                       ("metrics", "Quality metrics")):
        rows = report.trust.get(key)
        if rows:
            columns = list(rows[0])
            out.append((title, [columns] + [[_short(row[c]) for c in columns] for row in rows]))
    return out


def _short(value: str) -> str:
    """A number with four significant digits; other text as it is."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}"


def _table_html(rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def _img_html(image: np.ndarray, alt: str) -> str:
    data = base64.b64encode(figures.png_bytes(image)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def finding_lines(report) -> list[str]:
    """What the model did not find, said first: "No tumour predicted", or "no <class> predicted" per class."""
    missing = tuple(report.not_predicted)
    if report.relevance is None:
        named = ", ".join(missing) or "any class but background"
        return [f"No tumour predicted: {report.card.name} labelled no voxel of this case as {named}, so there is "
                "nothing to explain, summarise by region or find training evidence for."]
    return [f"No {name} predicted." for name in missing]


def sections(report, top: int) -> list[tuple[str, list]]:
    """The report's sections in order: (title, blocks); a block is an image, a table (rows) or a sentence."""
    rel, seg = report.relevance, report.segmentation
    found = finding_lines(report)
    if seg.domain is not None:
        found = [*found, f"Domain check: {seg.domain.describe()}."]
    out = [("Finding", found)] if found else []
    out += [
        ("Segmentation", [figures.orthogonal_slices(report), class_table(report),
                          f"{report.card.name} on {seg.device}, {seg.seconds:.1f} s."]),
        ("Where the model is unsure", uncertainty_blocks(report)),
    ]
    if rel is not None:
        out += [
            ("Relevance", [f"{rel.method}: {rel.target_description} ({rel.seconds:.1f} s).", report.verdict]
                          + ([rel.zero_line() + "."] if rel.zero_classes else [])
                          + [figures.relevance_grid(report)]),
            ("RoI importance", [figures.roi_bars(report), roi_table(report),
                                "e(b→a) = share of the class's |relevance| in region b (Agg2Exp); the last columns: "
                                f"share of each input sequence, from {report.roi.modality_source}."]),
        ]
    evidence: list = []
    if report.influence is None:
        evidence.append(report.influence_note)
    else:
        evidence.append(report.influence.describe())
        if report.training_note:
            evidence.append(report.training_note)
        for name in report.influence.test_classes:
            if not report.influence.proponents(name, top=top) + report.influence.opponents(name, top=top):
                evidence.append(f"{name}: no training region scored for this class.")
                continue
            sheet = figures.evidence_sheet(report, name, top)  # None when no evidence shown has a picture
            evidence += ([sheet] if sheet is not None else []) + [evidence_table(report, name, top)]
    out.append(("Training evidence (TracIn)", evidence))
    trust = trust_tables(report)
    out.append(("Can this method be trusted?", [block for title, rows in trust for block in (title, rows)]
                or [report.trust_note]))
    out.append(("Settings", [[["setting", "value"]] + [[k, _plain(v)] for k, v in report.settings.items()],
                             "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()) + "."]))
    return out


def uncertainty_blocks(report) -> list:
    """The entropy picture and how much of the predicted tumour is uncertain, or how to ask for it."""
    measured = report.uncertainty
    if measured is None:
        return ["Not asked for (segxai report --uncertainty flips, checkpoints or dropout)."]
    from ..model.uncertainty import DEFAULT_THRESHOLD

    tumour = report.segmentation.labels != 0
    uncertain = measured.entropy > DEFAULT_THRESHOLD
    share = float(uncertain[tumour].mean()) if tumour.any() else 0.0
    information = float(measured.mutual_information[tumour].mean()) if tumour.any() else 0.0
    return [figures.uncertainty_slices(report),
            f"{int(uncertain.sum())} voxels have an entropy above {DEFAULT_THRESHOLD} nats, {share:.0%} of the "
            f"predicted tumour; mean mutual information over the tumour {information:.3f} nats ({measured.describe()}, "
            f"{measured.seconds:.1f} s). segxai explain --target uncertain explains what drove them."]


def _plain(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value) if value else "defaults"
    return str(value)


def identifier_line(report) -> str:
    """The patient's identifiers, shown only when the user asked for them."""
    return "Identifiers (shown on request): " + "; ".join(f"{k} {v}" for k, v in report.identifiers.items()) + "."


def to_html(report, parts) -> str:
    """The whole page: inline style, embedded PNG images, no script and no external resource."""
    body = []
    for title, blocks in parts:
        body.append(f"<h2>{html.escape(title)}</h2>")
        for block in blocks:
            if isinstance(block, np.ndarray):
                body.append(_img_html(block, title))
            elif isinstance(block, list):
                body.append(_table_html(block))
            else:
                body.append(f"<p>{html.escape(str(block))}</p>")
    title = f"{report.case.name}: {report.card.name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>SegXAI case report: {html.escape(report.case.name)}</h1>"
        + (f"<div class=\"sub\">{html.escape(identifier_line(report))}</div>" if report.identifiers else "")
        + f"<div class=\"sub\">Model {html.escape(report.card.name)} · {html.escape(report.created)} · "
        "napari-segxai. Relevance maps explain what this model computed; they are not a diagnosis.</div>"
        + "".join(body) + "</body></html>\n"
    )


def to_png(report, parts, path: Path) -> Path:
    """The same sections stacked on one tall picture."""
    from matplotlib.figure import Figure

    blocks = [("title", f"SegXAI case report: {report.case.name} · {report.card.name} · {report.created}")]
    if report.identifiers:
        blocks.append(("text", identifier_line(report)))
    for title, items in parts:
        blocks.append(("heading", title))
        for item in items:
            if isinstance(item, np.ndarray):
                blocks.append(("image", item))
            elif isinstance(item, list):
                blocks.append(("table", item))
            else:
                blocks.append(("text", str(item)))
    heights = [_height(kind, item) for kind, item in blocks]
    total = sum(heights) + 40
    figure = Figure(figsize=(PAGE_PX / figures.DPI, total / figures.DPI), dpi=figures.DPI, facecolor="white")
    y = total - 20
    for (kind, item), height in zip(blocks, heights):
        y -= height
        if kind == "image":
            scale = min(1.0, (PAGE_PX - 40) / item.shape[1])
            shown = item if scale == 1.0 else _shrink(item, scale)
            figure.figimage(shown, xo=20, yo=int(y), origin="upper")
        elif kind == "table":
            lines = _text_table(item[:14])
            figure.text(20 / PAGE_PX, (y + height - 4) / total, "\n".join(lines), va="top", ha="left",
                        family="monospace", fontsize=8)
        else:
            size = {"title": 14, "heading": 12, "text": 9}[kind]
            figure.text(20 / PAGE_PX, (y + height - 4) / total, _wrap(item, 150 if kind == "text" else 110),
                        va="top", ha="left", fontsize=size, weight="bold" if kind != "text" else "normal")
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png", dpi=figures.DPI, facecolor="white")
    return path


def _text_table(rows: Sequence[Sequence[str]], width: int = 150) -> list[str]:
    """Rows as monospaced lines, each column as wide as its longest cell within a fair share of ``width``."""
    columns = max(len(row) for row in rows)
    cap = max(10, width // columns - 2)
    widths = [min(cap, max(len(str(row[c])) for row in rows if c < len(row))) for c in range(columns)]
    if columns == 2:  # a settings table: the value takes what the name leaves
        widths[1] = max(10, width - widths[0] - 2)
    return ["  ".join(f"{str(cell):<{w}.{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]


def _height(kind: str, item) -> int:
    """Pixels a block takes on the PNG page."""
    if kind == "image":
        return int(item.shape[0] * min(1.0, (PAGE_PX - 40) / item.shape[1])) + 8
    if kind == "table":
        return 13 * min(len(item), 14) + 10
    lines = _wrap(item, 150 if kind == "text" else 110).count("\n") + 1
    return {"title": 30, "heading": 30, "text": 15}[kind] * lines + 4


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or " "


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (< 1) with area averaging of the nearest pixels."""
    height, width = (max(1, int(round(s * scale))) for s in image.shape[:2])
    rows = np.minimum((np.arange(height) / scale).astype(int), image.shape[0] - 1)
    cols = np.minimum((np.arange(width) / scale).astype(int), image.shape[1] - 1)
    return image[np.ix_(rows, cols)]


def write_report(report, out: str | Path, *, top: int | None = None) -> dict[str, Path]:
    """Write report.html, report.png, roi.csv (and influence.csv with TracIn) into ``out``; returns the paths."""
    out = Path(out)
    top = int(report.settings.get("top evidence per class", 4)) if top is None else int(top)
    protected = {Path(p).resolve() for p in report.case.source_paths}
    names = {"html": "report.html", "png": "report.png", "roi": "roi.csv", "influence": "influence.csv"}
    paths = {key: out / name for key, name in names.items()}
    for path in paths.values():
        if path.resolve() in protected:
            raise ValueError(f"Refusing to overwrite {path}: the case was loaded from it; choose another folder.")
    parts = sections(report, top)
    written = {"html": write_text(paths["html"], to_html(report, parts)), "png": to_png(report, parts, paths["png"])}
    if report.roi is not None:
        written["roi"] = report.roi.to_csv(paths["roi"])
    if report.influence is not None:
        written["influence"] = report.influence.to_csv(paths["influence"])
    return written
