"""The figures of docs/attribution.md: speed, completeness / conservation checks, costs and where each method runs.

Run: ``nice -n 5 .venv/bin/python benchmarks/attribution.py`` (``--parts a,b`` picks sections,
``--repeats N`` the timed runs; ``--help``). Every section prints a small table headed by the machine,
the torch version and the load average at its start (and the load at its end), so a number copied
into the docs can be traced to the line that printed it. Sections:

* ``where``: for every registered method (``available_methods()``), whether ``explain_case`` runs it
  window by window over the card's sliding-window model (``method.windowable``, as
  ``explain_case`` decides) or on one crop around the target region; SmoothGrad for every base and
  variant; the crop margin and granule of the bundled demo card.
* ``timing``: the bundled demo model (UNet 8-16-32-64, trained) on a 64^3 crop of the demo case,
  3 classes: ``saliency`` against the bare-torch floor (one forward, one backward per class) and
  captum ``Saliency`` once per class; minimum and median of ``--repeats`` interleaved runs.
* ``loop``: one forward and K backward passes with ``retain_graph`` (what ``class_gradients`` does)
  against one ``autograd.grad(..., is_grads_batched=True)``: a tiny UNet (4, 8) at 16^3, the demo
  model at 64^3 and 96^3.
* ``ig``: Integrated Gradients completeness (sum of the map against S(x) - S(x')) on a two-level
  MONAI UNet (4, 8) at 16^3 with instance and batch norm, three baselines, warp 1 (captum's spacing)
  and 3 at 16, 32, 64 and 256 steps; S along the straight path from zeros.
* ``deeplift``: summation-to-delta errors as shipped (batch and instance norm, ReLU and PReLU), and
  two states set up inside this script only: PReLU without the Rescale rule (captum's own table,
  as before the rule was added), and the instance norms given the element-wise Rescale rule.
* ``lrp``: relevance conservation (input relevance / starting logits, ``start="logit"``) for the
  three composites with and without ``zero_bias`` on a 3-level MONAI UNet, SegResNet and DynUNet.
* ``shap``: Kernel SHAP against brute-force Shapley values (8 features: exact enumeration, 250
  samples, and plain kernel-weighted sampling of the same budget), and against captum ``KernelShap``.
* ``slic``: seconds of ``supervoxels.slic`` at 96^3 x 4 channels (a crop of the real case).
* ``occlusion``: the number of occluded forward passes at 96^3 (arithmetic from ``window_starts``).
* ``case``: ``explain_case`` on the real case TCGA-DU-7294 with the bundled demo card, the target
  the ``fusion_mav`` tumour region, 3 classes: saliency and Integrated Gradients (8 steps); each in
  its own process, peak resident memory from the kernel (``ru_maxrss``).
* ``memory``: Integrated Gradients' memory per path point on the real case's network grid
  (4 x 120 x 120 x 80) against ``base.samples_per_batch``'s estimate, in units of A (bytes of all
  module outputs of one forward pass of one copy); each batch size in its own process, peak
  resident memory from the kernel (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relevance import benchmark_target, release_memory  # noqa: E402
from segment import REALDATA, PeakRSS  # noqa: E402

from napari_segxai.core.attribution import available_methods, get_method, method_class, region_target  # noqa: E402
from napari_segxai.core.attribution import predicted_target, windowable_methods  # noqa: E402
from napari_segxai.core.attribution.integrated_gradients import make_baseline  # noqa: E402

PARTS = ("where", "timing", "loop", "ig", "deeplift", "lrp", "shap", "slic", "occlusion", "case", "memory")
LABEL_FILE = "fusion_mav.nii.gz"


# ---- reporting -----------------------------------------------------------------------------------


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(title: str) -> None:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"\n## {title}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}), {gpu}; "
          f"torch {torch.__version__}; load average (1 / 5 / 15 min) at the start: {load()}", flush=True)


def footer() -> None:
    print(f"load average at the end: {load()}", flush=True)


def table(columns: list[str], rows: list[list]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")
    sys.stdout.flush()


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def span(values, fmt=pct) -> str:
    values = list(values)
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)}"


def timings(calls: dict, repeats: int) -> dict:
    """Wall seconds of each call, interleaved (a, b, c, a, b, c, ...) after one warm-up of each."""
    for call in calls.values():
        call()
    runs = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            runs[name].append(time.perf_counter() - start)
    return runs


def seconds(values, unit: str = "s") -> str:
    scale = 1000.0 if unit == "ms" else 1.0
    return f"{scale * min(values):.{1 if unit == 'ms' else 2}f} / {scale * statistics.median(values):.{1 if unit == 'ms' else 2}f} {unit}"


# ---- networks and inputs -------------------------------------------------------------------------


def two_level_unet(cin: int, cout: int, **kwargs) -> torch.nn.Module:
    """A two-level MONAI UNet (4, 8), one residual unit, fixed weights (the tests' tiny net)."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, cin, cout, channels=(4, 8), strides=(2,), num_res_units=1, **kwargs).eval()


def tiny_input(cin: int, side: int = 16) -> torch.Tensor:
    return torch.randn((1, cin) + (side,) * 3, generator=torch.Generator().manual_seed(2))


def present_target(net, x, classes) -> object:
    """The predicted regions of the classes the net predicts somewhere."""
    with torch.no_grad():
        logits = net(x)
    present = [c for c in classes if (logits[0].argmax(0) == c).any()]
    return predicted_target(logits, present)


def demo_model():
    from napari_segxai.core.model.card import build_network, default_model_card

    card = default_model_card()
    network = build_network(card, "cpu")
    for p in network.parameters():
        p.requires_grad_(False)
    return card, network


def demo_cube(card, side: int) -> torch.Tensor:
    """The demo case on the card's grid, centre-cropped (and zero-padded) to side^3."""
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.preprocess import preprocess
    from napari_segxai.core.io.generated_cases import demo_case_path

    with torch.no_grad():
        image, _ = preprocess(load_case(demo_case_path()), card, device="cpu")
    out = image.new_zeros((1, image.shape[1], side, side, side))
    src, dst = [], []
    for s in image.shape[2:]:
        n = min(s, side)
        a, b = (s - n) // 2, (side - n) // 2
        src.append(slice(a, a + n))
        dst.append(slice(b, b + n))
    out[(slice(None), slice(None)) + tuple(dst)] = image[(slice(None), slice(None)) + tuple(src)]
    return out


# ---- where ---------------------------------------------------------------------------------------


def part_where(args) -> None:
    from napari_segxai.core.attribution.explain_case import _granule
    from napari_segxai.core.attribution.smoothgrad import VARIANTS, gradient_methods
    from napari_segxai.core.model.card import default_model_card

    header("where: the support region of each registered method in explain_case")
    print(f"available_methods(): {', '.join(available_methods())}")
    print(f"windowable_methods(): {', '.join(windowable_methods())}")
    rows = []
    for name in available_methods():
        cls = method_class(name)
        method = get_method(name)
        where = "window by window" if method.windowable else "one crop"
        rows.append([name, cls.windowable, method.windowable, cls.uses_baseline, where])
    table(["method (default parameters)", "class windowable", "instance windowable", "uses baseline",
           "explain_case runs it"], rows)
    rows = []
    for base in gradient_methods():
        for variant in VARIANTS:
            method = get_method("smoothgrad", base=base, variant=variant)
            rows.append([base, variant, method.windowable, "window by window" if method.windowable else "one crop"])
    table(["smoothgrad base", "variant", "windowable", "explain_case runs it"], rows)
    card = default_model_card()
    window = card.roi_size
    print(f"bundled demo card {card.name}: windows {tuple(window)}, overlap {card.overlap}; one-crop methods: "
          f"default margin {tuple(int(w) // 2 for w in window)} voxels per side (half a window), crop sides "
          f"multiples of {tuple(_granule(int(w)) for w in window)}, at least one window")
    footer()


# ---- timing --------------------------------------------------------------------------------------


def part_timing(args) -> None:
    from captum.attr import Saliency

    header("timing: saliency vs the bare-torch floor vs captum Saliency (bundled demo model, 64^3, 3 classes)")
    card, network = demo_model()
    x = demo_cube(card, 64)
    classes = tuple(i for i, c in enumerate(card.classes) if c.label != 0)
    with torch.no_grad():
        logits = network(x)
    target = benchmark_target(logits, classes)
    K = len(classes)
    masks = torch.from_numpy(np.array(target.masks)).float()
    ours_method = get_method("saliency")

    def ours():
        return ours_method.attribute(network, x, target)

    def floor():
        inputs = x.detach().requires_grad_(True)
        values = (network(inputs)[0, list(classes)] * masks).flatten(1).sum(1)
        return [torch.autograd.grad(values[k], inputs, retain_graph=k < K - 1)[0] for k in range(K)]

    def captum():
        explainer = Saliency(lambda z: target.scalars(network(z)))
        return [explainer.attribute(x, target=k, abs=False) for k in range(K)]

    reference = ours()
    torch.testing.assert_close(reference, torch.cat(captum()), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(reference, torch.cat(floor()), rtol=1e-4, atol=1e-6)
    runs = timings({"saliency": ours, "floor": floor, "captum": captum}, args.repeats)
    print(f"input 1 x 4 x 64^3 (centre of the demo case on the card's grid); target voxels {list(target.voxel_counts)}; "
          f"the three maps agree (rtol 1e-4); {args.repeats} interleaved runs after a warm-up")
    table(["call", "min / median wall"],
          [["ours: `saliency` (1 forward, 1 backward per class)", seconds(runs["saliency"])],
           ["bare-torch floor (1 forward + 1 backward per class, by hand)", seconds(runs["floor"])],
           ["captum `Saliency`, once per class", seconds(runs["captum"])]])
    footer()


# ---- loop ----------------------------------------------------------------------------------------


def part_loop(args) -> None:
    header("loop: K backward passes with retain_graph vs one autograd.grad(is_grads_batched=True), 3 classes")
    card, demo = demo_model()
    rows = []
    tiny = two_level_unet(4, 4)
    for p in tiny.parameters():
        p.requires_grad_(False)
    setups = [("tiny UNet (4, 8), 4 in / 4 out", tiny, tiny_input(4), "ms", max(args.repeats * 10, 20))]
    for side in (64, 96):
        setups.append(("bundled demo model (8, 16, 32, 64)", demo, demo_cube(card, side), "s", args.repeats))
    for label, net, x, unit, repeats in setups:
        with torch.no_grad():
            logits = net(x)
        target = benchmark_target(logits, (1, 2, 3))
        K = len(target.classes)

        def loop():
            inputs = x.detach().requires_grad_(True)
            scalars = target.scalars(net(inputs))
            return torch.stack([torch.autograd.grad(scalars[:, k].sum(), inputs, retain_graph=k < K - 1)[0]
                                for k in range(K)], 1)

        def batched():
            inputs = x.detach().requires_grad_(True)
            scalars = target.scalars(net(inputs))
            eye = torch.eye(K).unsqueeze(1)  # (K, 1, K): one unit vector per class
            (grads,) = torch.autograd.grad(scalars, inputs, eye, is_grads_batched=True)
            return grads.transpose(0, 1)

        torch.testing.assert_close(loop(), batched(), rtol=1e-4, atol=1e-6)
        runs = timings({"loop": loop, "batched": batched}, repeats)
        rows.append([label, f"{x.shape[-3]}^3", repeats, seconds(runs["loop"], unit), seconds(runs["batched"], unit),
                     f"{min(runs['batched']) / min(runs['loop']):.2f}x"])
    table(["network", "input", "runs", "K backward (min / median)", "is_grads_batched (min / median)",
           "batched / loop (min)"], rows)
    footer()


# ---- ig ------------------------------------------------------------------------------------------


def part_ig(args) -> None:
    header("ig: Integrated Gradients completeness on a two-level MONAI UNet (4, 8) at 16^3")
    x = tiny_input(2)
    net = two_level_unet(2, 3)
    target = present_target(net, x, range(3))
    alphas = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0)
    with torch.no_grad():
        path = [target.scalars(net(a * x))[0] for a in alphas]
    print(f"instance norm (MONAI default), zeros baseline, predicted target classes {list(target.classes)}: "
          "S along the straight path x(alpha) = alpha x, per class")
    table(["alpha"] + [f"S class {c}" for c in target.classes] + ["S summed"],
          [[f"{a:g}"] + [f"{float(v):.1f}" for v in s] + [f"{float(s.sum()):.1f}"] for a, s in zip(alphas, path)])
    rows = []
    for norm in ("instance", "batch"):
        net = two_level_unet(2, 3, norm=norm)
        target = present_target(net, x, range(3))
        for baseline in ("zeros", "minimum", "blurred"):
            with torch.no_grad():
                difference = target.scalars(net(x))[0] - target.scalars(net(make_baseline(x, baseline, 5.0)))[0]
            for warp in (1.0, 3.0):
                cells = []
                for steps in (16, 32, 64, 256):
                    relevance = get_method("integrated_gradients", steps=steps, baseline=baseline,
                                           path_warp=warp).attribute(net, x, target)
                    error = ((relevance.flatten(1).sum(1) - difference).abs() / difference.abs()).tolist()
                    cells.append(span(error))
                rows.append([norm, baseline, f"{warp:g}"] + cells)
    print("completeness error |sum of the map - (S(x) - S(x'))| / |S(x) - S(x')|, range over the classes "
          "predicted (Gauss-Legendre nodes)")
    table(["norm", "baseline", "path_warp", "16 steps", "32 steps", "64 steps", "256 steps"], rows)
    footer()


# ---- deeplift ------------------------------------------------------------------------------------


@contextlib.contextmanager
def norms_given_rescale():
    """Captum's Rescale rule also for instance norm (an experiment: the shipped code does not do this)."""
    from captum.attr._core import deep_lift as captum_deep_lift

    table_ = captum_deep_lift.SUPPORTED_NON_LINEAR
    added = [kind for kind in (torch.nn.InstanceNorm3d,) if kind not in table_]
    try:
        for kind in added:
            table_[kind] = captum_deep_lift.nonlinear
        yield
    finally:
        for kind in added:
            table_.pop(kind, None)


@contextlib.contextmanager
def without_prelu_rule():
    """DeepLIFT with captum's own table only (as before PReLU and friends got the Rescale rule)."""
    from napari_segxai.core.attribution import deeplift

    saved = deeplift.rescale_rule_for_all_activations
    deeplift.rescale_rule_for_all_activations = contextlib.nullcontext
    try:
        yield
    finally:
        deeplift.rescale_rule_for_all_activations = saved


def part_deeplift(args) -> None:
    from captum.attr._core import deep_lift as captum_deep_lift

    header("deeplift: summation-to-delta on two-level MONAI UNets (4, 8) at 16^3, classes 0, 1, 2 over the whole volume")
    x = tiny_input(2)
    target = region_target(np.ones((16,) * 3, bool), [0, 1, 2], 3)
    before = dict(captum_deep_lift.SUPPORTED_NON_LINEAR)
    states = (("shipped", contextlib.nullcontext), ("PReLU without the Rescale rule (captum's table only)", without_prelu_rule),
              ("instance norm given the Rescale rule", norms_given_rescale))
    rows = []
    for norm in ("batch", "instance"):
        for act in ("relu", "prelu"):
            net = two_level_unet(2, 3, act=act, norm=norm)
            for state, context in states:
                if state.startswith("PReLU") and act != "prelu":
                    continue
                if state.startswith("instance") and norm != "instance":
                    continue
                cells = []
                for baseline in ("zeros", "minimum", "blurred"):
                    with torch.no_grad():
                        difference = target.scalars(net(x))[0] - target.scalars(net(make_baseline(x, baseline, 5.0)))[0]
                    with context(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        relevance = get_method("deeplift", baseline=baseline).attribute(net, x, target)
                    error = ((relevance.flatten(1).sum(1).double() - difference.double()).abs()
                             / difference.double().abs()).tolist()
                    cells.append(span(error, fmt=lambda v: f"{v:.1e}" if v < 1e-3 else pct(v)))
                rows.append([norm, act, state] + cells)
    assert captum_deep_lift.SUPPORTED_NON_LINEAR == before
    print("error |sum of the map - (S(x) - S(x'))| / |S(x) - S(x')|, range over the 3 classes")
    table(["norm", "activation", "rules", "zeros", "minimum", "blurred (sigma 5)"], rows)
    footer()


# ---- lrp -----------------------------------------------------------------------------------------


def part_lrp(args) -> None:
    from monai.networks.nets import DynUNet, SegResNet, UNet

    header("lrp: relevance conservation (sum of input relevance / sum of starting logits), start='logit', 16^3")
    x = tiny_input(2)
    region = np.zeros((16,) * 3, bool)
    region[4:12, 4:12, 4:12] = True
    target = region_target(region, [1, 2], 3)

    def build(kind):
        torch.manual_seed(0)
        if kind == "UNet":
            return UNet(3, 2, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=2).eval()
        if kind == "SegResNet":
            return SegResNet(spatial_dims=3, in_channels=2, out_channels=3, init_filters=8).eval()
        if kind == "SegResNet-2":
            return SegResNet(spatial_dims=3, in_channels=2, out_channels=3, init_filters=8, blocks_down=(1, 2),
                             blocks_up=(1,)).eval()
        return DynUNet(3, 2, 3, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                       filters=[4, 8, 16], res_block=True).eval()

    labels = {"UNet": "MONAI UNet (4, 8, 16), strides (2, 2), 2 res. units",
              "SegResNet": "SegResNet, init_filters 8, blocks (1, 2, 2, 4) down / (1, 1, 1) up (three decoder skips)",
              "SegResNet-2": "SegResNet, init_filters 8, blocks (1, 2) down / (1,) up (one decoder skip)",
              "DynUNet": "DynUNet, filters (4, 8, 16), strides (1, 2, 2), res. blocks"}
    rows = []
    for kind in ("UNet", "SegResNet", "SegResNet-2", "DynUNet"):
        net = build(kind)
        with torch.no_grad():
            started = target.scalars(net(x))[0]
        for composite in ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"):
            cells = []
            for zero_bias in (False, True):
                relevance = get_method("lrp", composite=composite, start="logit", zero_bias=zero_bias).attribute(net, x, target)
                ratio = (relevance.flatten(1).sum(1) / started).tolist()
                cells.append(span(ratio, fmt=lambda v: f"{v:.3f}"))
            rows.append([labels[kind], composite] + cells)
    print("region: the central 8^3 cube, classes 1 and 2; range over the two classes")
    table(["network", "composite", "conservation", "conservation with zero_bias"], rows)
    footer()


# ---- shap ----------------------------------------------------------------------------------------


def brute_force_shapley(net, x, target, features, baseline) -> torch.Tensor:
    """Exact Shapley values (K_t, m) of the feature groups by the subset formula."""
    m = int(features.max()) + 1

    def value(subset):
        keep = torch.zeros(m)
        keep[list(subset)] = 1.0
        with torch.no_grad():
            return target.scalars(net(baseline + keep[features].unsqueeze(0) * (x - baseline)))[0].double()

    values = {s: value(s) for r in range(m + 1) for s in itertools.combinations(range(m), r)}
    phi = torch.zeros(len(target.classes), m, dtype=torch.float64)
    for i in range(m):
        for subset, v in values.items():
            if i not in subset:
                w = math.factorial(len(subset)) * math.factorial(m - len(subset) - 1) / math.factorial(m)
                phi[:, i] += w * (values[tuple(sorted(subset + (i,)))] - v)
    return phi


def per_feature(relevance, features) -> torch.Tensor:
    m = int(features.max()) + 1
    return torch.stack([relevance[:, features == j].sum(1) for j in range(m)], dim=1).double()


def plain_coalitions(m: int, n_samples: int, generator: torch.Generator):
    """Kernel-weighted sampling of the whole budget, nothing enumerated (sizes by kernel mass, pairs of complements)."""
    sizes = torch.arange(1, m, dtype=torch.float64)
    probability = (m - 1) / (sizes * (m - sizes))
    half = n_samples // 2
    drawn = sizes[torch.multinomial(probability, half, replacement=True, generator=generator)]
    order = torch.rand(half, m, generator=generator).argsort(1).argsort(1)
    sampled = (order < drawn.unsqueeze(1)).double()
    sampled = torch.cat([sampled, 1 - sampled])
    return sampled, torch.full((sampled.shape[0],), float(probability.sum()) / sampled.shape[0], dtype=torch.float64)


def part_shap(args) -> None:
    from captum.attr import KernelShap
    from monai.networks.nets import UNet

    from napari_segxai.core.attribution.kernel_shap import _constrained_regression, cube_features

    header("shap: Kernel SHAP against brute-force Shapley values and captum KernelShap (2D UNet (4, 8), 16 x 12, 2 channels)")
    torch.manual_seed(0)
    net = UNet(2, 2, 3, channels=(4, 8), strides=(2,), num_res_units=1).eval()
    x = torch.randn(1, 2, 16, 12, generator=torch.Generator().manual_seed(2))
    target = region_target(np.ones((16, 12), bool), [1, 2], 3)
    seeds = range(args.shap_seeds)
    rows = []
    for baseline in ("zeros", "minimum"):
        features = cube_features((16, 12), 8, 2)  # 2 x 2 cubes per channel: 8 features, 254 coalitions
        reference = make_baseline(x, baseline)
        exact = brute_force_shapley(net, x, target, features, reference)

        def error(values):
            return float((values - exact).abs().max() / exact.abs().max())

        full = get_method("kernel_shap", cube=8, n_samples=254, baseline=baseline).attribute(net, x, target)
        sampled = [error(per_feature(get_method("kernel_shap", cube=8, n_samples=250, seed=s, baseline=baseline)
                                     .attribute(net, x, target), features)) for s in seeds]
        with torch.no_grad():
            empty = target.scalars(net(reference))[0].double()
            difference = target.scalars(net(x))[0].double() - empty
        plain = []
        method = get_method("kernel_shap", cube=8, baseline=baseline)
        for s in seeds:
            rows_, weights = plain_coalitions(8, 250, torch.Generator().manual_seed(s))
            outputs = method._evaluate(net, x, reference, features, rows_, target, None, None)
            plain.append(error(_constrained_regression(rows_, weights, outputs.double() - empty, difference)))
        rows.append([baseline, f"{error(per_feature(full, features)):.1e}", span(sampled), span(plain)])
    print(f"8 features (2 x 2 cubes of side 8 per channel), classes 1 and 2 over the whole image; error = "
          f"max |ours - exact| / max |exact| over features and classes; sampled: range over seeds {list(seeds)}")
    table(["baseline", "all 254 coalitions enumerated", "250 samples (as shipped: sizes enumerated, rest sampled)",
           "250 samples, plain kernel-weighted sampling"], rows)

    features = cube_features((16, 12), 8, 1)  # 2 x 2 cubes shared by both channels: 4 features
    ours = per_feature(get_method("kernel_shap", cube=8, per_channel=False).attribute(net, x, target), features)
    mask = features.expand(2, -1, -1).unsqueeze(0)
    refs = []
    for k in range(len(target.classes)):
        torch.manual_seed(k)
        single = target.subset(k)
        explainer = KernelShap(lambda z, single=single: single.scalars(net(z))[:, 0])
        refs.append(explainer.attribute(x, baselines=0.0, feature_mask=mask, n_samples=2000,
                                        perturbations_per_eval=500, return_input_shape=False)[0])
    reference = torch.stack(refs).double()
    print("\ncaptum KernelShap, 4 cubes shared by both channels (feature_mask), 2,000 sampled coalitions, zeros baseline")
    table(["max |ours - captum| / max |captum|", "largest |sum ours - sum captum| / |sum captum|"],
          [[pct(float((ours - reference).abs().max() / reference.abs().max())),
            f"{float(((ours.sum(1) - reference.sum(1)).abs() / reference.sum(1).abs()).max()):.1e}"]])
    footer()


# ---- slic ----------------------------------------------------------------------------------------


def real_crop(side: int) -> torch.Tensor:
    """The real case (1 mm) centre-cropped to side^3, each channel z-scored: (C, side, side, side)."""
    from napari_segxai.core.io.nifti import load_case

    channels = load_case(REALDATA).channels
    starts = [(s - side) // 2 for s in channels.shape[1:]]
    crop = channels[(slice(None),) + tuple(slice(a, a + side) for a in starts)]
    crop = torch.from_numpy(np.ascontiguousarray(crop))
    flat = crop.flatten(1)
    return (crop - flat.mean(1).view(-1, 1, 1, 1)) / flat.std(1).clamp_min(1e-6).view(-1, 1, 1, 1)


def part_slic(args) -> None:
    from napari_segxai.core.attribution.supervoxels import slic

    header("slic: supervoxels.slic at 96^3 x 4 channels (seed spacing 8, compactness 1, 10 iterations)")
    image = real_crop(96)
    runs = []
    for _ in range(max(1, args.slic_repeats)):
        start = time.perf_counter()
        labels = slic(image, 8, 1.0)
        runs.append(time.perf_counter() - start)
    print(f"input: the centre 96^3 of {REALDATA.name} (1 mm), 4 channels z-scored; {int(labels.max()) + 1} supervoxels")
    table(["runs", "wall seconds each", "min"], [[len(runs), ", ".join(f"{r:.1f}" for r in runs), f"{min(runs):.1f} s"]])
    footer()


# ---- occlusion -----------------------------------------------------------------------------------


def part_occlusion(args) -> None:
    from napari_segxai.core.attribution.occlusion import window_starts

    header("occlusion: forward passes = channels x cubes (arithmetic, window_starts as the method places them)")
    rows = []
    for side, window, stride in ((96, 8, 4), (96, 16, 8), (96, 32, 16)):
        per_axis = len(window_starts(side, window, stride))
        rows.append([f"4 x {side}^3", window, stride, per_axis, f"4 x {per_axis}^3 = {4 * per_axis ** 3:,}"])
    table(["input", "window", "stride", "cubes per axis", "forward passes (per_channel)"], rows)
    footer()


# ---- case ----------------------------------------------------------------------------------------


def case_child(spec: str) -> None:
    """In a child process: one explain_case call; prints a JSON line."""
    from napari_segxai.core.io.nifti import load_case, load_label
    from napari_segxai.core.model.card import default_model_card

    name, _, steps = spec.partition(":")
    params = {"steps": int(steps)} if steps else {}
    case = load_case(REALDATA)
    label, _, _ = load_label(REALDATA / LABEL_FILE)
    card = default_model_card()
    before = PeakRSS.now()
    start, cpu = time.perf_counter(), time.process_time()
    result = explain_case_call(case, card, name, label > 0, params)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "seconds": result.seconds, "before": before, "bytes": result.relevance.nbytes,
                      "shape": list(result.relevance.shape), "classes": list(result.class_names),
                      "region": int(np.count_nonzero(label > 0))}))


