"""Safe loading and atomic saving of network weights (safetensors, state dicts, TorchScript)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch

from ..io.files import atomic_path

#: Keys under which training checkpoints commonly keep the network's state dict (nnU-Net: network_weights).
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "network", "net", "network_weights")


def _numpy_scalar_types() -> list:
    """The numpy types a pickled numpy scalar needs (nnU-Net logs its Dice and losses as numpy floats).

    Data only, as torch's documentation recommends allow-listing them; nothing here can run code.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    dtypes = [getattr(np.dtypes, n) for n in ("Float16DType", "Float32DType", "Float64DType", "Int32DType",
                                               "Int64DType", "BoolDType") if hasattr(np, "dtypes")]
    return [scalar, np.dtype, *dtypes]


class UntrustedWeightsError(ValueError):
    """A weights file needs full unpickling (which can run code) and was not marked trusted."""


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (as written by ``torch.jit.save``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def untrusted_error(path: str | Path, holds: str) -> UntrustedWeightsError:
    """The one sentence for a weights file that can run code and was not marked trusted."""
    return UntrustedWeightsError(
        f"Weights file {path} holds {holds}, which can run code from the file; if you trust its source, "
        "set 'trusted: true' in the model card or pass --trust-model on the command line "
        "(in the viewer: choose the card as trusted)."
    )


def load_state_dict(path: str | Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, a weights-only torch pickle, or (trusted) a TorchScript archive, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Weights file {path} does not exist; check the model card's 'weights' field.")
    if path.suffix == ".safetensors":
        state = _load_safetensors(path)
    elif is_torchscript(path):
        state = load_torchscript(path, "cpu", trusted=trusted).state_dict()
    else:
        state = load_pickle(path, trusted)
    state = _unwrap_checkpoint(state, path)
    check_finite(state, path)
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError for bad files
        raise ValueError(f"Weights file {path} is not a readable safetensors file ({err}).") from err


def load_pickle(path: Path, trusted: bool) -> object:
    """Read a torch pickle with ``weights_only=True`` (plus numpy scalars); full unpickling only when ``trusted``."""
    try:
        with torch.serialization.safe_globals(_numpy_scalar_types()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise ValueError(f"Weights file {path} is not a readable PyTorch file ({err}).") from err
        if not trusted:
            raise untrusted_error(path, "Python objects that only full unpickling can read") from err
    except Exception as err:  # torch raises KeyError, RuntimeError, EOFError... for non-torch files
        reason = str(err).split(". ")[0].strip() or type(err).__name__
        raise ValueError(f"Weights file {path} is not a readable PyTorch file ({reason}); check that it is complete.") from err
    if not trusted:  # unreachable (refused above); kept beside the call so the gate is plain to see
        raise untrusted_error(path, "Python objects that only full unpickling can read")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # trusted by the user: may run code
    except Exception as err:
        raise ValueError(f"Weights file {path} could not be unpickled ({err}).") from err


def _unwrap_checkpoint(state: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping inside ``state``: a state dict, a checkpoint holding one, or a module."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in _CHECKPOINT_KEYS:
            if isinstance(state.get(key), Mapping):
                return _unwrap_checkpoint(state[key], path)
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"Weights file {path} does not hold a state dict (a mapping of names to tensors).")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"Weights file {path} holds entries that are not tensors: {', '.join(map(str, not_tensors[:5]))}."
        )
    keys = list(state)
    if all(isinstance(k, str) and k.startswith("module.") for k in keys):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    return dict(state)


def check_finite(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Raise ValueError naming the file and tensors that hold NaN or infinity."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"Weights file {path} holds NaN or infinite values in {', '.join(bad[:5])}"
            f"{' and more' if len(bad) > 5 else ''}; the model is broken, retrain or re-export it."
        )


def load_torchscript(path: str | Path, device: str | torch.device = "cpu", *, trusted: bool = False) -> torch.nn.Module:
    """Load a TorchScript network onto ``device``; refused unless ``trusted`` (an archive is a program)."""
    if not trusted:
        raise untrusted_error(path, "a TorchScript program (its code runs when it is loaded and called)")
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as err:
        raise ValueError(f"Weights file {path} is not a loadable TorchScript archive ({err}).") from err


def load_into(network: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Copy ``state`` into ``network``; a ValueError names the file and the first mismatched keys."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} in the network"
        for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_first(shapes)}")
    if problems:
        raise ValueError(
            f"Weights file {path} does not match the network built from the card's 'architecture' "
            f"and 'kwargs': {'; '.join(problems)}."
        )
    network.load_state_dict(state, strict=True)


def _first(items: list[str], n: int = 3) -> str:
    """The first ``n`` items joined, with a count of the rest."""
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``state`` as safetensors through a temporary file renamed into place."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Weights are saved as safetensors; name the file {path.with_suffix('.safetensors').name}.")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    check_finite(tensors, path)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary))
    return path
