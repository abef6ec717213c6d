r"""`ccmim-visualize`: draws masks, reconstructions and importance maps of
a pretrainer as a PNG.

Rows are images; labelled columns: image, masked input (masked patches
grey), reconstruction (visible patches pasted back) and, for masking with
scores, the importance heat map.

    ccmim-visualize --workdir=runs/demo --output=runs/demo/recon.png

The images come from --split: by default `test`, or the held-out
`train[80%:]` of a dataset without one (an image folder). From a checkout,
`python evaluate/visualize.py` is the same program.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from keras_ccmim.cli import console, evaluation_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Pretraining workdir (pretrainer.keras).")
flags.DEFINE_boolean("random_init", False, "Draw a randomly initialised pretrainer.")
flags.DEFINE_string("preset", "vit_tiny_patch4_32", "Preset of --random_init.")
for _name in ("image_size", "patch_size", "hidden_dim", "num_layers", "num_heads"):
    flags.DEFINE_integer(_name, None, f"{_name} of --random_init; default: the preset's.")
flags.DEFINE_string("masking", "importance_sampling", "Masking of --random_init.")
flags.DEFINE_integer("seed", 0, "Seed of --random_init and of the masks.")
flags.DEFINE_string("dataset", "synthetic_objects", "synthetic_objects, folder:/path or TFDS.")
flags.DEFINE_string("data_dir", None, "Folder of prepared TFDS datasets.")
flags.DEFINE_string("split", None, "Split the images come from; default 'test', or the "
                    "held-out 'train[80%:]' for a dataset without one (an image folder).")
flags.DEFINE_integer("num_images", 8, "Images (rows) in the picture.")
flags.DEFINE_integer("scale", None, "Upscaling factor; default: at least 96 px per image.")
flags.DEFINE_string("output", None, "Output PNG path (required).")


def main(argv: Sequence[str]) -> int:
    try:
        evaluation_flags.check_no_arguments(argv)
        if not FLAGS.output:
            raise ValueError("Pass --output=PATH.png.")
        evaluation_flags.check_output_path(FLAGS.output)
        evaluation_flags.encoder_source(
            random_init_flags=evaluation_flags.RANDOM_INIT_FLAGS + ("masking",))
        if FLAGS.num_images < 1:
            raise ValueError(f"--num_images must be >= 1, got {FLAGS.num_images}.")
        from keras_ccmim.evaluation.held_out import choose_eval_split

        with console.run_messages_to_stdout():
            split = choose_eval_split(FLAGS.dataset, FLAGS.split, data_dir=FLAGS.data_dir)
        import keras

        from keras_ccmim import data, evaluation

        if FLAGS.workdir:
            model = evaluation.load_pretrainer(FLAGS.workdir)
        else:
            sizes = {n: FLAGS[n].value for n in ("image_size", "patch_size", "hidden_dim",
                                                 "num_layers", "num_heads")}
            model = evaluation.random_pretrainer(
                FLAGS.preset, seed=FLAGS.seed, encoder_overrides=sizes, masking=FLAGS.masking
            )
        keras.utils.set_random_seed(FLAGS.seed)
        dataset = data.make_dataset(
            FLAGS.dataset,
            split=split,
            batch_size=FLAGS.num_images,
            image_size=model.encoder.image_size[0],
            data_dir=FLAGS.data_dir,
            training=False,
        )
        images, _ = next(iter(dataset))
        picture = evaluation.reconstruction_grid(
            model, images.numpy(), FLAGS.output, scale=FLAGS.scale
        )
    except (ValueError, OSError) as error:
        return evaluation_flags.report_error(error)
    print(f"Wrote {FLAGS.output} ({picture.shape[1]}x{picture.shape[0]} px).")
    return 0


def run() -> None:
    """The console script `ccmim-visualize`."""
    evaluation_flags.run_program(main, __doc__)
