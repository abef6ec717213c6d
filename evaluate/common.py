"""The evaluation binaries' shared flags: their definitions, their checks
(before any work), the library arguments they make, and the binaries' output
(the results printed and written to --output, one `Error:` line). The logic
they call lives in `keras_ccmim.evaluation`."""

import json
import math
import os
import sys

from absl import flags

FLAGS = flags.FLAGS
# Flags that describe the --random_init encoder; an encoder read from a
# workdir or a SavedModel has its own architecture.
RANDOM_INIT_FLAGS = ("preset", "image_size", "patch_size", "hidden_dim", "num_layers", "num_heads")


def define_encoder_flags(saved_model=False):
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


def define_data_flags(eval_split="test"):
    flags.DEFINE_string(
        "dataset", "synthetic_objects", "synthetic_objects, folder:/path or a TFDS name."
    )
    flags.DEFINE_string("data_dir", None, "Folder of prepared TFDS datasets.")
    flags.DEFINE_string("train_split", "train", "Training split (TFDS slicing allowed).")
    flags.DEFINE_string("eval_split", eval_split, "Evaluation split, e.g. 'train[45000:]'.")
    flags.DEFINE_integer("train_num_images", None, "num_images of the training split.")
    flags.DEFINE_integer("eval_num_images", None, "num_images of the evaluation split.")
    flags.DEFINE_integer("batch_size", 256, "Batch size.")


def define_output_flag():
    flags.DEFINE_string("output", None, "Write the results as JSON to this file.")


def encoder_source(random_init_flags=RANDOM_INIT_FLAGS, saved_model_input=False):
    """The flag naming the encoder: exactly one of them must be set, and
    `random_init_flags` only with --random_init. With `saved_model_input`
    (a binary that called `define_encoder_flags(saved_model=True)`) the
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


def check_float_flags(ranges):
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


def check_output_path(path, what="--output"):
    """`path` can be written: not a folder, and its nearest existing parent
    is a writable folder. Checked before any work."""
    if not path:
        return
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder; pass a file path.")
    from keras_ccmim.file_io import nearest_existing

    existing = nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(existing):
        raise ValueError(
            f"{what} {path!r} cannot be written: {existing!r} is a file, not a folder. "
            "Pass a path whose parents are folders."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what} {path!r} cannot be written: {existing!r} is read-only (its "
            "permissions or a read-only file system). Pass a path in a writable location."
        )


def load_encoder():
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


def fine_tuning_arguments():
    """The keyword arguments `evaluation.finetune` and `evaluation.finetune_segmenter`
    take from the same flags: data, schedule, optimiser, seed, output and
    checkpoints."""
    return dict(
        train_split=FLAGS.train_split,
        eval_split=FLAGS.eval_split,
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


def describe_source(saved_model_input=False):
    """Where the encoder came from, for the results (`saved_model_input` as
    in `encoder_source`)."""
    if FLAGS.workdir:
        handle = FLAGS.workdir.startswith(("kaggle://", "hf://"))
        return {"workdir": FLAGS.workdir if handle else os.path.abspath(FLAGS.workdir)}
    if saved_model_input and FLAGS.saved_model:
        return {"saved_model": os.path.abspath(FLAGS.saved_model)}
    return {"random_init": True, "preset": FLAGS.preset, "seed": FLAGS.seed}


def extract_train_and_eval_features(feature):
    """Features and labels of --train_split and --eval_split, from the encoder
    the flags select (a workdir, a random init or a SavedModel): see
    `keras_ccmim.evaluation.train_and_eval_features`."""
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
        train_split=FLAGS.train_split,
        eval_split=FLAGS.eval_split,
        train_num_images=FLAGS.train_num_images,
        eval_num_images=FLAGS.eval_num_images,
        data_dir=FLAGS.data_dir,
        batch_size=FLAGS.batch_size,
    )


def write_results(results):
    """Prints the results and writes them to --output (JSON) when set."""
    text = json.dumps(results, indent=1, sort_keys=True)
    print(text)
    if FLAGS.output:
        folder = os.path.dirname(os.path.abspath(FLAGS.output))
        os.makedirs(folder, exist_ok=True)
        with open(FLAGS.output, "w") as f:
            f.write(text + "\n")


def fail(error):
    """Prints `error` as one line (an `OSError` with its path and the fix)
    and returns the exit status."""
    if isinstance(error, OSError):
        from keras_ccmim.file_io import describe_os_error

        text = describe_os_error(error)
    else:
        text = " ".join(str(error).split())
    print(f"Error: {text}", file=sys.stderr)
    return 2
