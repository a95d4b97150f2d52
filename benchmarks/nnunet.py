"""nnU-Net v2 model folders: `segxai segment` against nnU-Net's own predictor, and the cost of explaining.

The model is a real nnU-Net v2 model that nnU-Net plans and trains itself (``nnUNetv2_plan_and_preprocess``,
``nnUNetv2_train -tr nnUNetTrainer_1epoch``, folds 0 and 1) on toy generated cases (tests/_nnunet.py);
it is built on the first run (about 2-3 minutes on 2 cores) and kept in ``--cache``.

Stages (``--parts``):
- ``segment``: per case, interleaved after one warm-up, median of ``--repeats``: napari-segxai's
  ``load_case`` + ``segment()`` on the model folder (folds 0+1, checkpoint_final, mirroring; the folds'
  networks loaded once before, as the predictor is initialised once) against
  nnU-Net's ``SimpleITKIO.read_images`` + ``nnUNetPredictor.predict_single_npy_array`` (initialised from
  the same folder, folds and checkpoint, ``tile_step_size`` 0.5, Gaussian, mirroring, on the same device),
  ratio ours / nnU-Net; Dice per label value between the two label maps and the largest probability difference.
- ``explain``: the vanilla gradient (``saliency``) of one class (the toy model's predicted oedema as a region
  target) through ``explain_case`` on fold 0, against the floor of one forward and one backward per class per
  window over the same preprocessed image, windows and class, in bare torch; ratios ours / floor and ours /
  (floor + nnU-Net's preprocessing of the case, which every explanation needs). Two models: the toy one (its
  network grid is ~22^3, so preprocessing dominates) and a timing model of nnU-Net's usual size: the toy
  folder's plans edited to 1.5 mm voxels, a 96^3 patch and 5 stages (32-320 features), with nnU-Net's random
  initialisation saved as its checkpoint (timing only: its maps mean nothing).

- ``bundle``: the same comparison for a MONAI bundle written by ``tests/_bundle.py`` (a small 3D UNet with
  random weights, 96^3 windows, overlap 0.5, Gaussian; LoadImaged, EnsureChannelFirstd, channel-wise
  NormalizeIntensityd on non-zero voxels, softmax): napari-segxai's ``load_case`` + ``segment()`` on the bundle
  folder against the bundle's own ``preprocessing``, ``network_def`` (weights loaded) and ``inferer`` run through
  ``monai.bundle.ConfigParser``, then softmax; the largest probability difference and label agreement.

Cases: the held-out toy case (32^3, ~6-7 mm) and, when ``../shared/realdata`` is there, TCGA-DU-7294
(4 x 240 x 240 x 155 at 1 mm, which nnU-Net resamples to the plans' spacing).

Run: ``.venv/bin/python benchmarks/nnunet.py [--repeats 3] [--parts segment,explain,bundle] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
REAL_CASE = ROOT.parent / "shared" / "realdata" / "TCGA-DU-7294"


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores (torch threads "
            f"{torch.get_num_threads()}), {'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; "
            f"load average {load:.1f}; torch {torch.__version__}, Python {platform.python_version()}")


def _files(case_dir: Path) -> list[Path]:
    """The case's four images in the model's channel order (t1, t1ce, t2, flair)."""
    from napari_segxai.core import naming

    found = {naming.modality_from_name(p): p for p in case_dir.glob("*.nii*") if naming.modality_from_name(p)}
    return [found[m] for m in ("t1", "t1ce", "t2", "flair")]


def _nnunet_predictor(folder: Path, device: torch.device):
    with contextlib.redirect_stdout(io.StringIO()):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1),
                                                       checkpoint_name="checkpoint_final.pth")
    return predictor


def _theirs(predictor, files):
    """(seconds reading, seconds predicting), labels, probabilities."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        image, properties = SimpleITKIO().read_images([str(f) for f in files])
        read = time.perf_counter()
        labels, probabilities = predictor.predict_single_npy_array(image, properties, None, None, True)
    return (read - start, time.perf_counter() - read), labels.transpose(2, 1, 0), probabilities.transpose(0, 3, 2, 1)


