"""MONAI bundles as models: the card is read from the bundle's inference config and metadata.

A bundle folder holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt`` (a state dict) or ``models/model.ts`` (TorchScript). The config is read through
``monai.bundle.ConfigParser`` with its ``@`` references resolved:

- ``network_def``: a MONAI network by ``_target_`` and its arguments (the card's architecture and kwargs);
- ``preprocessing``: the transforms, mapped to the card's preprocessing: ``Orientationd`` (axcodes),
  ``Spacingd`` (pixdim), ``NormalizeIntensityd`` (``nonzero`` -> zscore_nonzero, else zscore),
  ``ScaleIntensityd`` (minmax); loading, channel-first and type transforms need nothing;
- ``inferer``: ``SlidingWindowInferer`` (roi_size, sw_batch_size, overlap, mode);
- ``postprocessing``: ``Activationsd`` (softmax or sigmoid) or ``AsDiscreted`` (argmax: softmax).

Modalities and classes come from the metadata's ``network_data_format`` ``channel_def``. A config
holding ``$`` expressions is Python code run by ``monai.bundle``: it is refused, like a pickle,
until the model is trusted; so is a ``_target_`` outside MONAI and torch. Anything the card cannot
express (another transform, another inferer) is refused with a sentence naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .card import ModelCard

_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
_WEIGHTS = ("model.pt", "model.ts")
#: Transforms that change nothing the card describes (loading, channel layout, types).
_NEUTRAL = {"LoadImaged", "LoadImage", "EnsureChannelFirstd", "EnsureChannelFirst", "EnsureTyped", "EnsureType",
            "CastToTyped", "CastToType", "ToTensord", "ToTensor", "AddChanneld", "ConcatItemsd"}
_SAFE_TARGETS = ("monai.", "torch.")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the bundle and what is wrong."""


