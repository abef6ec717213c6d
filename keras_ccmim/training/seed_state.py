"""The state of a model's `SeedGenerator`s: read, and fixed for a block."""

import contextlib

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