def explain_case_call(case, card, name, region, params):
    from napari_segxai.core.attribution import explain_case

    return explain_case(case, card, method=name, target="region", region=region, device="cpu", **params)


def part_case(args) -> None:
    header(f"case: explain_case on {REALDATA.name} with the bundled demo card, target the {LABEL_FILE} tumour region")
    from napari_segxai.core.model.card import default_model_card

    card = default_model_card()
    print(f"card {card.name}: UNet {tuple(card.kwargs['channels'])}, trained; windows {tuple(card.roi_size)}, overlap "
          f"{card.overlap}, {card.spacing} mm grid; each call in its own process (peak RSS: the kernel's ru_maxrss)")
    rows = []
    for spec in ("saliency", f"integrated_gradients:{args.case_steps}"):
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, __file__, "--child-case", spec], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        out, err = child.stdout.read(), child.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"{spec} failed: {err.strip().splitlines()[-1] if err.strip() else status}")
            continue
        info = json.loads(out.strip().splitlines()[-1])
        name, _, steps = spec.partition(":")
        rows.append([f"{name}" + (f", {steps} steps" if steps else ""), f"{info['seconds']:.1f} s",
                     f"{info['cpu']:.1f} s",
                     f"{time.perf_counter() - start:.1f} s", f"{usage.ru_maxrss * 1024 / 1e9:.2f} GB",
                     f"{info['before'] / 1e9:.2f} GB",
                     f"{' x '.join(map(str, info['shape']))} float32 = {info['bytes'] / 1e9:.2f} GB"])
        classes, region = info["classes"], info["region"]
    if rows:
        print(f"classes {', '.join(classes)}; region {region:,} case voxels; GB = 1e9 bytes")
    table(["method", "explain_case seconds", "CPU seconds of the call", "process wall (load + call)", "peak RSS of the process",
           "RSS before the call", "result"], rows)
    footer()


