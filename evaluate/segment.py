"""The `ccmim-segment` program from a checkout: see `keras_ccmim.cli.segment`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from keras_ccmim.cli import segment  # noqa: E402

if __name__ == "__main__":
    segment.run()
