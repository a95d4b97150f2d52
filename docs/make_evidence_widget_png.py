"""Make docs/evidence_widget.png: the Training evidence widget on the demo case with the bundled demo model.

Run under a display (or ``xvfb-run -a -s "-screen 0 1600x1000x24"``) from the repository root:

    python docs/make_evidence_widget_png.py --out docs/evidence_widget.png

It opens the demo case, segments it, ranks the training cases for one class (TracIn, indexed
engine, from the index the demo model ships beside its checkpoints), waits for the thumbnails,
opens the strongest proponent and saves a picture of the whole window (256 colours).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def wait(app, done, timeout: float, what: str) -> None:
    """Process Qt events until ``done()`` is true (RuntimeError after ``timeout`` seconds)."""
    start = time.monotonic()
    while not done():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"Gave up waiting for {what} after {timeout:.0f} s.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/evidence_widget.png"), help="the PNG to write")
    parser.add_argument("--case", type=Path, default=None, help="a case folder (default: the demo case)")
    parser.add_argument("--model", type=Path, default=None, help="a model card (default: the bundled demo model)")
    parser.add_argument("--class", dest="class_name", default="edema", help="the class to rank the training cases for")
    parser.add_argument("--engine", default="indexed", help="TracIn engine: indexed or exact")
    parser.add_argument("--top", type=int, default=6, help="proponents and opponents to show")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the query")
    args = parser.parse_args()

    import napari
    import numpy as np
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from napari_segxai._layers import Key, segmentation_layer_data
    from napari_segxai._qt.evidence_widget import EvidenceWidget
    from napari_segxai._reader import napari_get_reader
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import default_model_card
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.model.inference import segment
    from napari_segxai.core.io.generated_cases import demo_case_path

    case_path = args.case or demo_case_path()
    card = load_model_card(args.model) if args.model else default_model_card()
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1600, 1000)
    for data, kwargs, kind in napari_get_reader(str(case_path))(str(case_path)):
        if kind == "labels":
            continue  # the model's segmentation is shown instead of the reference
        kwargs["visible"] = kwargs["metadata"].get(Key.MODALITY) == "flair"
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    case = load_case(case_path)
    start = time.perf_counter()
    seg = segment(case, card)
    print(f"segmented {case.name} in {time.perf_counter() - start:.1f} s")
    data, kwargs, _ = segmentation_layer_data(seg, case, card.path)
    viewer.add_labels(data, **kwargs)

    widget = EvidenceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training evidence", area="right")
    widget.set_model_card(card.path)
    widget.engine.setCurrentText(args.engine)
    widget.test_class.setCurrentText(args.class_name)
    widget.top.setValue(args.top)
    start = time.perf_counter()
    widget.run_button.click()
    wait(app, lambda: not widget.running, args.timeout, "the TracIn query")
    print(f"query: {time.perf_counter() - start:.1f} s; {widget.status.text()}")
    if widget.proponents.count() == 0:
        raise RuntimeError(f"No proponents were shown: {widget.status.text()}")
    wait(app, lambda: not widget.drawing, 600, "the thumbnails")
    print(f"query and thumbnails: {time.perf_counter() - start:.1f} s")

    evidence = widget.proponents.evidence(0)
    widget.proponents.setCurrentRow(0)
    widget.open_training_case(evidence)
    wait(app, lambda: not widget.running, 600, "the training case")
    # An axial view, as radiologists read it (patient's right on the left), through the region.
    ndim = viewer.dims.ndim
    viewer.dims.order = (ndim - 1, *range(ndim - 2, -1, -1))
    viewer.camera.orientation2d = ("up", "left")
    viewer.reset_view()
    world = np.asarray(widget._world_point(evidence, [viewer.layers[f"{evidence.training_case} flair"]]))
    viewer.dims.set_point(range(ndim), world)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture = viewer.screenshot(canvas_only=False, flash=False)
    # 256 colours keep the greys of the MRI and the few class colours, at a third of the size.
    Image.fromarray(np.asarray(picture)[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); {widget.status.text()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
