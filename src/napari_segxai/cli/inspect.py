"""``segxai inspect``: inside the network on one case: its layers, feature maps, filters, maximised inputs, a surrogate."""

from __future__ import annotations

import argparse

from ._common import TerminalProgress, UserError, add_case_options, load_card, open_case, output_folder


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``inspect`` and its options."""
    parser = subparsers.add_parser(
        "inspect",
        help="look inside the network on a case: layers, feature maps, filters, activation maximisation, a surrogate",
        description=(
            "Write what the model's network computes on a case (docs/internals.md): <case>_inspect.json with the "
            "layer tree (names, module types, output shapes on one window) and the first layer's kernels as "
            "<case>_filters_<sequence>.png; with --layers, each layer's most class-specific channels as "
            "<case>_features_<layer>.nii.gz (channels last, the case's affine) and their strongest input patches "
            "as PNG (with --training-patches N, also over N of the model's training cases); with --maximise, the "
            "input that maximises each class's region logit as "
            "<case>_maximised_<class>.nii.gz; with --surrogate, a decision tree (or sparse linear model) that "
            "mimics the network's labels, its labels, rules and fidelity."
        ),
    )
    add_case_options(parser)
    parser.add_argument("--list-layers", action="store_true", help="print the layer tree and stop")
    parser.add_argument("--layers", nargs="+", default=[], metavar="LAYER",
                        help="layers whose feature maps to write (names as --list-layers prints them; 'all': every "
                             "layer whose output is a feature map); the layers share sliding passes")
    parser.add_argument("--keep", type=int, default=8, metavar="N",
                        help="channels per layer put on the case grid, the most class-specific first (default 8)")
    parser.add_argument("--training-patches", type=int, default=0, metavar="N",
                        help="also find each --layers layer's strongest patches (the channels whose case patches "
                             "are drawn) over N training cases of the model's training record (default 0: off)")
    parser.add_argument("--maximise", nargs="+", default=[], metavar="CLASS",
                        help="classes (names or label values) whose region logit to maximise")
    parser.add_argument("--concepts", nargs="+", default=[], metavar="CLASS",
                        help="for each --layers layer, how much of each class's LRP relevance passes through each "
                             "channel (concept relevance), in the JSON record")
    parser.add_argument("--start", default="case", choices=["case", "neutral"],
                        help="start the maximisation from the case (default) or from a neutral brain of its shape")
    parser.add_argument("--steps", type=int, default=64, metavar="N", help="maximisation steps (default 64)")
    parser.add_argument("--surrogate", nargs="?", const="tree", default=None, choices=["tree", "linear"],
                        help="fit a surrogate of the network's labels: a decision tree (default) or a sparse "
                             "linear model")
    parser.add_argument("--depth", type=int, default=3, metavar="N", help="the surrogate tree's depth (default 3)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Load case and card, trace the layers, then write what was asked for and the JSON record."""
    import numpy as np

    from ..core.internals.case_maximise import class_index
    from ..core.internals.filters import first_convolution
    from ..core.internals.layers import feature_layers, find_layer
    from ..core.internals.outputs import card_layer_tree, tree_record, write_filters
    from ..core.io.relevance import write_record
    from ..core.model.card import build_network
    from ..core.model.device import pick_device
    from ..core.model.preprocess import channel_indices

    if args.keep < 1:
        raise UserError(f"--keep {args.keep} keeps no channel; give 1 or more.")
    if args.steps < 1:
        raise UserError(f"--steps {args.steps} is too few; give 1 or more maximisation steps.")
    card = load_card(args)
    case = open_case(args, card)
    indices = channel_indices(case, card)  # a missing modality is reported before any work starts
    device = pick_device(None if args.device in (None, "auto") else args.device)
    network = build_network(card, device)
    tree = card_layer_tree(card, network)
    if args.list_layers:
        for layer in tree:
            print(layer.describe())
        return 0
    if args.layers == ["all"]:
        args.layers = [layer.name for layer in feature_layers(tree, len(card.roi_size))]
    for name in args.layers:
        find_layer(network, name)  # a wrong name is reported before any work starts
    for name in args.maximise + args.concepts:
        class_index(card, name)
    if args.concepts and not args.layers:
        raise UserError("--concepts needs the layers whose channels to rank; give them with --layers.")
    if args.training_patches < 0:
        raise UserError(f"--training-patches {args.training_patches} is negative; give 0 (off) or a number of cases.")
    if args.training_patches:
        if not args.layers:
            raise UserError("--training-patches needs the layers whose channels to look for; give them with --layers.")
        from ..core.internals.training_patches import training_keys

        training_keys(card, args.training_patches)  # no training record: said before any work starts
    out = output_folder(args.out)
    protected = [p for p in case.source_paths]
    record: dict = {"case": case.name, "model": card.name, "device": str(device), "layers": tree_record(tree),
                    "affine": np.asarray(case.affine, dtype=float).tolist()}
    print(f"{card.name}: {len(tree)} layers (traced on one window of {' x '.join(map(str, card.roi_size))} voxels).")
    try:
        layer, kernels = first_convolution(network, len(card.modalities))
        record["filters"] = {"layer": layer, "shape": list(kernels.shape),
                             "files": write_filters(kernels, card.modalities, case.name, out)}
        print(f"First-layer kernels ({layer}, {kernels.shape[0]} filters): {out}/{case.name}_filters_*.png")
    except ValueError as err:
        record["filters"] = {"note": str(err)}
        print(f"note: {err}")
    image = np.asarray(case.channels)[indices].astype(np.float32)
    record["feature_maps"] = _features(args, case, card, network, device, image, out, protected) if args.layers else []
    record["maximised"] = [_maximise(args, case, card, network, device, name, out, protected) for name in args.maximise]
    if args.surrogate:
        record["surrogate"] = _surrogate(args, case, card, network, device, out, protected)
    path = write_record(record, out / f"{case.name}_inspect.json", protected)
    print(f"Record: {path}")
    return 0