def _ours(card, network, case_dir, device):
    """(seconds reading, seconds segmenting), labels, probabilities."""
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.inference import segment

    start = time.perf_counter()
    case = load_case(case_dir)
    read = time.perf_counter()
    result = segment(case, card, network=network, device=device)
    return (read - start, time.perf_counter() - read), result.labels, result.probabilities


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def stage_segment(model, cases, repeats, device) -> None:
    from napari_segxai.core.model.loading import load_model_card

    from napari_segxai.core.model.card import build_network

    card = load_model_card(model.folder)
    network = build_network(card, device)  # loaded once, as the predictor is initialised once
    predictor = _nnunet_predictor(model.folder, device)
    print("\n## segment: napari-segxai segment() vs nnUNetPredictor (folds 0+1, checkpoint_final, mirroring)")
    print("case | shape | ours s: read + segment (median) | nnU-Net s: read + predict (median) | ours / nnU-Net "
          "(segment vs predict only) | Dice per label (min) | max abs p diff")
    for name, case_dir in cases:
        files = _files(case_dir)
        _ours(card, network, case_dir, device), _theirs(predictor, files)  # warm-up
        ours, theirs = [], []
        for _ in range(repeats):
            t, labels, probabilities = _ours(card, network, case_dir, device)
            ours.append(t)
            t, expected_labels, expected_probabilities = _theirs(predictor, files)
            theirs.append(t)
        dice = []
        for value in np.union1d(np.unique(labels), np.unique(expected_labels)):
            a, b = labels == value, expected_labels == value
            dice.append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
        diff = float(np.abs(probabilities - expected_probabilities).max())
        o_read, o_run = (statistics.median(x) for x in zip(*ours))
        t_read, t_run = (statistics.median(x) for x in zip(*theirs))
        o, t = statistics.median(a + b for a, b in ours), statistics.median(a + b for a, b in theirs)
        print(f"{name} | {'x'.join(map(str, labels.shape))} | {o:.3f} ({o_read:.3f} + {o_run:.3f}) | {t:.3f} "
              f"({t_read:.3f} + {t_run:.3f}) | {o / t:.2f}x ({o_run / t_run:.2f}x) | {min(dice):.4f} ({len(dice)} labels) "
              f"| {diff:.2e}")


def _floor(network, image, goal_mask, class_index, card, slicers) -> float:
    """Bare torch: per window one forward and one backward of the class's logit summed over the region."""
    start = time.perf_counter()
    for window in slicers:
        x = image[(slice(None), slice(None), *window)].detach().clone().requires_grad_(True)
        mask = goal_mask[window]
        if not mask.any():
            continue
        logits = network(x)
        (logits[0, class_index] * mask).sum().backward()
    return time.perf_counter() - start


