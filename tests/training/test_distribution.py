"""Data parallelism on two logical CPU devices, in a fresh process per backend
(TensorFlow's logical devices and JAX's device count are fixed at start-up)."""

import json

import keras
import pytest

from keras_ccmim.training import setup_distribution

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

BACKEND = keras.backend.backend()

_RUN = r"""
import json, sys
import numpy as np
import keras
{prelude}
from keras_ccmim.training import pretrain, setup_distribution

setup = setup_distribution("{kind}")
facts = dict(kind=setup.kind, replicas=setup.num_replicas)
{split_check}

class Probe(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
{probe}

results = pretrain(dict(json.loads(sys.argv[1]), distribution="{kind}"), callbacks=[Probe()])
facts.update(loss=results.final_loss, history=results.history, steps=results.global_step)
print("FACTS " + json.dumps(facts))
"""

_TENSORFLOW = dict(
    kind="mirrored",
    prelude=(
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(\n"
        "    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)"
    ),
    split_check=(
        "batches = setup.handle.experimental_distribute_dataset(\n"
        "    tf.data.Dataset.from_tensors(np.zeros((16, 2), 'float32')))\n"
        "parts = setup.handle.experimental_local_results(next(iter(batches)))\n"
        "facts['per_replica_batch'] = [int(p.shape[0]) for p in parts]"
    ),
    probe="        facts['model_replicas'] = self.model.distribute_strategy.num_replicas_in_sync",
)

_JAX = dict(
    kind="data_parallel",
    prelude="",
    split_check=(
        "layout = setup.handle.get_data_layout((16, 16, 16, 3))\n"
        "facts['batch_axis'] = layout.axes[0]\n"
        "facts['mesh'] = list(layout.device_mesh.shape)"
    ),
    probe=(
        "        variable = self.model.trainable_variables[0]\n"
        "        facts['model_replicas'] = len(variable.value.sharding.device_set)\n"
        "        facts['active'] = type(keras.distribution.distribution()).__name__"
    ),
)


@pytest.mark.skipif(BACKEND == "torch", reason="torch trains on a single device")
def test_data_parallel_on_two_cpu_devices(tiny_run, run_python):
    spec = _TENSORFLOW if BACKEND == "tensorflow" else _JAX
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"} if BACKEND == "jax" else {}
    config = tiny_run(batch_size=16, epochs=1, steps_per_epoch=3, warmup_epochs=0.0)
    result = run_python(["-c", _RUN.format(**spec), json.dumps(config)], **env)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.split("FACTS ", 1)[1])
    assert facts["kind"] == spec["kind"] and facts["replicas"] == 2
    assert facts["model_replicas"] == 2
    assert facts["steps"] == 3
    if BACKEND == "tensorflow":
        assert facts["per_replica_batch"] == [8, 8]  # the global batch is split
    else:
        assert facts["batch_axis"] == "batch" and facts["mesh"] == [2]
        assert facts["active"] == "DataParallel"
    history = facts["history"]
    loss = history["loss"][0]
    assert loss == loss and abs(loss) < 1e6  # finite
    expected = history["reconstruction_loss"][0] + 0.2 * history["contrastive_loss"][0]
    assert loss == pytest.approx(expected, rel=1e-3)


@pytest.mark.skipif(BACKEND != "torch", reason="torch only")
@pytest.mark.parametrize("kind", ["mirrored", "data_parallel"])
def test_torch_refuses_multi_device(kind):
    with pytest.raises(ValueError, match="not supported on the torch backend.*KERAS_BACKEND=jax"):
        setup_distribution(kind)


@pytest.mark.skipif(BACKEND == "torch", reason="tensorflow and jax")
def test_the_other_backends_strategy_is_refused():
    other = "data_parallel" if BACKEND == "tensorflow" else "mirrored"
    expected = "mirrored" if BACKEND == "tensorflow" else "data_parallel"
    with pytest.raises(ValueError, match=f"use distribution='{expected}'"):
        setup_distribution(other)


def test_single_device_choices():
    assert setup_distribution("none").kind == "none"
    auto = setup_distribution("auto")  # CPU only here: no accelerator to spread over
    assert auto.kind == "none" and auto.num_replicas == 1
    with pytest.raises(ValueError, match="Unknown distribution 'ddp'"):
        setup_distribution("ddp")
