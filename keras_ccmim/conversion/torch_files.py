"""Reads an MAE / ccMIM PyTorch `.pth` checkpoint, which is untrusted input.

The inputs are MAE's `mae_pretrain_vit_{base,large,huge}.pth` (encoder only)
and `mae_visualize_vit_*.pth` (encoder and decoder), state dicts in timm's
naming under the key `"model"`, often beside the training `argparse.Namespace`
under `"args"`. The public ccMIM code saves the same names plus its projector,
possibly behind a `module.` prefix.

A `.pth` is read with `torch.load(weights_only=True)`, which unpickles
tensors and plain containers only; `argparse.Namespace` (MAE's `args`) is the
one class allowed besides. Anything else in the file is refused, and so is a
file that is not a checkpoint at all (empty, truncated, damaged), each with
one line that says what is wrong with the file.

Reading `.pth` files needs PyTorch (the `torch` extra); it is imported only
inside `load_mae_state_dict`, so the rest works without it.
"""

import argparse
import os
import pickle
import re
import struct
import warnings
from typing import NamedTuple, Optional

from keras_ccmim.conversion.mae_architecture import listing

# How torch.save's files begin: its zip archive, or its older pickle format
# (pickle protocol 2's first byte).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_START = b"\x80"

# What torch.load raises for a file that is not a well-formed checkpoint
# (struct.error: a legacy file cut short).
_DAMAGED_FILE_ERRORS = (
    pickle.UnpicklingError, EOFError, RuntimeError, struct.error, ValueError, KeyError, IndexError
)


class MAECheckpoint(NamedTuple):
    """What `load_mae_state_dict` read: `state_dict` (`{name: np.ndarray}`)
    and `args` (the training arguments as a dict, or None)."""

    state_dict: dict
    args: Optional[dict]


def _import_torch(what):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{what} needs PyTorch, which is not installed. Install the optional extra "
            "(pip install 'keras-ccmim[torch]', or pip install torch), or pass a dict of numpy "
            "arrays to convert_mae_state_dict."
        ) from error
    return torch


def _file_format(path):
    """`"zip"` or `"pickle"` from the file's first bytes; a ValueError
    naming what is wrong when it is neither."""
    with open(path, "rb") as f:
        head = f.read(4)
        size = os.fstat(f.fileno()).st_size
    if not head:
        raise ValueError(
            f"{path!r} is empty (0 bytes), so it holds no checkpoint: a download or copy "
            "was cut short. Fetch the file again."
        )
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_PICKLE_START):
        return "pickle"
    raise ValueError(
        f"{path!r} ({size} bytes) is not a PyTorch checkpoint: it begins with neither "
        "torch.save's zip header nor a pickle. It is damaged or another kind of file; fetch "
        "the MAE / ccMIM checkpoint again."
    )


def _torch_reason(error):
    """torch's error as a short reason, without the advice to load with
    `weights_only=False`, which a file from outside must never get."""
    text = str(error).strip()
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    first = match.group(1) if match else (text.splitlines() or [""])[0]
    first = first.split(". ")[0].strip().rstrip(".")
    if "weights_only" in first:
        first = ""
    name = "struct.error" if isinstance(error, struct.error) else type(error).__name__
    return f"{name}: {first}" if first else name


def _torch_load(torch, path):
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    try:
        with warnings.catch_warnings():
            # A damaged file's first byte can read as an unusual pickle protocol.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            if safe_globals is not None:
                with safe_globals([argparse.Namespace]):
                    return torch.load(path, map_location="cpu", weights_only=True)
            # torch < 2.5: the allow-list is process-wide.
            torch.serialization.add_safe_globals([argparse.Namespace])
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", str(error))
        if not found:
            raise _damaged(path, error) from error
        raise ValueError(
            f"Refused to read {path!r}: only tensors, plain containers and argparse.Namespace "
            f"are read, and it holds a pickled {found.group(1)}; unpickling other classes could "
            "run arbitrary code. Only MAE-style checkpoints are read. If you "
            "trust the file, re-save just its weights with torch.save({'model': state_dict}, "
            "new_path) and convert that."
        ) from error
    except _DAMAGED_FILE_ERRORS as error:
        raise _damaged(path, error) from error


def _damaged(path, error):
    return ValueError(
        f"Cannot read {path!r}: it is not a well-formed PyTorch checkpoint "
        f"({_torch_reason(error)}). The file is truncated or damaged; fetch it again."
    )


def load_mae_state_dict(path):
    """Reads an MAE / ccMIM `.pth` checkpoint into numpy arrays.

    A `.pth` is unpickled with `torch.load(..., weights_only=True)`: tensors,
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
        ValueError: the file is empty, damaged or not a checkpoint, holds
            other pickled classes, or no state dict (one line each).
        OSError: the file cannot be read.
    """
    path = os.fspath(path)
    torch = _import_torch("Reading a PyTorch .pth checkpoint")
    _file_format(path)
    obj = _torch_load(torch, path)

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
