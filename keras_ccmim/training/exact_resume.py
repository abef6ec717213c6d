"""The state an exact resume needs besides the weights and the optimizer:
the model's random state (its `SeedGenerator`s, which Keras does not save)
and the data position (the training batches from any global step).

`TrainingCheckpoint` (`checkpoints.py`) records the seed states with every
checkpoint and puts them back on restore; `fit_resumable` feeds each `fit`
call from the batch its first step trains on.
"""

import contextlib
import functools

import numpy as np
from keras import ops


def seed_states(model):
    """The state variables of the model's `SeedGenerator`s, in model order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


@contextlib.contextmanager
def fixed_seeds(model, seed):
    """Within the block the model's `SeedGenerator`s start from states
    derived from `seed` alone; on leaving, their states are put back as they
    were, so a training run goes on drawing what it would have drawn."""
    states = seed_states(model)
    saved = [ops.convert_to_numpy(v) for v in states]
    try:
        for index, variable in enumerate(states):
            variable.assign(
                ops.convert_to_tensor(np.array([seed, index], "int64"), dtype=variable.dtype)
            )
        yield
    finally:
        for variable, value in zip(states, saved):
            variable.assign(value)


def training_batches(config, distribution, processes):
    """`dataset_at(step)`: the training batches of a `PretrainConfig`'s run
    from global step `step` on, so a resumed run reads exactly the batches
    the killed run would have read next."""
    from keras_ccmim import data

    dataset = functools.partial(
        data.make_dataset,
        config.dataset,
        split=config.split,
        batch_size=config.batch_size,
        image_size=config.image_size,
        data_dir=config.data_dir,
        training=True,
        seed=config.seed,
        repeat=True,
        num_images=config.num_images,
        max_pixels=config.max_pixels,
        # Several processes: each feeds its own share of every global batch.
        shard=distribution.shard if processes > 1 else None,
    )

    def dataset_at(step):
        return dataset(start_batch=step)

    return dataset_at
