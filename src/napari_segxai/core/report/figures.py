"""The report's pictures as RGB arrays (matplotlib's Agg renderer, no display): slices, relevance, bars, evidence."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from ..thumbnails import case_tile, thumbnail

AXES = ((2, "axial"), (1, "coronal"), (0, "sagittal"))
SLICE_PX = 300
PANEL_PX = 170
DPI = 100
OVERLAY_PERCENTILE = 99.5   # the relevance shown fully opaque: this percentile of the class's |relevance|


def render(figure) -> np.ndarray:
    """A matplotlib figure as an (H, W, 3) uint8 array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB array encoded as PNG."""
    import matplotlib.image

    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, image, format="png")
    return buffer.getvalue()


def region_centre(mask: np.ndarray) -> tuple[int, ...]:
    """The voxel of ``mask`` nearest its centre of mass (the grid's centre when the mask is empty)."""
    where = np.argwhere(mask)
    if len(where) == 0:
        return tuple(int(s) // 2 for s in mask.shape)
    centre = where.mean(axis=0)
    return tuple(int(v) for v in where[np.argmin(((where - centre) ** 2).sum(axis=1))])


def shown_channel(modalities: Sequence[str]) -> int:
    """The channel the slices show: FLAIR when the case has it (oedema and tumour extent), else the first."""
    names = [m.lower() for m in modalities]
    return names.index("flair") if "flair" in names else 0


def _panels(images: Sequence[np.ndarray], titles: Sequence[str], columns: int, title: str = "") -> np.ndarray:
    """Pictures in a grid with a caption above each (and an optional title), as one RGB array."""
    from matplotlib.figure import Figure

    rows = -(-len(images) // columns)
    side = max(image.shape[0] for image in images) / DPI
    head = (0.35 if len(title) < columns * side * 13 else 0.55) if title else 0.0
    figure = Figure(figsize=(columns * side, rows * (side + 0.3) + head), dpi=DPI, facecolor="white")
    for i, (image, caption) in enumerate(zip(images, titles)):
        r, c = divmod(i, columns)
        bottom = 1 - (head + (r + 1) * (side + 0.3)) / (rows * (side + 0.3) + head)
        axes = figure.add_axes((c / columns, bottom, 1 / columns, side / (rows * (side + 0.3) + head)))
        axes.imshow(image, interpolation="nearest")
        axes.set_axis_off()
        axes.set_title(caption, fontsize=9, pad=3)
    if title:
        import textwrap

        figure.suptitle(textwrap.fill(title, int(columns * side * 13)), fontsize=9,
                        y=1 - 0.05 / (rows * (side + 0.3) + head))
    return render(figure)


def orthogonal_slices(report) -> np.ndarray:
    """Axial, coronal and sagittal slices through the tumour's centre with the segmentation outlined."""
    case, seg = report.case, report.segmentation
    centre = region_centre(seg.labels != 0)
    channel = shown_channel(case.modalities)
    images = [thumbnail(case, seg.labels, centre, axis=axis, size=SLICE_PX, colors=report.card.classes,
                        channel=channel) for axis, _ in AXES]
    world = (case.affine @ np.r_[np.asarray(centre, float), 1.0])[:3]
    titles = [f"{name} ({case.modalities[channel]})" for _, name in AXES]
    where = "the tumour's centre" if np.any(seg.labels != 0) else "the middle of the case (no tumour predicted)"
    return _panels(images, titles, 3, title=f"through {where}: voxel {centre}, "
                                            f"{', '.join(f'{v:.0f}' for v in world)} mm")


def uncertainty_slices(report) -> np.ndarray:
    """The entropy over axial, coronal and sagittal slices through the tumour's centre, the segmentation outlined."""
    case, seg, measured = report.case, report.segmentation, report.uncertainty
    centre = region_centre(seg.labels != 0)
    channel = shown_channel(case.modalities)
    images = [thumbnail(case, seg.labels, centre, axis=axis, size=PANEL_PX, colors=report.card.classes,
                        channel=channel, overlay=measured.entropy, overlay_limit=measured.max_entropy)
              for axis, _ in AXES]
    return _panels(images, [name for _, name in AXES], 3,
                   title=f"entropy (red; full at {measured.max_entropy:.2f} nats, the most {len(report.card.classes)} "
                         f"classes allow) from {measured.describe()}")


def relevance_grid(report) -> np.ndarray:
    """Per explained class (rows) and input channel (columns): the slice through the class with its relevance."""
    case, seg, rel = report.case, report.segmentation, report.relevance
    label_of = {info.name: info.label for info in report.card.classes}
    images, titles = [], []
    for k, name in enumerate(rel.class_names):
        maps = rel.relevance[k]
        centre = region_centre(seg.labels == label_of.get(name, -1))
        magnitude = np.abs(maps)
        limit = float(np.percentile(magnitude[magnitude > 0], OVERLAY_PERCENTILE)) if np.any(magnitude > 0) else 0.0
        shares = report.roi.modality_share[list(report.roi.class_names).index(name)] if name in report.roi.class_names \
            else np.full(len(rel.channel_names), np.nan)
        for c, channel in enumerate(rel.channel_names):
            shown = channel if channel in case.modalities else shown_channel(case.modalities)
            images.append(thumbnail(case, seg.labels, centre, axis=2, size=PANEL_PX, colors=report.card.classes,
                                    channel=shown, overlay=maps[c], overlay_limit=limit))
            titles.append(f"{name} · {channel}  {shares[c]:.0%}")
    return _panels(images, titles, len(rel.channel_names),
                   title=f"{rel.method}: red for the class, blue against it (axial slice through each class; "
                         f"% = share of the class's |relevance| in the sequence)")


def roi_bars(report) -> np.ndarray:
    """The RoI importance chart: by region and by input channel."""
    from matplotlib.figure import Figure

    from ..roi_chart import draw_roi_bars, legend_entries

    colors = {info.name: info.color for info in report.card.classes}
    figure = Figure(figsize=(10, 3.4), dpi=DPI, facecolor="white", layout="constrained")
    for i, view in enumerate(("region", "modality")):
        axes = figure.add_subplot(1, 2, i + 1)
        draw_roi_bars(axes, report.roi, view=view, region_colors=colors,
                      title="where the relevance lies" if view == "region"
                      else f"which sequence carries it ({report.roi.modality_source})")
        handles, labels = legend_entries(axes, signed=False)
        axes.legend(handles, labels, fontsize=7, frameon=False, loc="upper right")
    return render(figure)


def evidence_sheet(report, class_name: str, top: int) -> np.ndarray | None:
    """Proponents and opponents of one class as labelled thumbnails (those whose training case is here), or None."""
    import tempfile
    from pathlib import Path

    import matplotlib.image

    from ..thumbnails import contact_sheet

    result = report.influence
    if result is None or class_name not in result.test_classes:
        return None
    rows = {}
    for row, items in (("Proponents", result.proponents(class_name, top=top)),
                       ("Opponents", result.opponents(class_name, top=top))):
        tiles = [case_tile(e, report.training_cases[e.seed], colors=report.card.classes) for e in items
                 if e.seed in report.training_cases]
        if tiles:
            rows[row] = tiles
    if not rows:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = contact_sheet(rows, Path(folder) / "sheet.png", title=f"training evidence for {class_name}")
        return (matplotlib.image.imread(path)[..., :3] * 255).round().astype(np.uint8)
