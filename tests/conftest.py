"""Shared pytest configuration: quiet logs, fixed seeds, backend shown in the header."""

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
