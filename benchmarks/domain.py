"""The domain check: does its feature distance tell tumour cases from non-tumour cases, with the bundled model?

Run: ``nice -n 5 .venv/bin/python benchmarks/domain.py [--count 6]``. With the bundled demo model
(``sample_data/models/demo3d/card.yaml``, or ``--model CARD``) and its domain reference
(``core.model.domain_reference``: training features and a threshold calibrated on seeds
900000-900009), :func:`core.model.domain.check_domain` on

* in-domain (tumour) cases: ``--count`` held-out generated cases from seed 901000 (never used in
  training or calibration), and the real tumour cases TCGA-DU-7294, TCGA-FG-6692 and
  BraTS-GLI-00001-000 of ``../shared/realdata`` when present;
* non-tumour cases: the MNI152 template anatomy without a lesion (the generator's tissue maps and
  base contrasts, z-scored in the brain, zero outside, a little noise) and the MS case
  open_ms_patient19.

Each case is segmented first and the check is given the segmentation, as ``segxai segment`` does
(so the lesion checks run). Prints, per case, the distance, the predicted lesion volume, its
connected parts, the largest one and its share, the verdict and the seconds; then, non-tumour cases
positive, the AUROC over all cases and over the real cases only of the feature distance, of the
lesion score (log of the smallest training lesion's largest part over the predicted largest part:
how far below every training lesion it is), of the scatter score (one minus the predicted largest
part's share), of the unsure score (one minus the share of the predicted lesion the model is sure of,
:func:`core.model.domain_reference.lesion_confidence`; 1 without a lesion) and of the verdict itself, and how many cases of each group the verdict flags.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import machine  # noqa: E402
from uncertainty import auroc  # noqa: E402

from napari_segxai.core.io.paths import demo_model_card_path  # noqa: E402
from napari_segxai.core.model.card import build_network  # noqa: E402
from napari_segxai.core.training.synth import lesion_free_case  # noqa: E402
from napari_segxai.core.model.domain import check_domain  # noqa: E402
from napari_segxai.core.model.domain_reference import SURE, domain_reference, lesion_confidence, lesion_parts  # noqa: E402
from napari_segxai.core.model.inference import segment  # noqa: E402
from napari_segxai.core.model.loading import load_model_card  # noqa: E402

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
TUMOUR_CASES = ("TCGA-DU-7294", "TCGA-FG-6692", "BraTS-GLI-00001-000")
NON_TUMOUR_CASES = ("open_ms_patient19",)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(demo_model_card_path("demo3d")))
    parser.add_argument("--count", type=int, default=6, help="held-out generated tumour cases (seeds 901000-)")
    parser.add_argument("--seed-start", type=int, default=901_000)
    parser.add_argument("--tumour-case", action="append", default=[], metavar="DIR",
                        help="another real labelled tumour case folder (repeatable), e.g. the BrainLesion BraTS case "
                             "that benchmarks/realdata.py --brainlesion builds")
    args = parser.parse_args()
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.training.synth import generate_case

    print(machine())
    card = load_model_card(args.model)
    network = build_network(card, "cpu")
    start = time.perf_counter()
    reference = domain_reference(card, network=network, device="cpu")
    print(f"reference: {len(reference.features)} training cases, layer {reference.layer}, threshold "
          f"{reference.threshold:.3f} (held-out calibration distances {np.round(reference.calibration, 3).tolist()}), "
          f"{time.perf_counter() - start:.1f} s to load or build")
    known = np.isfinite(reference.lesions)
    lesions, largest = reference.lesions[known], reference.largest[known]
    smallest = float(largest.min())
    print(f"training lesions: {float(lesions.min()):.1f} to {float(lesions.max()):.1f} mL (median "
          f"{float(np.median(lesions)):.1f}), their largest parts from {smallest:.1f} mL, holding at least "
          f"{100 * float(reference.focality[known].min()):.0f}% of the lesion")
    print(f"calibration cases: the model is sure (lesion probability >= {SURE:.0%}) of "
          f"{', '.join(f'{100 * c:.0f}%' for c in reference.confidence)} of their predicted lesions")
    cases = [("generated", False, lambda s=s: generate_case(s).case)
             for s in range(args.seed_start, args.seed_start + args.count)]
    cases += [("real tumour", False, lambda n=n: load_case(REALDATA / n)) for n in TUMOUR_CASES
              if (REALDATA / n).is_dir()]
    cases += [("real tumour", False, lambda p=p: load_case(Path(p))) for p in args.tumour_case]
    cases += [("template", True, lesion_free_case)]
    cases += [("real non-tumour", True, lambda n=n: load_case(REALDATA / n)) for n in NON_TUMOUR_CASES
              if (REALDATA / n).is_dir()]
    rows = []
    for group, negative, make in cases:
        case = make()
        seg = segment(case, card, network=network, device="cpu")
        start = time.perf_counter()
        check = check_domain(case, card, network=network, device="cpu", reference=reference, segmentation=seg)
        seconds = time.perf_counter() - start
        lesion, part, share, parts = lesion_parts(seg.labels, seg.affine)
        sure = lesion_confidence(seg.probabilities, seg.labels, card.activation)
        rows.append((group, negative, check.distance, np.log(smallest / max(part, 0.01)), 1 - share,
                     1 - sure if np.isfinite(sure) else 1.0, not check.in_distribution))
        print(f"{case.name:<28} {group:<16} distance {check.distance:7.3f}  lesion {lesion:7.1f} mL in {parts:3d} parts, largest "
              f"{part:7.1f} mL ({100 * share:3.0f}%)  sure of {100 * sure:3.0f}%  {seconds:5.1f} s  {check.verdict}")
    positives = np.array([r[1] for r in rows])
    real = np.array([r[0] != "generated" and r[0] != "template" for r in rows])
    for column, name in ((2, "feature distance"), (3, "lesion score"), (4, "scatter score"),
                         (5, "unsure score"), (6, "verdict (flagged = 1)")):
        values = np.array([float(r[column]) for r in rows])
        print(f"AUROC of the {name}, non-tumour vs tumour: all {len(rows)} cases {auroc(values, positives):.3f}, "
              f"real cases only ({int(real.sum())}) {auroc(values[real], positives[real]):.3f}")
    for group in dict.fromkeys(r[0] for r in rows):
        chosen = [r for r in rows if r[0] == group]
        print(f"flagged out of distribution (any reason), {group}: {sum(r[6] for r in chosen)} of {len(chosen)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
