"""The folder of a resumable fine-tuning run: its file names, the check that
a rerun is the same run (or `fresh=True`, which moves the earlier files to
`previous-<n>/`), its history file and the saved model.

    finetune_config.json   what the run trains (the recipe, the data, the
                           encoder's config and a digest of its weights)
    checkpoints/           resumable checkpoints (see TrainingCheckpoint)
    history.jsonl          one line per epoch
    classifier.keras       the fine-tuned model (Keras format)
    results.json           the run's results

`keras_ccmim.evaluation.segment` keeps its runs the same way, under its own
file names.
"""

import hashlib
import json
import logging
import os

import numpy as np

from keras_ccmim.file_io import move_aside, write_json_atomically
from keras_ccmim.training.workdir import describe_changes

logger = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
HISTORY_FILE = "history.jsonl"
CLASSIFIER_FILE = "classifier.keras"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
# What a run writes in its output folder; `fresh=True` moves these aside.
RUN_OUTPUTS = (CHECKPOINT_DIR, CONFIG_FILE, HISTORY_FILE, CLASSIFIER_FILE, RESULTS_FILE)
# Arguments that may change between the calls on one run: they change where
# the data are read from or how often the host looks, not what is trained.
RESUMABLE_CHANGES = (
    "data_dir", "verbose", "checkpoint_every_steps", "keep_checkpoints", "check_every_steps",
)


class FinetuneConfigError(ValueError):
    """An output folder that holds another fine-tuning run, or one that
    cannot be checked; the message names the differences and the fix."""


def read_history(path):
    """`{epoch: record}` from a history file, the last record of each epoch
    (a resumed run appends the epochs it ran again); cut lines are skipped."""
    records = {}
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                records[record["epoch"]] = record
    return records



def encoder_digest(encoder):
    """A sha256 (hex, 16 digits) of an encoder's weights, shapes and order
    (its `SeedGenerator` states left out): two encoders with the same digest
    start the same fine-tuning."""
    digest = hashlib.sha256()
    for weight in encoder.get_weights():
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.dtype}{weight.shape}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]


def flat_changes(saved, config):
    """`(field, old, new)` for each field (one level of dicts flattened to
    `outer.inner`) outside `RESUMABLE_CHANGES` that differs."""

    def flat(mapping):
        items = {}
        for key, value in mapping.items():
            if isinstance(value, dict):
                items.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                items[key] = value
        return items

    old, new = flat(saved), flat(config)
    names = list(new) + [name for name in old if name not in new]
    return [
        (name, old.get(name), new.get(name))
        for name in names
        if name not in RESUMABLE_CHANGES and old.get(name) != new.get(name)
    ]


_FRESH_FIX = (
    "pass --fresh (fresh=True) to start over (the earlier files are moved to "
    "previous-<n>/, nothing is deleted), or pass a new --output_dir (output_dir)"
)


def prepare_output_dir(output_dir, config, fresh, config_file=CONFIG_FILE,
                        outputs=RUN_OUTPUTS, what="fine-tuning", added_fields=None):
    """Creates the run's folder and writes its config. A folder that holds
    an earlier run's outputs must hold the same run (the same `config` but
    for `RESUMABLE_CHANGES`), which then resumes; with `fresh` those outputs
    are moved aside first. `config_file`, `outputs` and `what` name the
    files of another kind of run (segmentation) and the run in messages.
    `added_fields` maps fields added to the config after earlier versions
    wrote theirs to the value those runs had: a saved config without one
    is read as having that value."""
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FinetuneConfigError(
            f"output_dir {output_dir!r} is a file; pass a folder (created if missing)."
        )
    config_path = os.path.join(output_dir, config_file)
    if fresh:
        aside = move_aside(output_dir, outputs)
        if aside is not None:
            logger.info(
                "Starting afresh (fresh=True): the earlier run's outputs are kept in %s.", aside
            )
    else:
        present = [n for n in outputs if os.path.lexists(os.path.join(output_dir, n))]
        if present and not os.path.exists(config_path):
            raise FinetuneConfigError(
                f"output_dir {output_dir!r} holds {', '.join(present)} of an earlier "
                f"{what} but no {config_file}, so that run cannot be checked against "
                f"this configuration. Restore the file, or {_FRESH_FIX}."
            )
        if present:
            try:
                with open(config_path) as f:
                    saved = json.load(f)
                if not isinstance(saved, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as error:
                raise FinetuneConfigError(
                    f"{config_path} cannot be read ({error}), so the run in {output_dir!r} "
                    f"cannot be checked against this configuration. Restore the file, or "
                    f"{_FRESH_FIX}."
                ) from error
            changes = flat_changes(dict(added_fields or {}, **saved), config)
            if changes:
                raise FinetuneConfigError(
                    f"output_dir {output_dir!r} holds a {what} run with a different "
                    f"configuration: {describe_changes(changes)}. Rerun with the same "
                    f"settings to resume it, or {_FRESH_FIX}."
                )
    checkpoint_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    os.makedirs(checkpoint_dir, exist_ok=True)
    write_json_atomically(config_path, config)
    return output_dir, checkpoint_dir


def save_classifier(model, path):
    """Saves `model` in the Keras format at `path` (written beside it, then
    moved into place, so a kill leaves the old file or the new one)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path

