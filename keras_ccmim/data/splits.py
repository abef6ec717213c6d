"""TFDS-style split strings (`"train"`, `"train[:90%]"`, `"test[-500:]"`)."""

import re

_SPLIT_PATTERN = re.compile(
    r"^\s*(?P<name>\w+)\s*"
    r"(?:\[\s*(?P<start>-?\d+%?)?\s*:\s*(?P<stop>-?\d+%?)?\s*\])?\s*$"
)


def parse_split(split):
    """Splits a split string into its name and its optional slice bounds.

    Accepts `"name"` and `"name[start:stop]"`, where each bound is an integer
    (negative counts from the end) or a percentage (`"90%"`), and may be left
    out. Sums (`"train+test"`) and steps are not supported.

    Args:
        split: str, e.g. `"train"`, `"train[:90%]"`, `"train[45000:45100]"`.

    Returns:
        `(name, start, stop)`: the split's name and the two bounds as written
        (`str` or `None`).
    """
    match = _SPLIT_PATTERN.match(split) if isinstance(split, str) else None
    if match is None:
        raise ValueError(
            f"Invalid split {split!r}. Use a split name with an optional "
            "slice, e.g. 'train', 'train[:90%]', 'train[90%:]' or "
            "'train[45000:45100]'."
        )
    return match.group("name"), match.group("start"), match.group("stop")


def _resolve_bound(bound, num_examples, default):
    if bound is None:
        return default
    if bound.endswith("%"):
        value = round(int(bound[:-1]) * num_examples / 100)
    else:
        value = int(bound)
    if value < 0:
        value += num_examples
    return min(max(value, 0), num_examples)


def split_bounds(split, num_examples):
    """Resolves a split string to absolute `[start, stop)` indices.

    Percentages round to the nearest example, as in TFDS, so `"train[:90%]"`
    and `"train[90%:]"` partition the split exactly.

    Args:
        split: str, see `parse_split`.
        num_examples: int, the number of examples in the named split.

    Returns:
        `(name, start, stop)` with `0 <= start <= stop <= num_examples`.
    """
    name, start, stop = parse_split(split)
    start = _resolve_bound(start, num_examples, 0)
    stop = _resolve_bound(stop, num_examples, num_examples)
    return name, start, max(start, stop)