def is_bundle_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a MONAI bundle (a ``configs`` folder with metadata.json)."""
    path = Path(path)
    return path.is_dir() and (path / "configs" / "metadata.json").is_file()


def _read(path: Path, folder: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise BundleError(f"Bundle {folder}: {path.relative_to(folder)} cannot be read ({err}); fix the file.") from None


def _code_in(value: Any, where: str = "") -> list[str]:
    """Places in a config holding code: ``$`` expressions, or ``_target_`` outside MONAI and torch."""
    found: list[str] = []
    if isinstance(value, str) and value.startswith("$"):
        found.append(f"{where or 'the config'}: {value[:60]}")
    elif isinstance(value, dict):
        target = value.get("_target_")
        if isinstance(target, str) and "." in target and not target.startswith(_SAFE_TARGETS):
            found.append(f"{where}._target_: {target}")
        for key, item in value.items():
            found += _code_in(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _code_in(item, f"{where}[{i}]")
    return found


def _plain(value: Any) -> Any:
    """A resolved config part as plain dicts and lists (``monai.bundle`` wraps components in ConfigItems)."""
    from monai.bundle.config_item import ConfigItem

    if isinstance(value, ConfigItem):
        value = value.get_config()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1]


def bundle_card(path: str | Path, *, trusted: bool = False) -> ModelCard:
    """The model card of the MONAI bundle at ``path``."""
    from monai.bundle import ConfigParser

    from ..training.datasets import modalities_from_channel_names
    from .architectures import TORCHSCRIPT, known_architectures
    from .card import parse_model_card

    folder = Path(path).expanduser().resolve()
    configs = folder / "configs"
    config_path = next((configs / n for n in _CONFIG_NAMES if (configs / n).is_file()), None)
    if config_path is None:
        raise BundleError(f"Bundle {folder} has no configs/inference.json or inference.yaml; give a bundle with an "
                          "inference config.")
    metadata = _read(configs / "metadata.json", folder)
    raw = _read(config_path, folder)
    if not isinstance(raw, dict) or not isinstance(metadata, dict):
        raise BundleError(f"Bundle {folder}: its config and metadata must each hold a mapping.")
    code = _code_in(raw)
    if code and not trusted:
        raise BundleError(
            f"Bundle {folder}: {config_path.name} holds code that monai.bundle would run ({code[0]}"
            f"{f' and {len(code) - 1} more' if len(code) > 1 else ''}); if you trust its source, pass --trust-model "
            "(in the viewer: open the model as trusted)."
        )
    parser = ConfigParser(raw)
    parser["bundle_root"] = str(folder)

    def part(key: str, required: bool = True) -> Any:
        if key not in raw:
            if required:
                raise BundleError(f"Bundle {folder}: {config_path.name} has no '{key}'; an inference config needs it.")
            return None
        try:
            return _plain(parser.get_parsed_content(key, instantiate=False, eval_expr=trusted, lazy=True))
        except Exception as err:  # monai.bundle raises KeyError/ValueError/... for broken references
            raise BundleError(f"Bundle {folder}: '{key}' in {config_path.name} cannot be resolved ({err}).") from None

    weights = next((folder / "models" / n for n in _WEIGHTS if (folder / "models" / n).is_file()), None)
    if weights is None:
        raise BundleError(f"Bundle {folder} has no models/model.pt or models/model.ts; copy the bundle's weights.")
    network = part("network_def")
    if not isinstance(network, dict) or "_target_" not in network:
        raise BundleError(f"Bundle {folder}: 'network_def' must be a mapping with a _target_ network.")
    architecture = _short(network["_target_"])
    kwargs = {k: v for k, v in network.items() if not k.startswith("_")}
    if weights.suffix == ".ts":
        architecture, kwargs = TORCHSCRIPT, {}
    elif architecture not in known_architectures():
        raise BundleError(f"Bundle {folder}: its network {network['_target_']} is not one napari-segxai builds by name "
                          f"({', '.join(known_architectures())}); export it with TorchScript as models/model.ts.")

    formats = metadata.get("network_data_format") or {}
    inputs = next(iter((formats.get("inputs") or {}).values()), {}) or {}
    outputs = next(iter((formats.get("outputs") or {}).values()), {}) or {}
    if not inputs.get("channel_def"):
        raise BundleError(f"Bundle {folder}: configs/metadata.json gives no network_data_format inputs channel_def, so "
                          "the input sequences are unknown; add it (e.g. {\"0\": \"T1c\", \"1\": \"FLAIR\"}).")
    modalities = modalities_from_channel_names(inputs["channel_def"], f"Bundle {folder} metadata inputs channel_def")
    if not outputs.get("channel_def"):
        raise BundleError(f"Bundle {folder}: configs/metadata.json gives no network_data_format outputs channel_def, "
                          "so the classes are unknown; add it.")
    class_names = _modalities_free_names(outputs["channel_def"], folder)
    activation = _activation(part("postprocessing", required=False), folder)
    preprocessing = _preprocessing(part("preprocessing", required=False), folder)
    inference = _inference(part("inferer"), folder)
    classes = [{"name": n, "label": i if activation == "softmax" else i + 1} for i, n in enumerate(class_names)]
    card_raw = {
        "name": str(metadata.get("name") or folder.name),
        "description": f"MONAI bundle {folder.name} {metadata.get('version', '')}: {metadata.get('task', '')}".strip(),
        "architecture": architecture, "kwargs": kwargs, "weights": str(weights), "trusted": trusted,
        "spatial_dims": int(kwargs.get("spatial_dims", len(inference["roi_size"]))),
        "modalities": list(modalities), "classes": classes, "activation": activation,
        "preprocessing": preprocessing, "inference": inference,
    }
    try:
        return parse_model_card(card_raw, folder)  # the card's path is the bundle folder (what opens it again)
    except ValueError as err:
        raise BundleError(f"Bundle {folder}: {err}") from None


def _modalities_free_names(channel_def: Any, folder: Path) -> list[str]:
    """Class names in output-channel order from a ``channel_def`` mapping."""
    if not isinstance(channel_def, dict):
        raise BundleError(f"Bundle {folder}: outputs channel_def must map channel numbers to names.")
    try:
        return [str(channel_def[k]) for k in sorted(channel_def, key=int)]
    except (TypeError, ValueError):
        raise BundleError(f"Bundle {folder}: outputs channel_def keys must be 0, 1, 2, ...") from None


def _transforms(compose: Any) -> list[dict]:
    if compose is None:
        return []
    items = compose.get("transforms", []) if isinstance(compose, dict) else compose
    return [t for t in items if isinstance(t, dict)] if isinstance(items, list) else []


def _activation(postprocessing: Any, folder: Path) -> str:
    for transform in _transforms(postprocessing):
        name = _short(transform.get("_target_"))
        if name in ("Activationsd", "Activations"):
            if transform.get("sigmoid"):
                return "sigmoid"
            if transform.get("softmax"):
                return "softmax"
        if name in ("AsDiscreted", "AsDiscrete") and transform.get("argmax"):
            return "softmax"
    raise BundleError(f"Bundle {folder}: its postprocessing has no Activationsd (softmax or sigmoid) or AsDiscreted "
                      "with argmax, so how to read the outputs is unknown; write a model card for it.")


def _preprocessing(preprocessing: Any, folder: Path) -> dict:
    result: dict = {"orientation": None, "spacing": None, "normalization": "none"}
    for transform in _transforms(preprocessing):
        name = _short(transform.get("_target_"))
        if name in _NEUTRAL:
            continue
        if name in ("Orientationd", "Orientation"):
            result["orientation"] = str(transform.get("axcodes"))
        elif name in ("Spacingd", "Spacing"):
            result["spacing"] = list(transform.get("pixdim"))
        elif name in ("NormalizeIntensityd", "NormalizeIntensity") and transform.get("channel_wise", False):
            result["normalization"] = "zscore_nonzero" if transform.get("nonzero", False) else "zscore"
        elif name in ("ScaleIntensityd", "ScaleIntensity") and transform.get("minv", 0.0) == 0.0 \
                and transform.get("maxv", 1.0) == 1.0 and transform.get("channel_wise", False):
            result["normalization"] = "minmax"
        else:
            raise BundleError(f"Bundle {folder}: its preprocessing uses {name} "
                              f"({json.dumps(transform, default=str)[:80]}), which a model card cannot express; "
                              "write a model card for it.")
    return result


def _inference(inferer: Any, folder: Path) -> dict:
    if not isinstance(inferer, dict) or _short(inferer.get("_target_")) != "SlidingWindowInferer":
        raise BundleError(f"Bundle {folder}: its inferer is not a SlidingWindowInferer; write a model card for it.")
    roi = inferer.get("roi_size")
    return {"roi_size": list(roi) if isinstance(roi, (list, tuple)) else roi,
            "overlap": float(inferer.get("overlap", 0.25)), "sw_batch_size": int(inferer.get("sw_batch_size", 1)),
            "mode": str(inferer.get("mode", "constant"))}
