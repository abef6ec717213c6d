"""The state an exact resume needs besides the weights and the optimizer:
the model's random state (its `SeedGenerator`s, which Keras does not save)
and the data position (the training batches from any global step).

`TrainingCheckpoint` (`checkpoints.py`) records the seed states with every
checkpoint and puts them back on restore; `fit_resumable` feeds each `fit`
call from the batch its first step trains on.
"""

import contextlib
import functools

import keras
import numpy as np
from keras import ops


def seed_states(model):
    """The state variables of the model's `SeedGenerator`s, in model order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def seed_state_owners(model):
    """Where each of `seed_states(model)` lives, as the path of layer
    attributes from the model (e.g. `"encoder/blocks/3/drop_path"`).

    The paths name a state whatever order the model creates them in, so a
    checkpoint's states go back to the layers that drew them even when
    another version of the model assigns its layers in another order (the
    variables' own paths are numbered in creation order, which is why they
    are not used)."""
    owners, seen = {}, set()

    def visit(value, path):
        if isinstance(value, keras.random.SeedGenerator):
            owners.setdefault(id(value.state), "/".join(path[:-1]) or "model")
        elif isinstance(value, keras.layers.Layer) and id(value) not in seen:
            seen.add(id(value))
            children = dict(vars(value))
            # On torch, layers are `torch.nn.Module`s that keep their sublayers in `_modules`.
            children.update(getattr(value, "_modules", None) or {})
            public = sorted((n, c) for n, c in children.items() if not n.startswith("_"))
            for name, child in public:
                visit(child, path + [name])
            for index, child in enumerate(getattr(value, "_layers", ())):  # unnamed sublayers
                visit(child, path + [f"layer_{index}"])
        elif isinstance(value, (list, tuple)):
            for index, child in enumerate(value):
                visit(child, path + [str(index)])

    visit(model, [])
    return [owners.get(id(v), v.path) for v in seed_states(model)]


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