# ---- memory --------------------------------------------------------------------------------------


def memory_child(spec: str) -> None:
    """In a child process: Integrated Gradients with B path points in one batch; prints a JSON line."""
    import resource

    from napari_segxai.core.attribution.targets import Target

    path, _, points = spec.rpartition(":")
    saved = torch.load(path)
    _, network = demo_model()
    target = Target("predicted", tuple(saved["classes"]), saved["masks"].numpy())
    method = get_method("integrated_gradients", steps=int(points), batch_size=int(points))
    release_memory()
    before, peak_before = PeakRSS.now(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    method.attribute(network, saved["x"], target)
    print(json.dumps({"before": before, "peak_before": peak_before}))


def part_memory(args) -> None:
    import tempfile

    from napari_segxai.core.attribution.base import activation_bytes
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.preprocess import preprocess

    header("memory: Integrated Gradients, B path points in one batch, on the real case's network grid")
    card, network = demo_model()
    with torch.no_grad():
        image, _ = preprocess(load_case(REALDATA), card, device="cpu")
    pad = []
    for size in reversed(image.shape[2:]):
        pad += [0, (-size) % 8]
    x = torch.nn.functional.pad(image, pad)
    with torch.no_grad():
        logits = network(x)
    target = benchmark_target(logits, tuple(i for i, c in enumerate(card.classes) if c.label != 0))
    del logits
    K = len(target.classes)
    A = activation_bytes(network, x)
    map_bytes = x.numel() * x.element_size()
    maps = (1 + 2 * K) * map_bytes  # what IG keeps per path point, as costed (maps_per_sample)
    print(f"bundled demo model, input 1 x {' x '.join(map(str, x.shape[1:]))} ({REALDATA.name} on the card's grid, "
          f"zero-padded to a multiple of 8), {K} classes (predicted regions); A = {A / 1e9:.3f} GB, one input-sized map "
          f"{map_bytes / 1e6:.1f} MB, IG's maps per point (1 + 2K) = {maps / 1e6:.0f} MB; each B in its own process "
          "(the model and this input only): growth = its peak RSS (the kernel's ru_maxrss) minus its RSS before the call")
    growth = {}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "input.pt"
        torch.save({"x": x, "masks": torch.from_numpy(np.array(target.masks)), "classes": list(target.classes)}, path)
        for B in range(1, args.memory_points + 1):
            child = subprocess.Popen([sys.executable, __file__, "--child-memory", f"{path}:{B}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(child.pid, 0)
            out, err = child.stdout.read(), child.stderr.read()
            if os.waitstatus_to_exitcode(status) != 0:
                print(f"B = {B} failed: {err.strip().splitlines()[-1] if err.strip() else status}")
                break
            info = json.loads(out.strip().splitlines()[-1])
            peak = usage.ru_maxrss * 1024
            if peak <= info["peak_before"]:
                print(f"B = {B}: the call did not raise the process's peak; not measured")
                break
            growth[B] = peak - info["before"]
            estimate = A + B * (2 * A + maps)
            rows.append([B, f"{info['before'] / 1e9:.2f} GB", f"{peak / 1e9:.2f} GB", f"{growth[B] / 1e9:.3f} GB",
                         f"{growth[B] / A:.2f} A", f"{(growth[B] - B * maps) / A:.2f} A", f"{estimate / A:.2f} A",
                         f"{estimate / growth[B]:.2f}x"])
    table(["B", "RSS before", "peak RSS", "growth", "growth / A", "growth less B x maps",
           "estimate A + B (2A + maps)", "estimate / measured"], rows)
    extra = [(growth[b] - growth[b - 1] - maps) / A for b in range(2, max(growth, default=0) + 1)]
    if extra:
        first = (growth[1] - maps) / A
        print(f"each extra path point besides its maps: {span(extra, fmt=lambda v: f'{v:.2f}')} A; "
              f"the first besides its maps: {first:.2f} A, i.e. "
              f"{span([first - e for e in extra], fmt=lambda v: f'{v:.2f}')} A more than an extra one")
    footer()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, any of: {', '.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per call in timing and loop (default 5; "
                        "10x that, at least 20, for the 16^3 net)")
    parser.add_argument("--shap-seeds", type=int, default=5, help="seeds of the sampled Kernel SHAP runs (default 5)")
    parser.add_argument("--slic-repeats", type=int, default=2, help="runs of slic at 96^3 (default 2)")
    parser.add_argument("--case-steps", type=int, default=8, help="Integrated Gradients steps in part case (default 8)")
    parser.add_argument("--memory-points", type=int, default=4, help="largest batch of path points in part memory")
    parser.add_argument("--child-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_case:
        case_child(args.child_case)
        return 0
    if args.child_memory:
        memory_child(args.child_memory)
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if {"slic", "case", "memory"} & set(parts) and not REALDATA.is_dir():
        parser.error(f"parts slic, case and memory need the real case at {REALDATA}")
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    print(f"benchmarks/attribution.py --parts {','.join(parts)}; Python {platform.python_version()}, "
          f"torch {torch.__version__}; started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    for part in PARTS:
        if part in parts:
            start = time.perf_counter()
            globals()[f"part_{part}"](args)
            print(f"({part}: {time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
