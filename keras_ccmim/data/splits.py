"""TFDS-style split strings (`"train"`, `"train[:90%]"`, `"test[-500:]"`).

They are read by TFDS's own `ReadInstruction`, so a slice of an image folder
or of `synthetic_objects` selects the examples the same slice of a TFDS
split would.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

# TFDS's grammar has no spaces; split strings here always allowed them
# around the name, the brackets and the colon.
_SPACES = re.compile(r"\s*([\[\]:])\s*")

# What `ReadInstruction.to_absolute` reads of a split: its size.
_SplitSize = collections.namedtuple("_SplitSize", "num_examples")


def _invalid(split, why=None):
    reason = f" ({why})" if why else ""
    return ValueError(
        f"Invalid split {split!r}{reason}. Use a split name with an optional "
        "slice, e.g. 'train', 'train[:90%]', 'train[90%:]' or "
        "'train[45000:45100]'."
    )


def _from_spec(split, spec):
    """`tfds.core.ReadInstruction.from_spec(spec)`, its errors told as an
    invalid `split`."""
    import tensorflow_datasets as tfds

    try:
        return tfds.core.ReadInstruction.from_spec(spec)
    except NotImplementedError:  # a slice of "all"
        raise _invalid(split, "'all' cannot be sliced") from None
    except ValueError as error:
        why = "percentages lie in [-100%, 100%]" if "[-100, 100]" in str(error) else None
        raise _invalid(split, why) from None


def _bound(split, name, text, side):
    """The one-sided `ReadInstruction` of a bound (`side` "from_" or "to")."""
    instruction = _from_spec(split, f"{name}[{text}:]" if side == "from_" else f"{name}[:{text}]")
    if instruction.unit not in ("abs", "%"):
        raise _invalid(split, "shard slices are not supported")
    return instruction


def parse_split(
    split: str,
) -> tuple[str, tfds.core.ReadInstruction | None, tfds.core.ReadInstruction | None]:
    """Reads a split string with TFDS's `ReadInstruction.from_spec`.

    Accepts `"name"` and `"name[start:stop]"`, where each bound is an integer
    (negative counts from the end) or a percentage (`"90%"`), and may be left
    out; spaces around the name and bounds are ignored. Sums
    (`"train+test"`), steps and shard slices are not supported.

    Args:
        split: str, e.g. `"train"`, `"train[:90%]"`, `"train[45000:45100]"`.

    Returns:
        `(name, start, stop)`: the split's name, and for each bound that is
        written a one-sided `tfds.core.ReadInstruction` in the bound's own
        unit (`None` for a bound left out).
    """
    if not isinstance(split, str):
        raise _invalid(split)
    text = _SPACES.sub(r"\1", split.strip())
    name, bracket, selector = text.partition("[")
    if "+" in name:
        raise _invalid(split, "sums of splits are not supported")
    _from_spec(split, name)  # TFDS's check of the name
    if not bracket:
        return name, None, None
    if not selector.endswith("]") or selector.count(":") != 1:
        raise _invalid(split)
    start, stop = selector[:-1].split(":")
    # from_spec gives both bounds the unit of either ("train[10%:-5]" would
    # end at -5%); here each keeps its own, so each is read alone.
    return (
        name,
        _bound(split, name, start, "from_") if start else None,
        _bound(split, name, stop, "to") if stop else None,
    )


def _absolute(instruction, side, num_examples, default):
    """The index in `[0, num_examples]` a one-sided instruction stands for."""
    if instruction is None:
        return default
    if instruction.unit == "abs":
        # TFDS refuses bounds past the split's end; here they are clamped to
        # it, as in Python slices, so a slice written for a larger split reads
        # what there is.
        value = getattr(instruction, side)
        value = min(max(value, -num_examples), num_examples)
        instruction = dataclasses.replace(instruction, **{side: value})
    sizes = {instruction.split_name: _SplitSize(num_examples)}
    (absolute,) = instruction.to_absolute(sizes)
    value = getattr(absolute, side)
    return default if value is None else value


def split_bounds(split: str, num_examples: int) -> tuple[str, int, int]:
    """Resolves a split string to absolute `[start, stop)` indices with
    TFDS's `ReadInstruction.to_absolute`.

    Percentages round to the nearest example, as in TFDS, so `"train[:90%]"`
    and `"train[90%:]"` partition the split exactly. Integer bounds past the
    split's end are clamped to it, and a stop before the start gives an
    empty range.

    Args:
        split: str, see `parse_split`.
        num_examples: int, the number of examples in the named split.

    Returns:
        `(name, start, stop)` with `0 <= start <= stop <= num_examples`.
    """
    name, start, stop = parse_split(split)
    start = _absolute(start, "from_", num_examples, 0)
    stop = _absolute(stop, "to", num_examples, num_examples)
    # TFDS keeps a stop before the start (an empty read); the range here
    # is made empty at the start, so `stop - start` counts the examples.
    return name, start, max(start, stop)
