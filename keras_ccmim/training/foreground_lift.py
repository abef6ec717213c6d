"""`ForegroundLift`: how much a model's masks prefer the object on a fixed
batch, added to the epoch logs; and the seeded predictions it measures."""

import keras
import numpy as np
from keras import ops

from keras_ccmim.layers.patching import patchify
from keras_ccmim.masking_metrics import masking_metrics
from keras_ccmim.training.seed_state import fixed_seeds

class ForegroundLift(keras.callbacks.Callback):
    """Logs how much the model's masks prefer the object, on a fixed batch.

    At each epoch end runs `seeded_predict_outputs(model, images, seed)`
    (the compiled `model(images, training=False)`; masks are still sampled,
    but from fixed seeds, so the same weights give the same figures and the
    training's random draws are left as they were) and adds the
    three `keras_ccmim.masking_metrics.MASKING_METRICS` to the epoch `logs`:
    `foreground_lift` (masked foreground share / foreground share; random
    masking gives about 1), `foreground_lift_max` (the lift of masking the
    foreground first, its ceiling on these images) and `mask_selectivity`
    (0 random, 1 foreground first). With importance masking it also adds
    `score_selectivity`, the selectivity of the deterministic top-K of the
    importance scores: what the [CLS] attention has found, before sampling
    spends it. A patch is foreground when at least
    half of its pixels are. Put it before the callbacks that write `logs`
    (`MetricsCSV`, `TensorBoardScalars`).

    Args:
        images: `[B, S, S, 3]` float32, as the model takes them.
        foreground: `[B, S, S]` 0/1 masks of the same images.
        patch_size: the model's patch size.
        seed: int, seed of the measurement's mask sampling.
    """

    def __init__(self, images, foreground, patch_size, seed=0):
        super().__init__()
        self.seed = int(seed)
        self.images = np.asarray(images, dtype="float32")
        self.foreground_patches = foreground_patches(foreground, patch_size)
        self.values = None

    @property
    def value(self):
        """The latest `foreground_lift` (None before the first epoch end)."""
        return None if self.values is None else self.values["foreground_lift"]

    def compute(self, model):
        outputs = seeded_predict_outputs(model, self.images, self.seed)
        values = self.metrics_of(outputs["mask"])
        if "scores" in outputs:
            values["score_selectivity"] = self.metrics_of(
                top_k_mask(outputs["scores"], outputs["mask"])
            )["mask_selectivity"]
        return values

    def metrics_of(self, mask):
        """The three metrics of a `[B, N]` mask of these images (floats)."""
        return masking_metrics(mask, self.foreground_patches)

    def lift_of(self, mask):
        """The `foreground_lift` of a `[B, N]` mask of these images."""
        return self.metrics_of(mask)["foreground_lift"]

    def on_epoch_end(self, epoch, logs=None):
        self.values = self.compute(self.model)
        if logs is not None:
            logs.update(self.values)


def top_k_mask(scores, mask):
    """`[B, N]` 0/1 mask of the `K_i = sum_j mask[i, j]` highest scores of
    each row (numpy; ties broken towards the lower index)."""
    scores = np.asarray(scores)
    k = np.asarray(mask).sum(axis=-1).astype("int64")
    ranks = np.argsort(np.argsort(-scores, axis=-1, kind="stable"), axis=-1)
    return (ranks < k[:, None]).astype("float32")


def predict_outputs(model, images):
    """`model(images, training=False)` as one compiled batch, numpy outputs.

    `model.predict` rather than `predict_on_batch`: under `tf.distribute`
    the latter hands the whole batch to every replica. The masks are
    sampled from the model's `SeedGenerator`s, which this advances; see
    `seeded_predict_outputs` for a measurement that can be repeated.
    """
    return model.predict(images, batch_size=len(images), verbose=0)


def seeded_predict_outputs(model, images, seed=0):
    """`predict_outputs(model, images)` with the masks drawn from fixed seeds
    (see `fixed_seeds`): the same weights give the same outputs, whatever the
    training's `SeedGenerator` state, which it does not change."""
    with fixed_seeds(model, int(seed)):
        return predict_outputs(model, images)


def foreground_patches(foreground, patch_size):
    """`[B, S, S]` pixel masks -> `[B, N]` float32, 1 where >= half a patch is
    foreground."""
    foreground = np.asarray(foreground, dtype="float32")[..., None]
    fraction = ops.mean(patchify(foreground, patch_size), axis=-1)
    return np.asarray(ops.convert_to_numpy(fraction) >= 0.5, dtype="float32")
