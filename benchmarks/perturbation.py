"""Occlusion evaluated where it matters (bounded crops) against captum ``Occlusion``, on the real case TCGA-DU-7294.

Parts (``--parts``):

* ``local``: a local network (no normalisation, radius about 8 voxels: 1x1 conv, max-pool by 2,
  two 3^3 convs at half resolution, upsampling, 1x1 conv; fixed random weights) on a 1 mm crop of
  the real case (4 channels z-scored, ``--local-side``, default 64^3). Our occlusion (bounded, the
  default), ours with ``reach_tolerance=0`` (the whole gradient support: exact), ours forced whole
  (``bounded=False``) and captum ``Occlusion`` with the same cubes (one per channel: captum's
  window (1, w, w, w) and strides (1, s, s, s); ``--all-channels``: one cube over all channels,
  (C, w, w, w)), baseline 0 and the same scalar (a forward function returning
  ``target.scalars(network(x))``, target index 0; ours explains all classes in one pass, captum one).
* ``demo``: the bundled demo UNet (instance normalisation) on the real case at the card's 2 mm
  grid, a ``--demo-side``^3 crop centred on the predicted tumour; the explained scalar is the
  oedema logits summed over its predicted region. Ours as shipped (which falls back to the whole
  input on a network with instance norm, and when the crops would not be much smaller, and says
  why), captum ``Occlusion``, and ours with ``hold_statistics=True`` and the crop-share fallback
  switched off (``LARGEST_CROP_SHARE`` infinite) to measure the error that holding the
  instance-norm statistics (and the 1 % gradient cut) leaves.
* ``kernelshap``: our KernelSHAP (bounded, the default) against captum ``KernelShap`` with the same
  features (our SLIC supervoxels, spacing ``--shap-size``, shared by the channels: captum's
  ``feature_mask``), baseline 0, ``--shap-samples`` coalitions each and the same scalar (a forward
  function returning the region sum, target index 0; SLIC is timed apart: ours is handed the
  supervoxels as captum is), on (i) the local network, a ``--shap-side``^3
  1 mm centre crop, class 1's logits summed over a central ``--shap-region``^3 box, and (ii) the demo
  UNet on a ``--demo-shap-side``^3 crop of the 2 mm case on the tumour (``--demo-shap-samples``), the oedema logits over its
  predicted region (ours as shipped falls back to the whole input there; ours with
  ``hold_statistics=True`` measures the error held instance-norm statistics leave). Both draw
  coalitions at random, so each also runs with a second seed: Spearman of ours against ours and of
  captum against captum is the noise floor beside Spearman of ours against captum. Spearman is over
  the features' values (a map is constant on each feature), all of them and, apart, the features that
  can reach the target (those ours samples; the others are exactly 0 on a local network); peak memory is the growth of this
  process's resident memory during the call (``segment.PeakRSS``). Then, like with like: captum
  ``KernelShap`` handed the very coalitions and kernel weights of our first seed-0 run over the features
  it sampled (those in reach where it is bounded; ``captum_given_coalitions``), so the two differ only
  in how the masked inputs are evaluated and the regression solved.

Each line: wall seconds, the ratio captum / ours, Spearman of the maps (all voxels, all channels).

``--captum-kernels``: ``ours`` (default, like with like) hands captum the network as napari-segxai
builds it, whose lone inputs run on oneDNN (``core/model/lone_copy.py``); ``torch`` hands it a copy on
torch's own kernel choice, as a network a user builds and passes to captum runs (with
``--per-eval 1``, captum's default, that is captum as a user runs it by default).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution import demo_model, footer, header, real_crop, table  # noqa: E402
from segment import REALDATA, PeakRSS  # noqa: E402

from napari_segxai.core.attribution import bounded as bounded_module  # noqa: E402
from napari_segxai.core.attribution import get_method, predicted_target, region_target  # noqa: E402
from napari_segxai.core.attribution import kernel_shap as kernel_shap_module  # noqa: E402
from napari_segxai.core.attribution import receptive_field  # noqa: E402
from napari_segxai.core.attribution.kernel_shap import supervoxel_features  # noqa: E402
from napari_segxai.core.attribution.unchanged import changed_voxels, moved_features  # noqa: E402

PARTS = ("local", "demo", "kernelshap")
#: The kernels captum's network runs on: "ours" (as built here) or "torch" (``--captum-kernels``).
CAPTUM_KERNELS = ["ours"]


def for_captum(network: nn.Module) -> nn.Module:
    """The network captum is handed: as built here, or a copy on torch's own kernel choice."""
    from napari_segxai.core.model.lone_copy import torch_kernels

    return network if CAPTUM_KERNELS[0] == "ours" else torch_kernels(copy.deepcopy(network))


