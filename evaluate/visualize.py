"""The `ccmim-visualize` program from a checkout: see `keras_ccmim.cli.visualize`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from keras_ccmim.cli import visualize  # noqa: E402

if __name__ == "__main__":
    visualize.run()
