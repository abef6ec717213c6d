"""PyTorch weight files: reading untrusted `.pth` / `.safetensors` state
dicts, and writing state dicts in both formats.

The files read are MAE's `mae_pretrain_vit_{base,large,huge}.pth` (encoder
only) and `mae_visualize_vit_*.pth` (encoder and decoder), state dicts in
timm's naming under the key `"model"`, often beside the training
`argparse.Namespace` under `"args"`; the public ccMIM code's, with the same
names plus its projector, possibly behind a `module.` prefix; and flat
`.safetensors` state dicts in the same naming (timm's own weights files,
MAE's among them, and this package's exports).

A `.pth` is read with `torch.load(weights_only=True)`, which unpickles
tensors and plain containers only; `argparse.Namespace` (MAE's `args`) is the
one class allowed besides. Anything else in the file is refused, and so is a
file that is not a checkpoint at all (empty, truncated, damaged), each with
one line that says what is wrong with the file. A `.safetensors` file holds
no pickle: a JSON header and raw arrays.

Reading and writing `.pth` need PyTorch (the `torch` extra), imported only
inside those functions; `.safetensors` needs only the `safetensors` package
and numpy.
"""

import argparse
import os
import pickle
import re
import struct
import warnings
from typing import Any, NamedTuple

import numpy as np

from keras_ccmim.conversion.mae_architecture import listing
from keras_ccmim.type_aliases import PathLike

# How each format's files begin: torch.save's zip archive, its older pickle
# format (pickle protocol 2's first byte), safetensors' 8-byte header length
# and then its JSON header.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_START = b"\x80"
_SAFETENSORS_HEADER_START = b"{"

# What torch.load raises for a file that is not a well-formed checkpoint
# (struct.error: a legacy file cut short).
_DAMAGED_FILE_ERRORS = (
    pickle.UnpicklingError, EOFError, RuntimeError, struct.error, ValueError, KeyError, IndexError
)


class MAECheckpoint(NamedTuple):
    """What `load_mae_state_dict` read: `state_dict` (`{name: np.ndarray}`)
    and `args` (the training arguments as a dict, or None)."""

    state_dict: dict[str, np.ndarray]
    args: dict[str, Any] | None


def _import_torch(what):
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{what} needs PyTorch, which is not installed. Install the optional extra "
            "(pip install 'keras-ccmim[torch]', or pip install torch), or use .safetensors "
            "files."
        ) from error
    return torch


def _file_format(path):
    """`"zip"`, `"pickle"` or `"safetensors"` from the file's first bytes;
    a ValueError naming what is wrong when it is none of them."""
    with open(path, "rb") as f:
        head = f.read(9)
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
    if len(head) == 9 and head[8:] == _SAFETENSORS_HEADER_START:
        if 8 + struct.unpack("<Q", head[:8])[0] <= size:
            return "safetensors"
    raise ValueError(
        f"{path!r} ({size} bytes) is not a PyTorch checkpoint: it begins with neither "
        "torch.save's zip header, nor a pickle, nor a safetensors header. It is damaged or "
        "another kind of file; fetch the MAE / ccMIM checkpoint again."
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
            # A torch without the `safe_globals` context has a process-wide allow-list.
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


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split())[:200]
        raise ValueError(
            f"Cannot read {path!r}: it is not a well-formed safetensors file ({reason}). The "
            "file is truncated or damaged; fetch it again."
        ) from error


def load_mae_state_dict(path: PathLike) -> MAECheckpoint:
    """Reads an MAE / ccMIM `.pth` checkpoint, or a `.safetensors` state
    dict, into numpy arrays.

    A `.pth` is unpickled with `torch.load(..., weights_only=True)`: tensors,
    plain containers and numbers only, plus `argparse.Namespace` (MAE saves
    its arguments as one). A file holding any other class is refused. The
    format is told from the file's first bytes, not its name.

    Args:
        path: the `.pth` or `.safetensors` file.

    Returns:
        `MAECheckpoint(state_dict, args)`: the state dict under `"model"`
        (or `"state_dict"`, or the file itself when it is a state dict) with
        floating tensors as float32 numpy arrays, and `vars(args)` (None when
        the file has no `"args"`; always None for `.safetensors`).

    Raises:
        ImportError: a `.pth` and PyTorch is not installed.
        ValueError: the file is empty, damaged or not a checkpoint, holds
            other pickled classes, or no state dict (one line each).
        OSError: the file cannot be read.
    """
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        _import_torch("Reading a PyTorch .pth checkpoint")
    if _file_format(path) == "safetensors":
        arrays = _read_safetensors(path)
        return MAECheckpoint(
            {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
             for k, v in arrays.items()},
            None,
        )
    torch = _import_torch("Reading a PyTorch .pth checkpoint")
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


# The state dict formats written, by the file's suffix.
_SUFFIXES = {".safetensors": "safetensors", ".pth": "pth"}


def state_dict_format(path):
    """`"safetensors"` or `"pth"` from the file name's suffix."""
    suffix = os.path.splitext(os.fspath(path))[1]
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"{os.fspath(path)!r}: name the weights file .safetensors (the default: no pickle, "
            f"no torch needed) or .pth (torch.save), not {suffix!r}."
        )
    return _SUFFIXES[suffix]


def save_state_dict(state_dict, path, file_format):
    """Writes `{name: np.ndarray}` to `path` through a temporary file (a
    kill leaves no half-written file under that name).

    `"safetensors"`: `safetensors.numpy.save_file` with the `{"format":
    "pt"}` metadata torch loaders expect; no torch needed. `"pth"`:
    `torch.save` of a flat dict of tensors, which `torch.load(...,
    weights_only=True)` reads.
    """
    path = os.fspath(path)
    if file_format == "pth":
        torch = _import_torch("Writing a .pth file")
    elif file_format != "safetensors":
        raise ValueError(f"file_format must be 'safetensors' or 'pth', got {file_format!r}.")
    tmp = f"{path}.tmp"
    arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
    try:
        with open(tmp, "wb"):
            mode = os.stat(tmp).st_mode  # the permissions this user's files get
        if file_format == "pth":
            torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp)
        else:
            from safetensors.numpy import save_file

            save_file(arrays, tmp, metadata={"format": "pt"})
            os.chmod(tmp, mode)  # safetensors writes through a private (0600) file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # written here, and left only by a failure
            os.remove(tmp)