def timing_model(model) -> Path:
    """The toy folder with plans of nnU-Net's usual size and randomly initialised weights (built once)."""
    import json
    import shutil

    folder = model.root / "timing" / model.folder.name
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    if checkpoint.is_file():
        return folder
    shutil.rmtree(folder.parent, ignore_errors=True)
    (folder / "fold_0").mkdir(parents=True)
    shutil.copy(model.folder / "dataset.json", folder / "dataset.json")
    plans = json.loads((model.folder / "plans.json").read_text())
    configuration = plans["configurations"]["3d_fullres"]
    configuration.update(spacing=[1.5, 1.5, 1.5], patch_size=[96, 96, 96])
    kwargs = configuration["architecture"]["arch_kwargs"]
    kwargs.update(n_stages=5, features_per_stage=[32, 64, 128, 256, 320], kernel_sizes=[[3, 3, 3]] * 5,
                  strides=[[1, 1, 1]] + [[2, 2, 2]] * 4, n_conv_per_stage=[2] * 5, n_conv_per_stage_decoder=[2] * 4)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    from napari_segxai.core.model.architectures import create_network

    content = torch.load(model.folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    architecture = configuration["architecture"]
    network = create_network("nnunet", {"network_class_name": architecture["network_class_name"],
                                        "arch_kwargs": kwargs, "arch_kwargs_req_import": architecture["_kw_requires_import"],
                                        "input_channels": 4, "output_channels": 4})
    content["network_weights"] = network.state_dict()
    torch.save(content, checkpoint)
    return folder


def stage_explain(model, cases, repeats, device) -> None:
    print("\n## explain: saliency of one class (region target) on fold 0 vs the floor (forward + backward per window)")
    print("model | case | network grid | windows with the region | ours s (median) | floor s | preprocessing s | "
          "ours / floor | ours / (floor + preprocessing)")
    for label, folder in (("toy", model.folder), ("timing 96^3", timing_model(model))):
        explain_one_model(label, folder, model.folder, cases, repeats, device)


def explain_one_model(label, folder, toy_folder, cases, repeats, device) -> None:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    from napari_segxai.core.attribution.explain_case import explain_case
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import build_network
    from napari_segxai.core.model.loading import load_model_card
    from napari_segxai.core.model.inference import segment

    card = load_model_card(folder, folds=["0"], mirroring=False)
    network = build_network(card, device)
    edema = card.class_names.index("edema")
    toy = load_model_card(toy_folder, folds=["0"], mirroring=False)
    for name, case_dir in cases:
        case = load_case(case_dir)
        region = segment(case, toy, device=device).labels == toy.classes[edema].label
        if not region.any():
            print(f"{label} | {name} | - | - | no predicted oedema to explain | - | - | - | -")
            continue
        image, grid = card.source.preprocess(case, card, device=device)
        mask = torch.as_tensor(grid.to_network_grid(region.astype(np.float32)) > 0.5, device=device)
        patch = card.roi_size
        steps = compute_steps_for_sliding_window([max(s, p) for s, p in zip(image.shape[2:], patch)], patch, 0.5)
        slicers = [tuple(slice(a, a + p) for a, p in zip((x, y, z), patch))
                   for x in steps[0] for y in steps[1] for z in steps[2]]
        pad = [(0, max(p - s, 0)) for s, p in zip(image.shape[2:], patch)]
        padded = torch.nn.functional.pad(image, [v for p in reversed(pad) for v in p])
        padded_mask = torch.nn.functional.pad(mask, [v for p in reversed(pad) for v in p])
        explain_case(case, card, method="saliency", classes=[edema], target="region", region=region,
                     network=network, device=device)  # warm-up
        _floor(network, padded, padded_mask, edema, card, slicers)
        ours, floor, prep = [], [], []
        for _ in range(repeats):
            prep.append(_timed(card.source.preprocess, case, card)[0])
            ours.append(_timed(
                lambda: explain_case(case, card, method="saliency", classes=[edema], target="region", region=region,
                                     network=network, device=device))[0])
            floor.append(_floor(network, padded, padded_mask, edema, card, slicers))
        used = sum(bool(padded_mask[w].any()) for w in slicers)
        o, f, p = statistics.median(ours), statistics.median(floor), statistics.median(prep)
        print(f"{label} | {name} | {'x'.join(map(str, image.shape[2:]))} | {used} of {len(slicers)} | {o:.3f} | "
              f"{f:.3f} | {p:.3f} | {o / f:.2f}x | {o / (f + p):.2f}x")


def stage_bundle(model, cases, repeats, device) -> None:
    from _bundle import inference_config, write_bundle
    from monai.bundle import ConfigParser

    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.card import build_network
    from napari_segxai.core.model.inference import segment
    from napari_segxai.core.model.loading import load_model_card

    bundle = model.root / "bundle"
    if not (bundle / "models" / "model.pt").is_file():
        write_bundle(bundle, config=inference_config(inferer={
            "_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 2, "overlap": 0.5,
            "mode": "gaussian"}))
    card = load_model_card(bundle)
    network = build_network(card, device)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    their_network = parser.get_parsed_content("network_def").to(device).eval()
    their_network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    preprocessing, inferer = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer")

    def ours(case_dir):
        start = time.perf_counter()
        case = load_case(case_dir)
        read = time.perf_counter()
        result = segment(case, card, network=network, device=device)
        return (read - start, time.perf_counter() - read), result.probabilities

    def theirs(files):
        start = time.perf_counter()
        data = preprocessing({"image": files})  # LoadImaged reads the files
        with torch.no_grad():
            logits = inferer(data["image"][None].to(device), their_network)
        probabilities = torch.softmax(logits[0].float(), 0).cpu().numpy()
        return (0.0, time.perf_counter() - start), probabilities

    print("\n## bundle: napari-segxai segment() vs the bundle's own transforms, network and inferer (monai.bundle)")
    print("case | shape | ours s: read + segment (median) | bundle s: load + preprocess + infer (median) | ours / bundle "
          "| labels equal | max abs p diff")
    for name, case_dir in cases:
        files = [str(f) for f in (lambda f: [f[1], f[0], f[2], f[3]])(_files(case_dir))]  # channel_def: T1c, T1, T2, FLAIR
        ours(case_dir), theirs(files)  # warm-up
        mine, bundle_times = [], []
        for _ in range(repeats):
            t, probabilities = ours(case_dir)
            mine.append(sum(t))
            t, expected = theirs(files)
            bundle_times.append(sum(t))
        equal = float((probabilities.argmax(0) == expected.argmax(0)).mean())
        o, b = statistics.median(mine), statistics.median(bundle_times)
        print(f"{name} | {'x'.join(map(str, probabilities.shape[1:]))} | {o:.3f} | {b:.3f} | {o / b:.2f}x | "
              f"{equal:.6f} | {float(np.abs(probabilities - expected).max()):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="segment,explain,bundle")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("SEGXAI_TEST_CACHE", "/tmp/segxai-bench")))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from _nnunet import build_nnunet_model

    device = torch.device(args.device)
    print(f"# benchmarks/nnunet.py\nMachine: {machine()}")
    start = time.perf_counter()
    model = build_nnunet_model(args.cache / "nnunet-toy")
    print(f"Model: {model.folder} (ready in {time.perf_counter() - start:.0f} s)")
    cases = [("toy held-out", model.case)] + ([("TCGA-DU-7294", REAL_CASE)] if REAL_CASE.is_dir() else [])
    parts = args.parts.split(",")
    if "segment" in parts:
        stage_segment(model, cases, args.repeats, device)
    if "explain" in parts:
        stage_explain(model, cases, args.repeats, device)
    if "bundle" in parts:
        stage_bundle(model, cases, args.repeats, device)


if __name__ == "__main__":
    main()
