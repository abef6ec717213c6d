"""On JAX and torch the model, its losses and training step, the
`synthetic_objects` generator, features, k-NN and the linear probe run with
TensorFlow and TFDS unimportable, as on the lent GPU machine; what needs
TensorFlow (the `tf.data` pipeline) says so when it is used."""

import os
import subprocess
import sys

import pytest

from tests.testing_utils import only_on_plumbing_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import sys
import numpy as np
import keras
from keras_ccmim import CCMIMPretrainer, data, evaluation
from keras_ccmim.data.synthetic_objects import make_synthetic_objects
from keras_ccmim.evaluation.features import extract_features
from keras_ccmim.evaluation.knn import knn_classify
from keras_ccmim.evaluation.linear_probe import linear_probe
from keras_ccmim.training.callbacks import ForegroundLift
from keras_ccmim.training.optimizer import make_optimizer

objects = make_synthetic_objects(16, image_size=16, seed=0)
images = (objects["image"].astype("float32") / 255.0 - np.float32(data.IMAGENET_MEAN)) / np.float32(
    data.IMAGENET_STD)
model = CCMIMPretrainer.from_architecture(
    "vit_tiny_patch4_32", encoder_overrides=dict(image_size=16, hidden_dim=32, num_layers=1,
                                                 num_heads=2),
    decoder_hidden_dim=16, decoder_num_layers=1, decoder_num_heads=2, seed=0)
model.compile(optimizer=make_optimizer(model, 1e-3))
lift = ForegroundLift(images, objects["foreground"], 4)
history = model.fit(images, batch_size=8, epochs=2, verbose=0, callbacks=[lift]).history
assert np.isfinite(history["loss"]).all() and "mask_selectivity" in history
x, y = extract_features(model.encoder, [(images, objects["label"])])
assert knn_classify(x, y, x, y, num_classes=10, k=4)["top1"] >= 0
assert linear_probe(x, y, x, y, num_classes=10, epochs=1).top1 >= 0
try:
    data.make_dataset
except ImportError as error:
    assert "tensorflow" in str(error), error
else:
    raise AssertionError("make_dataset loaded without TensorFlow")
print("OK", keras.backend.backend())
"""


@pytest.mark.slow
@only_on_plumbing_backend  # runs both backends in subprocesses: once is enough
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_model_step_and_evaluation_run_without_tensorflow(tmp_path, backend):
    for name in ("tensorflow", "tensorflow_datasets"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on this machine (test stub)')\n")
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), REPO, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(f"OK {backend}")
