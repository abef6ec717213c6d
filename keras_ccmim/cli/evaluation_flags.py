"""What the evaluation programs share: their common flags (the encoder, the
data, the output, the fine-tuning run), the checks those flags get before
any work, the library arguments they make, and the programs' output (the
results printed and written to --output, one `Error:` line).

The flags are defined by the `define_*` functions, which each program calls
once at import; the logic the programs run lives in `keras_ccmim.evaluation`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from absl import app, flags

from keras_ccmim.cli import console

if TYPE_CHECKING:
    from keras_ccmim.models.vit_encoder import ViTEncoder

FLAGS = flags.FLAGS
# Flags that describe the --random_init encoder; an encoder read from a
# workdir or a SavedModel has its own architecture.
RANDOM_INIT_FLAGS = ("preset", "image_size", "patch_size", "hidden_dim", "num_layers", "num_heads")
# The fine-tuning run's float flags (`define_fine_tuning_flags`) and their
# ranges (see `check_float_flags`).
FINE_TUNING_RANGES = {
    "warmup_epochs": "[0, epochs)",
    "blr": "(0, inf)",
    "weight_decay": "[0, inf)",
    "layer_decay": "(0, 1]",
    "drop_path": "[0, 1)",
}


def define_encoder_flags(saved_model: bool = False) -> None:
    """--workdir | --random_init (+ model size flags) [| --saved_model]."""
    flags.DEFINE_string(
        "workdir", None,
        "A pretraining workdir (its encoder/ preset) or an encoder preset: a folder "
        "(config.json + model.weights.h5 + metadata.json) or a kaggle:// or hf:// handle.",
    )
    flags.DEFINE_boolean(
        "random_init", False, "Evaluate a randomly initialised encoder (the baseline)."
    )
    if saved_model:
        flags.DEFINE_string(
            "saved_model", None, "Encoder SavedModel written by evaluate/export.py."
        )
    flags.DEFINE_string("preset", "vit_tiny_patch4_32", "Preset of --random_init.")
    for name in ("image_size", "patch_size", "hidden_dim", "num_layers", "num_heads"):
        flags.DEFINE_integer(name, None, f"{name} of --random_init; default: the preset's.")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and training.")


def define_data_flags(batch_size: int = 256) -> None:
    """--dataset, --data_dir, the two splits, their sizes and --batch_size."""
    flags.DEFINE_string(
        "dataset", "synthetic_objects", "synthetic_objects, folder:/path or a TFDS name."
    )
    flags.DEFINE_string("data_dir", None, "Folder of prepared TFDS datasets.")
    flags.DEFINE_string(
        "train_split", None,
        "Training split (TFDS slicing allowed); default 'train', or 'train[:80%]' beside "
        "a held-out --eval_split.",
    )
    flags.DEFINE_string(
        "eval_split", None,
        "Evaluation split, e.g. 'train[45000:]'; default 'test', or the held-out "
        "'train[80%:]' for a dataset without a 'test' split (an image folder).",
    )
    flags.DEFINE_integer("train_num_images", None, "num_images of the training split.")
    flags.DEFINE_integer("eval_num_images", None, "num_images of the evaluation split.")
    flags.DEFINE_integer("batch_size", batch_size, "Batch size.")


def define_output_flag() -> None:
    flags.DEFINE_string("output", None, "Write the results as JSON to this file.")


def define_fine_tuning_flags(
    *,
    epochs: int,
    warmup_epochs: float,
    blr: float,
    lr_batch_size: int,
    verbose: str,
    outputs: str,
) -> None:
    """The flags of a fine-tuning run (`keras_ccmim.evaluation.finetune_run`):
    its length and optimiser, with the program's defaults, and its folder
    (`outputs`: what the folder holds besides checkpoints, for the help)."""
    flags.DEFINE_integer("epochs", epochs, "Fine-tuning epochs.")
    flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch; default one pass.")
    flags.DEFINE_float("warmup_epochs", warmup_epochs, "Linear warmup epochs.")
    flags.DEFINE_float("blr", blr, f"Base learning rate: lr = blr * batch_size / "
                       f"{lr_batch_size}.")
    flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay.")
    flags.DEFINE_float("layer_decay", 0.65, "Layer-wise learning-rate decay.")
    flags.DEFINE_float("drop_path", 0.1, "Stochastic depth rate.")
    flags.DEFINE_enum("verbose", verbose, ["0", "1", "2"],
                      "Keras fit verbosity (1: progress bar).")
    flags.DEFINE_string(
        "output_dir", None,
        f"Folder of the run: checkpoints, {outputs}; rerunning the same command resumes "
        "it. Without it nothing is checkpointed or saved but --output.",
    )
    flags.DEFINE_boolean(
        "fresh", False,
        "Start over in an --output_dir that holds an earlier run; its files are moved to "
        "<output_dir>/previous-<n>/, never deleted.",
    )
    flags.DEFINE_integer(
        "checkpoint_every_steps", 0,
        "Checkpoint every this many steps as well as at epoch ends (0: epoch ends only).",
    )
    flags.DEFINE_integer("keep_checkpoints", 2, "Checkpoints kept.")
    flags.DEFINE_integer(
        "check_every_steps", 20,
        "Steps between two reads of the loss by the host (NaN guard); the steps between run "
        "without waiting for the device.",
    )


def check_no_arguments(argv: Sequence[str]) -> None:
    """Refuses words on the command line that are not flags."""
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")


def encoder_source(
    random_init_flags: Sequence[str] = RANDOM_INIT_FLAGS, saved_model_input: bool = False
) -> str:
    """The flag naming the encoder: exactly one of them must be set, and
    `random_init_flags` only with --random_init. With `saved_model_input`
    (a program that called `define_encoder_flags(saved_model=True)`) the
    encoder may come from --saved_model, which must be a SavedModel folder."""
    options = {"workdir": FLAGS.workdir, "random_init": FLAGS.random_init}
    if saved_model_input:
        options["saved_model"] = FLAGS.saved_model
    chosen = [name for name, value in options.items() if value]
    if len(chosen) != 1:
        names = ", ".join(f"--{name}" for name in options)
        raise ValueError(f"Pass exactly one of {names}; got {len(chosen)}.")
    source = chosen[0]
    given = [name for name in random_init_flags if FLAGS[name].present]
    if source != "random_init" and given:
        listed = ", ".join(f"--{name}" for name in given)
        raise ValueError(
            f"{listed} {'sets' if len(given) == 1 else 'set'} the architecture of a "
            "--random_init encoder, but the encoder "
            f"comes from --{source}, whose architecture is fixed (a workdir keeps the "
            f"sizes it was trained with). Drop {listed}, or use --random_init instead of "
            f"--{source}."
        )
    if source == "saved_model":
        from keras_ccmim.evaluation.saved_model_input import check_saved_model_input

        check_saved_model_input(FLAGS.saved_model)
    return source


def _interval_text(low, high, low_open, high_open):
    if high == math.inf and low_open:
        return f"> {low:g}"
    if high == math.inf:
        return f">= {low:g}"
    high_text = high if isinstance(high, str) else f"{high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high_text}{')' if high_open else ']'}"


def check_float_flags(ranges: Mapping[str, str]) -> None:
    """Every float flag named in `ranges` is finite and in its interval.

    Args:
        ranges: `{flag: "(0, inf)" | "[0, 1)" | "[0, epochs)" | ...}`: the
            bracket says whether the bound is allowed; a bound may name an
            int flag.

    Raises:
        ValueError: naming the flag, its allowed range and the value.
    """
    for name, interval in ranges.items():
        low_text, high_text = (part.strip() for part in interval[1:-1].split(","))
        low_open, high_open = interval[0] == "(", interval[-1] == ")"
        low = float(low_text)
        try:
            high = float(high_text)
        except ValueError:  # the name of a flag
            high = None
        bound = high if high is not None else FLAGS[high_text].value
        value = FLAGS[name].value
        inside = (
            isinstance(value, (int, float))
            and math.isfinite(value)
            and (value > low if low_open else value >= low)
            and (value < bound if high_open else value <= bound)
        )
        if not inside:
            shown = _interval_text(low, high if high is not None else high_text, low_open,
                                   high_open)
            where = "" if high is not None else f" (--{high_text}={bound})"
            raise ValueError(f"--{name} must be a finite number {shown}{where}, got {value!r}.")


def check_not_in_a_running_workdir(path: str, what: str) -> None:
    """Refuses `path` when it is, or lies inside, the workdir of a running
    pretraining (one whose run.lock is held): the programs read a workdir
    without its lock, but never write into a running one."""
    from keras_ccmim.training.workdir import LOCK_FILE, workdir_in_use

    pid = workdir_in_use(path)
    if pid is not None:
        raise ValueError(
            f"{what} {path!r} is inside the workdir of a running pretraining (PID {pid} "
            f"holds its {LOCK_FILE}); the evaluation programs never write into a running "
            "run's folder. Pass a path outside that workdir, or wait for the run to end."
        )


def check_output_path(path: str | None, what: str = "--output") -> None:
    """`path` can be written: not a folder, its nearest existing parent is a
    writable folder, and it is not inside a running pretraining's workdir.
    Checked before any work."""
    if not path:
        return
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder; pass a file path.")
    from keras_ccmim.file_io import check_writable_location

    check_writable_location(os.path.dirname(os.path.abspath(path)), f"{what} {path!r}", "a path")
    check_not_in_a_running_workdir(path, what)


def check_output_dir(path: str | None, what: str = "--output_dir") -> None:
    """A run's folder: not a file, and not inside a running pretraining's
    workdir."""
    if not path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a file; pass a folder (created if missing).")
    check_not_in_a_running_workdir(path, what)


def choose_splits(segmentation: bool = False) -> tuple[str, str]:
    """`(train_split, eval_split)` from --train_split and --eval_split, a
    held-out slice of `train` for those unset where --dataset has no `test`
    split (one line says so): see `keras_ccmim.evaluation.held_out`. The
    splits are checked here, before the encoder is loaded."""
    from keras_ccmim.evaluation.held_out import choose_splits

    with console.run_messages_to_stdout():
        return choose_splits(FLAGS.dataset, FLAGS.train_split, FLAGS.eval_split,
                             data_dir=FLAGS.data_dir, segmentation=segmentation)


def load_encoder() -> ViTEncoder:
    """The encoder selected by the flags (workdir or random init)."""
    from keras_ccmim import evaluation

    if FLAGS.workdir:
        return evaluation.load_encoder(FLAGS.workdir)
    return evaluation.random_encoder(
        FLAGS.preset,
        seed=FLAGS.seed,
        image_size=FLAGS.image_size,
        patch_size=FLAGS.patch_size,
        hidden_dim=FLAGS.hidden_dim,
        num_layers=FLAGS.num_layers,
        num_heads=FLAGS.num_heads,
    )


def fine_tuning_arguments(train_split: str, eval_split: str) -> dict[str, Any]:
    """The keyword arguments `evaluation.finetune` and
    `evaluation.finetune_segmenter` take from the same flags: data,
    schedule, optimiser, seed, output and checkpoints."""
    return dict(
        train_split=train_split,
        eval_split=eval_split,
        data_dir=FLAGS.data_dir,
        train_num_images=FLAGS.train_num_images,
        eval_num_images=FLAGS.eval_num_images,
        epochs=FLAGS.epochs,
        steps_per_epoch=FLAGS.steps_per_epoch,
        warmup_epochs=FLAGS.warmup_epochs,
        batch_size=FLAGS.batch_size,
        base_learning_rate=FLAGS.blr,
        weight_decay=FLAGS.weight_decay,
        layer_decay=FLAGS.layer_decay,
        drop_path_rate=FLAGS.drop_path,
        seed=FLAGS.seed,
        verbose=int(FLAGS.verbose),
        output_dir=FLAGS.output_dir,
        fresh=FLAGS.fresh,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        keep_checkpoints=FLAGS.keep_checkpoints,
        check_every_steps=FLAGS.check_every_steps,
    )


# The library's names of the fine-tuning arguments whose flags are named
# otherwise, for its messages.
FLAG_OF_ARGUMENT = {"base_learning_rate": "blr", "drop_path_rate": "drop_path"}


def with_flag_names(
    error: Exception, flag_of_argument: Mapping[str, str] = FLAG_OF_ARGUMENT
) -> Exception:
    """A refused rerun's error (`FinetuneConfigError`, which lists the
    changed fields by their library names) with the flags of the fields
    whose flags are named otherwise (`flag_of_argument`); any other error
    as it is."""
    from keras_ccmim.evaluation.finetune_run import FinetuneConfigError

    if not isinstance(error, FinetuneConfigError):
        return error
    text = str(error)
    named = [f"{arg} is --{flag}" for arg, flag in flag_of_argument.items()
             if re.search(rf"(?<![\w.]){arg}:", text)]
    if re.search(r"\bencoder(_weights|\.\w+):", text):
        named.append("encoder_weights and encoder.* are the encoder's (--workdir, or "
                     "--random_init with its --seed and sizes)")
    if not named:
        return error
    return ValueError(f"{text} (Flags: {', '.join(named)}.)")


def describe_source(saved_model_input: bool = False) -> dict[str, Any]:
    """Where the encoder came from, for the results (`saved_model_input` as
    in `encoder_source`)."""
    if FLAGS.workdir:
        handle = FLAGS.workdir.startswith(("kaggle://", "hf://"))
        return {"workdir": FLAGS.workdir if handle else os.path.abspath(FLAGS.workdir)}
    if saved_model_input and FLAGS.saved_model:
        return {"saved_model": os.path.abspath(FLAGS.saved_model)}
    return {"random_init": True, "preset": FLAGS.preset, "seed": FLAGS.seed}


def extract_train_and_eval_features(
    feature: str, train_split: str, eval_split: str
) -> types.SimpleNamespace:
    """Features and labels of the two splits, from the encoder the flags
    select (a workdir, a random init or a SavedModel): see
    `keras_ccmim.evaluation.train_eval_features.train_and_eval_features`."""
    from keras_ccmim.evaluation.saved_model_input import load_saved_model
    from keras_ccmim.evaluation.train_eval_features import train_and_eval_features

    if encoder_source(saved_model_input=True) == "saved_model":
        encoder = {"saved_model": load_saved_model(FLAGS.saved_model)}
    else:
        encoder = {"encoder": load_encoder()}
    return train_and_eval_features(
        FLAGS.dataset,
        **encoder,
        feature=feature,
        train_split=train_split,
        eval_split=eval_split,
        train_num_images=FLAGS.train_num_images,
        eval_num_images=FLAGS.eval_num_images,
        data_dir=FLAGS.data_dir,
        batch_size=FLAGS.batch_size,
    )


def write_results(results: Mapping[str, Any]) -> None:
    """Prints the results and writes them to --output (JSON) when set."""
    text = json.dumps(results, indent=1, sort_keys=True)
    print(text)
    if FLAGS.output:
        folder = os.path.dirname(os.path.abspath(FLAGS.output))
        os.makedirs(folder, exist_ok=True)
        with open(FLAGS.output, "w") as f:
            f.write(text + "\n")


def report_error(error: BaseException, code: int = 2) -> int:
    """Prints `error` as one `Error:` line (an `OSError` with its path and
    the fix) and returns `code`, the exit status."""
    if isinstance(error, OSError):
        from keras_ccmim.file_io import describe_os_error

        error = describe_os_error(error)
    return console.fail(error, code)


def run_program(main: Callable[[list[str]], int | None], doc: str | None) -> None:
    """Runs `main` as absl does (`app.run`), its flags parsed by
    `console.parse_flags`, with the program's `doc` as the text of --help
    (absl shows the docstring of `__main__`: a thin script's or a console
    script's, which say nothing)."""
    sys.modules["__main__"].__doc__ = doc
    app.run(main, flags_parser=console.parse_flags)
