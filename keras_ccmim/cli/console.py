"""The console of a program: where the library's messages go when a program runs it.

The library logs through `logging` (loggers under `keras_ccmim`): what it
restored, resumed, rolled back, why it stopped. A library leaves handlers
to its caller; the binaries use `run_messages_to_stdout` so that a user
sees these lines on the console as plain text, as before they were logged.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

LOGGER_NAME = "keras_ccmim"


class _Stdout(logging.StreamHandler):
    """A handler that writes to whatever `sys.stdout` is at each message
    (pytest and notebooks replace it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def run_messages_to_stdout(level: int = logging.INFO) -> Iterator[None]:
    """Within the block, the `keras_ccmim` messages of `level` and above are
    written to stdout, one plain line each, and not passed on to the root
    logger's handlers (absl's, under `app.run`, would repeat them on stderr
    with a prefix, and only from WARNING on). On leaving, the logger is put
    back as it was."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = _Stdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


def fail(error: BaseException | str, code: int = 2) -> int:
    """Prints `Error: <error>` on stderr, one line, and returns `code` (the
    exit status: 2 for bad input, as absl's usage errors)."""
    print(f"Error: {' '.join(str(error).split())}", file=sys.stderr)
    return code


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`), except
    that a bad flag value, an unknown flag, or a `--config` recipe that
    cannot be loaded ends the program with one `Error:` line and exit status
    2 instead of a traceback or the help text."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except Exception as error:  # noqa: BLE001 (a recipe's own code can raise anything)
        sys.exit(fail(_flag_error(error)))


def _flag_error(error):
    text = " ".join(str(error).split()) or type(error).__name__
    if "has no attribute 'get_config'" in text:
        return ("The --config file defines no get_config(): a recipe is a .py file whose "
                "get_config(arg=None) returns the run's fields (see keras_ccmim/recipes/).")
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {' '.join(str(cause).split())})"
    return text
