"""The `ccmim-linear-probe` program from a checkout: see `keras_ccmim.cli.linear_probe`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from keras_ccmim.cli import linear_probe  # noqa: E402

if __name__ == "__main__":
    linear_probe.run()
