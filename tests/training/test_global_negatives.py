"""InfoNCE negatives from the global batch on every backend.

TensorFlow: on 2 logical CPU devices under `MirroredStrategy`, the projector
(synchronised BatchNorm) and the InfoNCE loss with the embeddings gathered
across replicas give the single-device loss and gradients of the same global
batch. JAX: `DataParallel` traces `compute_loss` on the global batch, with
nothing to gather. Each runs in a fresh process (logical devices are fixed
at start-up)."""

import json

import keras
import pytest

pytestmark = pytest.mark.slow

BACKEND = keras.backend.backend()

_TENSORFLOW = r"""
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
import keras
from keras_ccmim import backend_specific, losses
from keras_ccmim.layers.contrastive_heads import ProjectionHead

KIND = "{kind}"
rng = np.random.RandomState(0)
visible, masked = (rng.randn(16, 32).astype("float32") for _ in range(2))


def make_head():
    keras.utils.set_random_seed(0)
    head = ProjectionHead(hidden_dim=24, output_dim=16)
    head.build((None, 32))
    return head


def step(head, visible, masked, gathered=True):
    with tf.GradientTape() as tape:
        student = head(visible, training=True)
        teacher = tf.stop_gradient(head(masked, training=True))
        cross = backend_specific.cross_replica_gather() if gathered else None
        loss = losses.contrastive_loss(KIND, student, teacher, 0.5, cross_replica=cross)
        loss = backend_specific.scale_loss_for_replicas(loss)
    return loss, tape.gradient(loss, head.trainable_variables)


single = make_head()
want_loss, want_grads = tf.function(step)(single, visible, masked)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    head = make_head()


def shares(array):
    return strategy.experimental_distribute_values_from_function(
        lambda context: array[context.replica_id_in_sync_group * 8:][:8])


@tf.function
def distributed(gathered):
    loss, grads = strategy.run(step, args=(head, shares(visible), shares(masked), gathered))
    total = strategy.reduce("SUM", loss, axis=None)
    return total, [strategy.reduce("SUM", g, axis=None) for g in grads]


facts = {{}}
for gathered in (True, False):
    loss, grads = distributed(gathered)
    facts[f"loss_{{gathered}}"] = abs(float(loss) - float(want_loss))
    facts[f"grad_{{gathered}}"] = max(
        float(np.max(np.abs(g.numpy() - w.numpy()))) for g, w in zip(grads, want_grads))
facts["loss"] = float(want_loss)
facts["synchronized"] = [l.synchronized for l in head.mlp if hasattr(l, "synchronized")]
print("FACTS " + json.dumps(facts))
"""


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute gathers across replicas")
@pytest.mark.parametrize("kind", ["infonce", "infonce_cross"])
def test_gathered_negatives_equal_single_device(kind, run_python):
    result = run_python(["-c", _TENSORFLOW.format(kind=kind)])
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.split("FACTS ", 1)[1])
    print(kind, facts)
    assert facts["synchronized"] == [True, True]
    assert facts["loss_True"] < 1e-5 and facts["grad_True"] < 1e-5
    # Each replica's own negatives (no gather) give another loss: the test
    # can tell the two apart.
    assert facts["loss_False"] > 1e-3


_JAX = r"""
import json
import numpy as np
import keras
from keras_ccmim import backend_specific
from keras_ccmim.models import CCMIMPretrainer
from keras_ccmim.training import setup_distribution

seen = {}
compute_loss = CCMIMPretrainer.compute_loss


def probe(self, x=None, y=None, y_pred=None, *args, **kwargs):
    seen["student_rows"] = int(y_pred["student"].shape[0])
    seen["gather"] = backend_specific.cross_replica_gather() is not None
    return compute_loss(self, x, y, y_pred, *args, **kwargs)


CCMIMPretrainer.compute_loss = probe
setup = setup_distribution("data_parallel")
with setup.scope():
    model = CCMIMPretrainer.from_architecture(
        "vit_tiny_patch4_32",
        encoder_overrides=dict(image_size=16, patch_size=4, hidden_dim=32, num_layers=1,
                               num_heads=2),
        decoder_hidden_dim=32, decoder_num_layers=1, decoder_num_heads=2, projection_dim=16,
        seed=0,
    )
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    images = np.random.RandomState(0).rand(16, 16, 16, 3).astype("float32")
    model.fit(images, batch_size=16, epochs=1, verbose=0)
seen["devices"] = setup.num_replicas
print("FACTS " + json.dumps(seen))
"""


@pytest.mark.skipif(BACKEND != "jax", reason="JAX data parallelism")
def test_jax_loss_sees_the_global_batch(run_python):
    result = run_python(["-c", _JAX], XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.split("FACTS ", 1)[1])
    assert facts == {"student_rows": 16, "gather": False, "devices": 2}
