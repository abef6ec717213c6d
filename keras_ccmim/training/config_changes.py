"""What a rerun on a checkpointed workdir may change: the fields that do not
change what is trained, and the comparison of a saved config with a new one."""

from keras_ccmim.models.presets import ALIASES as PRESET_ALIASES

# freely: they do not change what is trained (where the run's files and the
# prepared data are, how it is distributed and compiled, what it prints and
# how often it checkpoints or logs). Every other field (model, masking,
# loss, data, schedule length, batch size, optimisation, seed, and
# lift_images, the fixed batch the recorded masking metrics are measured
# on) changes the run: the rerun is refused unless allow_config_change.
RESUMABLE_CHANGES = (
    "data_dir",
    "workdir",
    "distribution",
    "coordinator_address",
    "num_processes",
    "process_id",
    "jit_compile",
    "verbose",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "tensorboard_every_steps",
    "check_every_steps",
    "fresh",
    "resume_from_step",
    "allow_config_change",
)
# The optimisation knobs the NaN advice turns (`pretrain.nan_advice`): a
# rerun with resume_from_step set, a deliberate restart from an earlier
# checkpoint, may change them too.
RESTART_CHANGES = ("blr", "warmup_epochs", "weight_decay", "mixed_precision")


def _comparable(name, value):
    """`value` as compared across reruns: lists and tuples (a list read back
    from config.json, a tuple passed in Python) by their items, a preset
    alias as the preset it names."""
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(name, item) for item in value)
    if name == "preset" and isinstance(value, str):
        return PRESET_ALIASES.get(value, value)
    return value


def _shown(value):
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def config_changes(saved, current):
    """The changes from the `saved` config of a checkpointed run to the
    `current` one (both resolved) that change what the run trains: `(field,
    old, new)` for each field outside `RESUMABLE_CHANGES` (and, when
    `current.resume_from_step` is set, outside `RESTART_CHANGES`) whose
    values differ, in field order. Lists and tuples compare by their items."""
    allowed = set(RESUMABLE_CHANGES)
    if current.resume_from_step is not None:
        allowed.update(RESTART_CHANGES)
    return [
        (name, old, new)
        for name, old, new in all_config_changes(saved, current)
        if name not in allowed
    ]


def all_config_changes(saved, current):
    """`(field, old, new)` for every field whose value differs between two
    configs, in field order (lists and tuples compare by their items)."""
    saved, current = saved.to_dict(), current.to_dict()
    return [
        (name, saved.get(name), value)
        for name, value in current.items()
        if _comparable(name, saved.get(name)) != _comparable(name, value)
    ]


def describe_changes(changes):
    """`"epochs: 2 -> 3, masking: 'random' -> 'importance'"` for `(field, old,
    new)` triples."""
    return ", ".join(
        f"{name}: {_shown(_comparable(name, old))} -> {_shown(_comparable(name, new))}"
        for name, old, new in changes
    )