def _features(args, case, card, network, device, image, out, protected) -> list[dict]:
    """Feature maps of every --layers layer (sharing sliding passes), written as each layer is finished."""
    from ..core.internals.features import iter_feature_maps
    from ..core.internals.outputs import feature_record, write_feature_maps, write_patches

    entries = []
    with TerminalProgress(f"feature maps of {len(args.layers)} layer(s)") as bar:
        for maps in iter_feature_maps(case, card, args.layers, network=network, device=device, keep=args.keep,
                                      progress=bar):
            file = write_feature_maps(maps, case.name, out, protected)
            print(f"{maps.describe()}: {file}")
            for note in maps.notes:
                print(f"note: {note}")
            entry = feature_record(maps, file, write_patches(maps, image, case.name, out))
            if args.training_patches:
                entry["training_patches"] = _training_patches(args, card, network, device, maps, case.name, out)
            entry["concept_relevance"] = {name: _concepts(case, card, network, device, maps.layer, name)
                                          for name in args.concepts}
            entries.append(entry)
    return entries


def _training_patches(args, card, network, device, maps, case_name, out) -> dict:
    """The strongest patches of the layer's drawn channels over --training-patches training cases (PNG and JSON)."""
    from ..core.internals.outputs import PATCH_CHANNELS, PATCHES, write_training_patches
    from ..core.internals.training_patches import training_patches

    with TerminalProgress(f"strongest patches of {maps.layer} over {args.training_patches} training case(s)") as bar:
        found = training_patches(card, maps.layer, maps.channels[:PATCH_CHANNELS], cases=args.training_patches,
                                 count=PATCHES, network=network, device=device, progress=bar)
    print(found.describe())
    return write_training_patches(found, case_name, out)


def _concepts(case, card, network, device, layer, name) -> list[dict]:
    """The channels of ``layer`` ranked by the LRP relevance of class ``name`` passing through them (printed: the top 3)."""
    from ..core.internals.concepts import case_channel_relevance

    found = case_channel_relevance(case, card, layer, name, network=network, device=device)
    top = ", ".join(f"{r['channel']} ({100 * r['share']:.0f}%)" for r in found.rows(3))
    print(f"Concept relevance of {found.class_name} in {layer}: channels {top}")
    return found.rows()


def _maximise(args, case, card, network, device, name, out, protected) -> dict:
    from ..core.internals.case_maximise import class_index, maximise_case
    from ..core.internals.outputs import write_maximised

    label = card.class_names[class_index(card, name)]
    with TerminalProgress(f"maximising {label}") as bar:
        done = maximise_case(case, card, class_name=name, start=args.start, network=network, device=device,
                             steps=args.steps, progress=bar)
    entry = write_maximised(done, case.name, label, out, protected)
    print(f"Maximised {done.result.describe()}: {entry['file']}")
    return entry


def _surrogate(args, case, card, network, device, out, protected) -> dict:
    from ..core.internals.case_surrogate import case_surrogate
    from ..core.internals.outputs import write_surrogate

    if args.depth < 1:
        raise UserError(f"--depth {args.depth} leaves no rule; give 1 or more.")
    with TerminalProgress(f"fitting a {args.surrogate} surrogate") as bar:
        done = case_surrogate(case, card, kind=args.surrogate, depth=args.depth, network=network, device=device,
                              progress=bar)
    entry = write_surrogate(done, case.name, out, protected)
    print(f"Surrogate: {done.surrogate.describe()}: {entry['file']}, rules in {entry['rules_file']}")
    return entry
