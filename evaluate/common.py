"""Flags and helpers shared by the evaluation binaries (thin over the library)."""

import json
import os
import sys
import types

from absl import flags

FLAGS = flags.FLAGS
# Whether --saved_model names an input encoder (k-NN, probe) in this binary.
_SAVED_MODEL_INPUT = []


def define_encoder_flags(saved_model=False):
    """--workdir | --random_init (+ model size flags) [| --saved_model]."""
    flags.DEFINE_string(
        "workdir", None, "Pretraining workdir (encoder_config.json + encoder.weights.h5)."
    )
    flags.DEFINE_boolean(
        "random_init", False, "Evaluate a randomly initialised encoder (the baseline)."
    )
    if saved_model:
        _SAVED_MODEL_INPUT.append(True)
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


def encoder_source():
    """The flag naming the encoder: exactly one of them must be set."""
    options = {"workdir": FLAGS.workdir, "random_init": FLAGS.random_init}
    if _SAVED_MODEL_INPUT:
        options["saved_model"] = FLAGS.saved_model
    chosen = [name for name, value in options.items() if value]
    if len(chosen) != 1:
        names = ", ".join(f"--{name}" for name in options)
        raise ValueError(f"Pass exactly one of {names}; got {len(chosen)}.")
    return chosen[0]


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


def describe_source():
    if FLAGS.workdir:
        return {"workdir": os.path.abspath(FLAGS.workdir)}
    if _SAVED_MODEL_INPUT and FLAGS.saved_model:
        return {"saved_model": os.path.abspath(FLAGS.saved_model)}
    return {"random_init": True, "preset": FLAGS.preset, "seed": FLAGS.seed}


def extract_train_and_eval_features(feature):
    """Features and labels of --train_split and --eval_split, from the encoder
    the flags select (a workdir, a random init or a SavedModel).

    Returns:
        A namespace with `train_x`, `train_y`, `eval_x`, `eval_y` (numpy),
        `image_size` and `num_classes` (from the dataset description, None
        when unknown).
    """
    from keras_ccmim import data, evaluation

    source = encoder_source()
    if source == "saved_model":
        import tensorflow as tf

        model = tf.saved_model.load(FLAGS.saved_model)
        image_size = saved_model_image_size(model)

        def extract(dataset):
            return evaluation.extract_saved_model_features(model, dataset, feature)

    else:
        encoder = load_encoder()
        image_size = encoder.image_size[0]

        def extract(dataset):
            return evaluation.extract_features(encoder, dataset, feature)

    arrays = []
    for split, num_images in (
        (FLAGS.train_split, FLAGS.train_num_images),
        (FLAGS.eval_split, FLAGS.eval_num_images),
    ):
        info = data.describe_dataset(
            FLAGS.dataset,
            split=split,
            data_dir=FLAGS.data_dir,
            num_images=num_images,
            image_size=image_size,
        )
        dataset = data.make_dataset(
            FLAGS.dataset,
            split=split,
            batch_size=evaluation.whole_batch_size(info.num_images, FLAGS.batch_size),
            image_size=image_size,
            data_dir=FLAGS.data_dir,
            training=False,
            num_images=num_images,
        )
        arrays.extend(extract(dataset))
    train_x, train_y, eval_x, eval_y = arrays
    return types.SimpleNamespace(
        train_x=train_x,
        train_y=train_y,
        eval_x=eval_x,
        eval_y=eval_y,
        image_size=image_size,
        num_classes=info.num_classes,
    )


def saved_model_image_size(saved_model):
    """The image size a SavedModel's `serve` endpoint takes."""
    spec = saved_model.serve.concrete_functions[0].structured_input_signature[0][0]
    return int(spec.shape[1])


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
    print(f"Error: {error}", file=sys.stderr)
    return 2
