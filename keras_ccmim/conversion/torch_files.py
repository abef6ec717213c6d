"""Reads an MAE / ccMIM PyTorch `.pth` checkpoint, which is untrusted input.

The inputs are MAE's `mae_pretrain_vit_{base,large,huge}.pth` (encoder only)
and `mae_visualize_vit_*.pth` (encoder and decoder), state dicts in timm's
naming under the key `"model"`, often beside the training `argparse.Namespace`
under `"args"`. The public ccMIM code saves the same names plus its projector,
possibly behind a `module.` prefix.

Reading `.pth` files needs PyTorch (the `torch` extra); it is imported only
inside `load_mae_state_dict`, so the rest works without it. The file is read
with `torch.load(weights_only=True)`, which unpickles tensors and plain
containers only; `argparse.Namespace` (MAE's `args`) is the one class
allowed besides. Anything else in the file is refused.
"""

import argparse
import os
import pickle
from typing import NamedTuple, Optional

from keras_ccmim.conversion.mae_architecture import listing


class MAECheckpoint(NamedTuple):
    """What `load_mae_state_dict` read: `state_dict` (`{name: np.ndarray}`)
    and `args` (the training arguments as a dict, or None)."""

    state_dict: dict
    args: Optional[dict]


def load_mae_state_dict(path):
    """Reads an MAE / ccMIM `.pth` checkpoint into numpy arrays.

    The file is unpickled with `torch.load(..., weights_only=True)`: tensors,
    plain containers and numbers only, plus `argparse.Namespace` (MAE saves
    its arguments as one). A file holding any other class is refused.

    Args:
        path: the `.pth` file.

    Returns:
        `MAECheckpoint(state_dict, args)`: the state dict under `"model"`
        (or `"state_dict"`, or the file itself when it is a state dict) with
        floating tensors as float32 numpy arrays, and `vars(args)` (None when
        the file has no `"args"`).

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: the file holds other pickled classes, or no state dict.
        OSError: the file cannot be read.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch .pth checkpoint needs PyTorch, which is not installed. "
            "Install the optional extra (pip install 'keras-ccmim[torch]', or pip install "
            "torch), or pass a dict of numpy arrays to convert_mae_state_dict."
        ) from error

    path = os.fspath(path)
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    try:
        if safe_globals is not None:
            with safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:  # torch < 2.5: the allow-list is process-wide.
            torch.serialization.add_safe_globals([argparse.Namespace])
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()
        unsupported = [line for line in reason if "GLOBAL" in line or "global" in line]
        detail = (unsupported or reason or ["(no detail)"])[0].strip()
        raise ValueError(
            f"Refused to read {path!r}: it holds pickled objects other than tensors, plain "
            f"containers and argparse.Namespace, and unpickling those could run arbitrary code "
            f"(torch: {detail}). Only MAE-style checkpoints are read. If you trust the file, "
            "re-save just its weights with torch.save({'model': state_dict}, new_path) and "
            "convert that."
        ) from error

    if not isinstance(obj, dict):
        raise ValueError(
            f"{path!r} holds a {type(obj).__name__}, not a checkpoint dict. Expected MAE's "
            "layout: {'model': state_dict, 'args': Namespace, ...}, or a state dict."
        )
    raw_args = obj.get("args")
    if "model" in obj and isinstance(obj["model"], dict):
        state = obj["model"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]
    elif obj and all(torch.is_tensor(v) for v in obj.values()):
        state = obj
    else:
        raise ValueError(
            f"{path!r} has no state dict: expected the weights under 'model' (MAE) or "
            f"'state_dict', or a dict of tensors; its top-level keys are "
            f"{listing(sorted(map(str, obj)))}."
        )

    arrays = {}
    not_tensors = []
    for key, value in state.items():
        if not torch.is_tensor(value):
            not_tensors.append(str(key))
            continue
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float32)
        arrays[str(key)] = value.numpy()
    if not_tensors:
        raise ValueError(
            f"{path!r}: the state dict holds values that are not tensors: "
            f"{listing(not_tensors)}. Expected a torch state dict of tensors."
        )

    if isinstance(raw_args, argparse.Namespace):
        args = dict(vars(raw_args))
    elif isinstance(raw_args, dict):
        args = dict(raw_args)
    else:
        args = None
    return MAECheckpoint(arrays, args)
