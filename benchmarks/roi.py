"""RoI importance (``core.roi``) on the demo case and on a full-size case: the shares docs/roi.md quotes, and speed.

Run: ``.venv/bin/python benchmarks/roi.py`` (``--parts shares,speed``; ``--repeats N``).

* ``shares``: the demo case (``segxai demo``'s case) segmented with the bundled demo model and
  explained with ``--method`` (default saliency, the method of docs/roi_widget.png); prints every
  class's share of |relevance| in each region (e_{b->a}) and the region sizes.
* ``speed``: seconds of ``case_regions`` and ``roi_importance`` on the demo case and on a full-size
  case (``../shared/realdata/TCGA-DU-7294`` when present, else a synthetic 4 x 240 x 240 x 155 case),
  with relevance maps of the size ``explain_case`` returns there (3 classes x 4 channels, float32,
  random values: the cost does not depend on them): the first call and the median of the repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import REALDATA, machine, synthetic_case  # noqa: E402

from napari_segxai.core.attribution import explain_case  # noqa: E402
from napari_segxai.core.io.nifti import load_case  # noqa: E402
from napari_segxai.core.model.card import default_model_card  # noqa: E402
from napari_segxai.core.roi import case_regions, roi_importance  # noqa: E402
from napari_segxai.core.model.inference import segment  # noqa: E402
from napari_segxai.core.io.generated_cases import demo_case_path  # noqa: E402


def shares(card, method: str) -> None:
    case = load_case(demo_case_path())
    segmentation = segment(case, card, device="cpu")
    result = explain_case(case, card, method=method, device="cpu")
    regions = case_regions(segmentation.labels, card.classes, channels=case.channels)
    table = roi_importance(result, regions)
    print(f"\n## shares: demo case {case.name}, {method}, bundled model {card.name}")
    print("| class | " + " | ".join(table.region_names) + " |")
    print("|---" * (len(table.region_names) + 1) + "|")
    for name in table.class_names:
        print(f"| {name} | " + " | ".join(f"{100 * table.region(name, r):.0f}%" for r in table.region_names) + " |")
    print("region voxels: " + ", ".join(f"{r} {int(np.count_nonzero(m)):,}" for r, m in regions.items()))


def timed(call, repeats: int) -> tuple[float, float]:
    """Seconds of the first call and the median of ``repeats`` more."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def speed(card, repeats: int) -> None:
    print("\n## speed (seconds: first call / median of the repeats)")
    print("| case | grid | relevance | case_regions | roi_importance |")
    print("|---|---|---|---|---|")
    full = load_case(REALDATA) if REALDATA.is_dir() else synthetic_case()
    demo = load_case(demo_case_path())
    template = explain_case(demo, card, method="saliency", device="cpu")  # a Relevance to carry the random maps
    for case in (demo, full):
        segmentation = segment(case, card, device="cpu")
        rng = np.random.default_rng(0)
        maps = rng.standard_normal((len(template.class_names), len(card.modalities)) + tuple(case.shape), dtype=np.float32)
        relevance = dataclasses.replace(template, relevance=maps)
        regions = case_regions(segmentation.labels, card.classes, channels=case.channels)
        r_first, r_median = timed(lambda: case_regions(segmentation.labels, card.classes, channels=case.channels), repeats)
        i_first, i_median = timed(lambda: roi_importance(relevance, regions), repeats)
        print(f"| {case.name} | {' x '.join(map(str, case.shape))} | {maps.nbytes / 1e6:.0f} MB | "
              f"{r_first:.2f} / {r_median:.2f} | {i_first:.2f} / {i_median:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="shares,speed", help="comma-separated: shares, speed")
    parser.add_argument("--method", default="saliency", help="the method of the shares part (default saliency)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after the first call (default 5)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"shares", "speed"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from shares, speed")
    print(f"machine: {machine()}")
    card = default_model_card()
    if "shares" in parts:
        shares(card, args.method)
    if "speed" in parts:
        speed(card, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
