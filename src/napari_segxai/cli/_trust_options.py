"""Options of the commands that measure explanation quality (``trust``, ``evaluate``): methods, measures, settings."""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from ._common import UserError


def add_measure_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose and tune the trust measures (``segxai trust`` and ``segxai evaluate --methods``)."""
    parser.add_argument(
        "--param", action="append", default=[], metavar="METHOD:KEY=VALUE",
        help="a method parameter, e.g. --param integrated_gradients:steps=16 (repeatable)",
    )
    parser.add_argument(
        "--classes", default=None, metavar="NAMES",
        help="comma-separated class names (or output indices); default: every class with a non-zero label",
    )
    parser.add_argument(
        "--checks", default="sanity,metrics", metavar="LIST",
        help="which measures to run: sanity, metrics, data (default: sanity,metrics; data trains two small "
             "twins of the model, minutes on a CPU)",
    )
    parser.add_argument(
        "--modes", default="cascading,independent", metavar="LIST",
        help="randomisation modes: cascading, independent, or both (default: both)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=8, metavar="N",
        help="randomise at most N evenly spaced depths (the last always randomises every layer); default 8",
    )
    from ..core.trust import available_metrics

    metrics = ",".join(available_metrics())
    parser.add_argument(
        "--metrics", default=metrics, metavar="LIST",
        help=f"quality metrics to run (default: every registered one: {metrics})",
    )
    parser.add_argument("--subsets", type=int, default=32, metavar="N",
                        help="faithfulness: number of random voxel subsets (default 32)")
    parser.add_argument("--subset", type=float, default=0.1, metavar="SHARE",
                        help="faithfulness: share of the crop's voxels in each subset (default 0.1)")
    parser.add_argument("--deletion-steps", type=int, default=20, metavar="N",
                        help="deletion curve: number of equal steps from intact to all removed (default 20)")
    parser.add_argument("--noise-samples", type=int, default=8, metavar="N",
                        help="max-sensitivity: number of noisy inputs, each explained again (default 8)")
    parser.add_argument("--noise-radius", type=float, default=0.05, metavar="R",
                        help="max-sensitivity: uniform noise of +-R times each channel's standard deviation (default 0.05)")
    parser.add_argument("--baseline", default="zeros", choices=["zeros", "minimum", "blurred"],
                        help="what a removed voxel becomes (default zeros: the brain's mean after z-scoring)")
    parser.add_argument("--data-steps", type=int, default=100, metavar="N",
                        help="data randomisation: training steps of each twin (default 100)")
    parser.add_argument("--data-cases", type=int, default=8, metavar="N",
                        help="data randomisation: generated training cases (default 8)")
    parser.add_argument("--margin", type=int, default=None, metavar="VOXELS",
                        help="crop margin around the predicted regions on the model's grid; default half a window")
    parser.add_argument("--carrier", default="surroundings", choices=["surroundings", "healthy"],
                        help="ground truth: the modality that carries a class is the one in which it differs most "
                             "from what surrounds it (default), or from healthy brain (the generator's record); "
                             "docs/trust.md")
    parser.add_argument("--seed", type=int, default=0, help="seed of randomisation, subsets, noise (default 0)")


def parse_list(text: str, allowed: Sequence[str], option: str) -> list[str]:
    """A comma-separated option value, each item checked against ``allowed``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"{option} is empty; give one or more of {', '.join(allowed)}.")
    bad = [t for t in items if t not in allowed]
    if bad:
        raise UserError(f"{option}: {bad[0]!r} is not one of {', '.join(allowed)}.")
    return items


def build_methods(names: str, params: Sequence[str]) -> list:
    """Attribution method instances from --methods and --param METHOD:KEY=VALUE."""
    from ..core.attribution import available_methods, get_method
    from ._explain_options import parse_parameters

    chosen = parse_list(names, available_methods(), "--methods")
    per_method: dict[str, list[str]] = {name: [] for name in chosen}
    for item in params:
        method, sep, rest = item.partition(":")
        if not sep or method not in per_method:
            raise UserError(f"--param {item!r} must read METHOD:KEY=VALUE with a METHOD from --methods, "
                            f"e.g. --param {chosen[0]}:KEY=VALUE.")
        per_method[method].append(rest)
    return [get_method(name, **parse_parameters(name, per_method[name])) for name in chosen]


def measure_settings(args: argparse.Namespace):
    """The trust measures and their settings from the options of :func:`add_measure_options`."""
    from ..core.trust import CHECKS, MODES, TrustSettings, available_metrics

    checks = parse_list(args.checks, CHECKS, "--checks")
    if "data" in checks and (args.data_steps < 1 or args.data_cases < 2):
        raise UserError("--data-steps must be at least 1 and --data-cases at least 2.")
    if args.max_steps < 1:
        raise UserError(f"--max-steps must be at least 1, got {args.max_steps}.")
    return TrustSettings(
        checks=tuple(checks), modes=tuple(parse_list(args.modes, MODES, "--modes")), max_steps=args.max_steps,
        metrics=tuple(parse_list(args.metrics, available_metrics(), "--metrics")), baseline=args.baseline, subset=args.subset,
        n_subsets=args.subsets, deletion_steps=args.deletion_steps, noise_samples=args.noise_samples,
        noise_radius=args.noise_radius, data_steps=args.data_steps, data_cases=args.data_cases, carrier=args.carrier,
        seed=args.seed,
    )


def json_value(value: Any) -> Any:
    """A parameter value as plain JSON."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