def local_network() -> nn.Module:
    """1x1 conv, max-pool by 2, two 3^3 convs at half resolution, upsample, 1x1 conv; 4 channels in, 4 classes out."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(4, 16, 1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv3d(16, 16, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
                         nn.Conv3d(16, 4, 1)).eval()


def captum_occlusion(network, x, target, window: int, stride: int, per_eval: int, per_channel: bool) -> torch.Tensor:
    """captum Occlusion of target scalar 0, one cube per channel (or one over all channels), baseline 0."""
    from captum.attr import Occlusion

    network = for_captum(network)
    occlusion = Occlusion(lambda inputs: target.scalars(network(inputs)))
    with torch.no_grad():
        channels = 1 if per_channel else x.shape[1]
        return occlusion.attribute(x, sliding_window_shapes=(channels,) + (window,) * (x.ndim - 2),
                                   strides=(channels,) + (stride,) * (x.ndim - 2), baselines=0.0, target=0,
                                   perturbations_per_eval=per_eval)


def timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def rho(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{spearmanr(a.flatten().numpy(), b.flatten().numpy())[0]:.4f}"


def compare(network, x, target, window: int, stride: int, per_eval: int, per_channel: bool,
            extra: dict | None = None) -> None:
    ours_method = get_method("occlusion", window=window, stride=stride, per_channel=per_channel)
    prepared = ours_method.prepared(network, x)
    work = prepared.plan(tuple(x.shape[1:]), window, stride)
    print(f"receptive field: {prepared._reach.describe()}")
    print(f"plan: {'bounded, tile ' + str(work.tile[0]) + f', a crop is {work.share:.1%} of the input, {work.crops} crop positions' if work.bounded else 'whole input: ' + work.reason}")
    n = ours_method.occlusions(tuple(x.shape[1:]), window, stride)
    changing = prepared.occlusions(tuple(x.shape[1:]), window, stride)
    print(f"{n:,} occluded copies, {changing:,} of them change the input (the others already hold the baseline: "
          f"0 without a pass); passes() of ours: {prepared.passes(tuple(x.shape[1:]), target).forward:,} "
          "input-sized forward passes")
    ours, ours_s = timed(lambda: ours_method.attribute(network, x, target)[0:1])
    whole, whole_s = timed(lambda: get_method("occlusion", window=window, stride=stride, bounded=False,
                                              per_channel=per_channel).attribute(network, x, target)[0:1])
    theirs, theirs_s = timed(lambda: captum_occlusion(network, x, target, window, stride, per_eval, per_channel))
    if not per_channel:   # ours keeps one map for all channels, captum one per channel (the same values)
        theirs = theirs[:, :1]
    rows = [["ours (bounded, as shipped)", f"{ours_s:.1f}", f"{theirs_s / ours_s:.1f}x", rho(ours[0], theirs[0]),
             f"{float((ours[0] - theirs[0]).abs().max() / theirs.abs().max()):.1e}"],
            ["ours whole (bounded=False)", f"{whole_s:.1f}", f"{theirs_s / whole_s:.1f}x", rho(whole[0], theirs[0]),
             f"{float((whole[0] - theirs[0]).abs().max() / theirs.abs().max()):.1e}"]]
    for name, method in (extra or {}).items():
        forced, forced_s = timed(lambda: method.attribute(network, x, target)[0:1])
        rows.append([name, f"{forced_s:.1f}", f"{theirs_s / forced_s:.1f}x", rho(forced[0], theirs[0]),
                     f"{float((forced[0] - theirs[0]).abs().max() / theirs.abs().max()):.1e}"])
    rows.append([f"captum `Occlusion` (perturbations_per_eval={per_eval})", f"{theirs_s:.1f}", "1.0x", "1", "0"])
    table(["method", "wall s", "captum / this", "Spearman vs captum", "max |diff| / max |captum|"], rows)


def part_local(args) -> None:
    header(f"local: bounded occlusion vs captum Occlusion, local network, real case {REALDATA.name} "
           f"1 mm centre crop 4 x {args.local_side}^3, window {args.window} stride {args.stride}")
    x = real_crop(args.local_side).unsqueeze(0)
    network = local_network()
    with torch.no_grad():
        logits = network(x)
    target = predicted_target(logits, [1])
    print(f"target: {target.describe()}")
    exact = get_method("occlusion", window=args.window, stride=args.stride, reach_tolerance=0.0,
                       per_channel=not args.all_channels)
    print(f"receptive field at reach_tolerance=0: {exact.prepared(network, x)._reach.describe()}")
    compare(network, x, target, args.window, args.stride, args.per_eval, not args.all_channels,
            {"ours bounded, reach_tolerance=0 (the whole support)": exact})
    footer()


def demo_crop(card, network, side: int) -> torch.Tensor:
    """The real case on the card's grid, a side^3 crop centred on the predicted tumour (zero-padded)."""
    from napari_segxai.core.io.nifti import load_case
    from napari_segxai.core.model.preprocess import preprocess

    with torch.no_grad():
        image, _ = preprocess(load_case(REALDATA), card, device="cpu")
        pad = [(-s) % 8 for s in image.shape[2:]]
        padded = torch.nn.functional.pad(image, [p for q in reversed(pad) for p in (0, q)])
        tumour = network(padded)[0].argmax(0)[: image.shape[2], : image.shape[3], : image.shape[4]] > 0
    centre = np.argwhere(tumour.numpy()).mean(0).round().astype(int)
    out = image.new_zeros((1, image.shape[1]) + (side,) * 3)
    src, dst = [], []
    for c, s in zip(centre, image.shape[2:]):
        a = max(0, min(s - side, c - side // 2)) if s >= side else 0
        n = min(side, s)
        src.append(slice(a, a + n))
        dst.append(slice((side - n) // 2, (side - n) // 2 + n))
    out[(slice(None), slice(None)) + tuple(dst)] = image[(slice(None), slice(None)) + tuple(src)]
    return out


def demo_problem(side: int):
    """The bundled demo network, a ``side``^3 crop of the real case on its predicted tumour, and the oedema target (printed)."""
    card, network = demo_model()
    x = demo_crop(card, network, side)
    with torch.no_grad():
        target = predicted_target(network(x), [2], class_names=[c.name for c in card.classes])
    print(f"target: {target.describe()}")
    return network, x, target


def part_demo(args) -> None:
    header(f"demo: the bundled demo UNet (instance norm) on {REALDATA.name} at 2 mm, a {args.demo_side}^3 crop on "
           f"the predicted tumour, window {args.demo_window} stride {args.demo_stride}")
    network, x, target = demo_problem(args.demo_side)
    forced = {}
    for tolerance in args.tolerances:
        forced[f"ours bounded, hold_statistics=True, fallback off, reach_tolerance={tolerance:g}"] = get_method(
            "occlusion", window=args.demo_window, stride=args.demo_stride, reach_tolerance=tolerance,
            per_channel=not args.all_channels, hold_statistics=True)
    share = bounded_module.LARGEST_CROP_SHARE

    class Forced:
        def __init__(self, method):
            self.method = method

        def attribute(self, *a):
            bounded_module.LARGEST_CROP_SHARE = float("inf")
            try:
                return self.method.attribute(*a)
            finally:
                bounded_module.LARGEST_CROP_SHARE = share

    compare(network, x, target, args.demo_window, args.demo_stride, args.per_eval, not args.all_channels,
            {k: Forced(v) for k, v in forced.items()})
    footer()


def captum_kernel_shap(network, x, target, mask, n_samples: int, per_eval: int, seed: int) -> torch.Tensor:
    """captum KernelShap of target scalar 0 over the features of ``mask`` (shaped like ``x``), baseline 0: (m,)."""
    from captum.attr import KernelShap

    torch.manual_seed(seed)   # captum draws its coalitions from the global generator
    network = for_captum(network)
    explainer = KernelShap(lambda inputs: target.scalars(network(inputs)))
    with torch.no_grad():
        return explainer.attribute(x, baselines=0.0, target=0, feature_mask=mask, n_samples=n_samples,
                                   perturbations_per_eval=per_eval, return_input_shape=False)[0].double()


def captum_given_coalitions(network, x, target, features, active, rows, weights, per_eval: int) -> torch.Tensor:
    """captum ``KernelShap`` handed our coalitions and kernel weights over the ``active`` features: (len(active),).

    Like with like: its sampler yields the two end coalitions (which captum weighs 1e6 to impose
    efficiency) and then ``rows``, its similarity gives each row our weight. The features that
    cannot reach the target are one more feature whose baseline is the input itself, so removing it
    changes nothing, as in ours (where they are never removed); its column is 0 in every coalition,
    else it would be a free offset beside captum's intercept and undo the empty coalition's anchor.
    """
    from captum.attr import KernelShap

    n_active = len(active)
    lookup = torch.full((int(features.max()) + 1,), n_active, dtype=torch.long)
    lookup[active] = torch.arange(n_active)
    index = lookup[features]                                          # (1, *spatial): n_active outside reach
    mask = index.unsqueeze(0).expand(x.shape).contiguous()
    baseline = torch.where(index.unsqueeze(0) == n_active, x, torch.zeros_like(x))
    extra = int(bool((index == n_active).any()))                      # 1: the features out of reach, as one
    by_size = {}
    weights = weights / weights.max()   # a common scale leaves the regression as it is, and captum's 1e6 ends dominate
    for row, weight in zip(rows, weights):
        by_size.setdefault(int(row.sum()), float(weight))
        if abs(by_size[int(row.sum())] - float(weight)) > 1e-12 * float(weight):
            raise ValueError("coalition weights depend on more than the coalition's size")

    class Given(KernelShap):
        def kernel_shap_perturb_generator(self, original_inp, **kwargs):
            yield torch.cat([torch.ones(1, n_active), torch.zeros(1, extra)], 1).long()
            yield torch.zeros(1, n_active + extra, dtype=torch.long)
            for row in rows:
                yield torch.cat([row, torch.zeros(extra, dtype=row.dtype)]).long().unsqueeze(0)

        def kernel_shap_similarity_kernel(self, _, __, sample, **kwargs):
            size = int(sample[0, :n_active].sum())
            if size in (0, n_active):
                return torch.tensor([self.inf_weight])
            return torch.tensor([by_size[size]])

    network = for_captum(network)
    explainer = Given(lambda inputs: target.scalars(network(inputs)))
    with torch.no_grad():
        values = explainer.attribute(x, baselines=baseline, target=0, feature_mask=mask, n_samples=len(rows) + 2,
                                     perturbations_per_eval=per_eval, return_input_shape=False)[0].double()
    return values[:n_active]


def measured(run):
    """Result, wall seconds and growth of this process's peak resident memory (bytes) of ``run()``."""
    with PeakRSS() as rss:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
    return result, seconds, rss.peak - rss.start


@contextlib.contextmanager
def given_features(features: torch.Tensor):
    """Inside, our KernelSHAP takes ``features`` as its supervoxels, as captum is handed them (SLIC is timed apart)."""
    computed = kernel_shap_module.supervoxel_features
    kernel_shap_module.supervoxel_features = lambda *_args: features
    try:
        yield
    finally:
        kernel_shap_module.supervoxel_features = computed


def compare_shap(network, x, target, args, size: int, n: int, runs: dict) -> None:
    """Our KernelSHAP with each of ``runs``' parameters against captum KernelShap, each at seeds 0 and 1, on supervoxels."""
    with torch.no_grad():
        network(x)   # the first pass's one-time costs land on no method
    (features, slic_s, _) = measured(lambda: supervoxel_features(x, size, 1, 1.0))   # (1, *spatial)
    m = int(features.max()) + 1
    mask = features.unsqueeze(0).expand(x.shape).contiguous()            # captum's feature_mask
    shipped = get_method("kernel_shap", features="supervoxels", cube=size, per_channel=False, n_samples=n)
    where = shipped.prepared(network, x).support(tuple(x.shape[1:]), target)
    reach = torch.unique(features[(slice(None),) + where.zone]) if where.bounded else torch.arange(m)
    reach = reach[moved_features(features, changed_voxels(x, 0.0, per_channel=False), m)[reach]]   # as ours samples
    active = len(reach)
    print(f"{m} supervoxels (spacing {size}; SLIC {slic_s:.1f} s, which ours runs inside attribute and captum is "
          f"handed: timed apart, not in the rows), {n} coalitions each; ours: {where.describe(active, m, x.shape[2:])}")

    def ours(**params):
        method = get_method("kernel_shap", features="supervoxels", cube=size, per_channel=False, n_samples=n, **params)

        def run():
            receptive_field._MEASURED.pop(network, None)   # every run measures the receptive field again
            relevance = method.attribute(network, x, target)[0, 0]
            return torch.bincount(features.flatten(), relevance.flatten().double(), minlength=m)
        return run

    with given_features(features):
        results = {name: [measured(ours(**params)), measured(ours(**params, seed=1))] for name, params in runs.items()}
    theirs = [measured(lambda s=seed: captum_kernel_shap(network, x, target, mask, n, args.per_eval, s)) for seed in (0, 1)]
    reference, captum_s = theirs[0][0], theirs[0][1]
    rows = []
    for name, ((values, seconds, peak), (again, _, _)) in results.items():
        rows.append([name, f"{seconds:.1f}", f"{captum_s / seconds:.1f}x", f"{peak / 2**30:.2f}", rho(values, reference),
                     rho(values, again), rho(values[reach], reference[reach]), rho(values[reach], again[reach]),
                     f"{float((values - reference).abs().max() / reference.abs().max()):.1e}"])
    rows.append([f"captum `KernelShap` (perturbations_per_eval={args.per_eval})", f"{captum_s:.1f}", "1.0x",
                 f"{theirs[0][2] / 2**30:.2f}", "1", rho(reference, theirs[1][0]), "1",
                 rho(reference[reach], theirs[1][0][reach]), "0"])
    table(["method", "wall s", "captum / this", "peak RSS growth GiB", "Spearman vs captum",
           "Spearman vs itself, seed 1 (noise floor)", f"the {active} features in reach: vs captum",
           "in reach: vs itself, seed 1", "max |diff| / max |captum|"], rows)
    print(f"(seed 1: ours took {', '.join(f'{r[1][1]:.1f}' for r in results.values())} s, captum "
          f"{theirs[1][1]:.1f} s. Spearman over the {m} features' values: a map is constant on each feature.)")
    if active > 1:
        first = next(iter(runs))
        like_with_like(network, x, target, args, features, reach, n, first, results[first][0])


def like_with_like(network, x, target, args, features, reach, n: int, name: str, ours) -> None:
    """captum handed the coalitions, weights and features (in reach, when bounded) that our first run (seed 0) used."""
    rows, weights = kernel_shap_module.coalitions(len(reach), n, torch.Generator().manual_seed(0))
    (values, seconds, peak) = measured(lambda: captum_given_coalitions(network, x, target, features, reach, rows,
                                                                       weights, args.per_eval))
    mine, our_s = ours[0][reach], ours[1]
    print(f"\nLike with like: captum `KernelShap` handed the same {len(rows)} coalitions and kernel weights over the same "
          f"{len(reach)} features" + (f" in reach (the other {len(features.unique()) - len(reach)} as one feature with the "
          f"input as its baseline: never removed, as in ours)" if len(reach) < len(features.unique()) else ""))
    table(["method", "wall s", "captum / this", "peak RSS growth GiB", "Spearman vs captum",
           "max |diff| / max |captum|"],
          [[f"{name}, seed 0", f"{our_s:.1f}", f"{seconds / our_s:.1f}x", f"{ours[2] / 2**30:.2f}",
            rho(mine, values), f"{float((mine - values).abs().max() / values.abs().max()):.1e}"],
           ["captum `KernelShap`, our coalitions", f"{seconds:.1f}", "1.0x", f"{peak / 2**30:.2f}", "1", "0"]])


def part_kernelshap(args) -> None:
    if "local" in args.shap_networks:
        shap_local(args)
    if "demo" in args.shap_networks:
        shap_demo(args)


def shap_local(args) -> None:
    header(f"kernelshap (i): KernelSHAP vs captum KernelShap, local network, real case {REALDATA.name} 1 mm centre crop "
           f"4 x {args.shap_side}^3, supervoxels spacing {args.shap_size}, {args.shap_samples} coalitions")
    x = real_crop(args.shap_side).unsqueeze(0)
    network = local_network()
    region = np.zeros((args.shap_side,) * 3, dtype=bool)
    a = (args.shap_side - args.shap_region) // 2
    region[a : a + args.shap_region, a : a + args.shap_region, a : a + args.shap_region] = True
    target = region_target(region, [1], 4)
    print(f"target: {target.describe()}")
    compare_shap(network, x, target, args, args.shap_size, args.shap_samples,
                 {"ours (bounded, as shipped)": {}, "ours whole (bounded=False)": {"bounded": False}})
    footer()


def shap_demo(args) -> None:
    header(f"kernelshap (ii): the bundled demo UNet (instance norm) on {REALDATA.name} at 2 mm, a {args.demo_shap_side}^3 "
           f"crop on the predicted tumour, supervoxels spacing {args.demo_shap_size}, {args.demo_shap_samples} coalitions")
    network, x, target = demo_problem(args.demo_shap_side)
    compare_shap(network, x, target, args, args.demo_shap_size, args.demo_shap_samples,   # as shipped it is the whole evaluation here
                 {"ours (as shipped)": {}, "ours, hold_statistics=True (bounded, instance-norm statistics held)":
                  {"hold_statistics": True}})
    footer()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--local-side", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--demo-side", type=int, default=64)
    parser.add_argument("--demo-window", type=int, default=16)
    parser.add_argument("--demo-stride", type=int, default=16)
    parser.add_argument("--tolerances", type=lambda s: [float(v) for v in s.split(",")], default=[0.01])
    parser.add_argument("--per-eval", type=int, default=4, help="captum's perturbations_per_eval")
    parser.add_argument("--captum-kernels", choices=("ours", "torch"), default="ours",
                        help="captum's network: as built here (lone inputs on oneDNN) or on torch's own kernels")
    parser.add_argument("--all-channels", action="store_true", help="one cube over all channels (per_channel=False)")
    parser.add_argument("--shap-networks", default="local,demo", help="kernelshap: the local network, the demo UNet")
    parser.add_argument("--shap-side", type=int, default=48, help="kernelshap: side of the local network's crop")
    parser.add_argument("--shap-size", type=int, default=12, help="kernelshap: supervoxel spacing on the local crop")
    parser.add_argument("--shap-region", type=int, default=8, help="kernelshap: side of the local target's box")
    parser.add_argument("--shap-samples", type=int, default=512, help="kernelshap: coalitions, ours and captum's")
    parser.add_argument("--demo-shap-side", type=int, default=48, help="kernelshap: side of the demo crop")
    parser.add_argument("--demo-shap-samples", type=int, default=256, help="kernelshap: coalitions on the demo UNet")
    parser.add_argument("--demo-shap-size", type=int, default=16, help="kernelshap: supervoxel spacing on the demo crop")
    args = parser.parse_args(argv)
    CAPTUM_KERNELS[0] = args.captum_kernels
    kernels = "as built here (lone inputs on oneDNN)" if args.captum_kernels == "ours" else "a copy on torch's own kernels"
    print(f"captum's network: {kernels}, perturbations_per_eval={args.per_eval}")
    for part in args.parts.split(","):
        {"local": part_local, "demo": part_demo, "kernelshap": part_kernelshap}[part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
