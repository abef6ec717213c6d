"""Shared pytest configuration: quiet logs, fixed seeds, backend shown in the header."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "torch":
    import torch

    # torch's OpenMP workers spin-wait; on a busy 2-core machine two of them
    # made a 3 s test take 100 s. The tests' tiny models gain nothing from more.
    torch.set_num_threads(1)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seed_everything():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


class _LibraryMessages:
    def __init__(self, caplog):
        self._caplog = caplog

    def read(self):
        """The messages logged since the last read, one a line; clears them."""
        text = "\n".join(record.getMessage() for record in self._caplog.records)
        self._caplog.clear()
        return text


@pytest.fixture
def library_messages(caplog):
    """What the library logged (loggers under `keras_ccmim`, INFO and up):
    `library_messages.read()`, the lines since the last read. The binaries
    show the same lines on stdout (`keras_ccmim.cli.console.run_messages_to_stdout`)."""
    caplog.set_level(logging.INFO, logger="keras_ccmim")
    return _LibraryMessages(caplog)
