r"""Pretrains a ViT with ccMIM (or MAE) and leaves a checkpoint, a picture and numbers.

The run's fields come from a recipe, `--config=<name or file>[:arg]`, and
`--config.<field>=value` overrides one (big_vision style); the run-level
flags say where the run lives and how it is driven. The default recipe,
`demo`, is the README's main job: a short ccMIM pretraining of ViT-T/4 on
3,072 images of the built-in `synthetic_objects` data (96 steps at batch 64):

    ccmim-pretrain --workdir=runs/demo
    ccmim-pretrain --config=cifar10_vit_tiny --workdir=runs/cifar10 \
        --config.data_dir=<folder holding the TFDS datasets>
    ccmim-pretrain --config=imagenet_vit_base_ccmim:runlocal --workdir=runs/smoke
    ccmim-pretrain --config=path/to/my_recipe.py --config.epochs=3 --workdir=runs/mine

(`python train/pretrain.py ...` from a checkout is the same program.)
Running the same command again after an interruption (even SIGKILL)
continues from the newest intact checkpoint in the workdir; a rerun whose
recipe would change what the checkpointed run trains is refused, naming each
change, unless --allow_config_change is given; --fresh starts over with the
earlier outputs moved to <workdir>/previous-<n>/. One run at a time holds a
workdir.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_ccmim import training  # noqa: E402
from keras_ccmim.cli import console  # noqa: E402
from keras_ccmim.data import describe_data_error  # noqa: E402
from keras_ccmim.file_io import describe_os_error  # noqa: E402
from keras_ccmim.training import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
DEFAULT_RECIPE = "demo"

# No default file here: config_flags would load it, with the command line's
# overrides, at import; `parse_flags` adds `--config=demo` when none is given.
config_flags.DEFINE_config_file(
    "config",
    None,
    "Recipe: a shipped recipe's name (" + ", ".join(config_lib.recipe_names()) + ") or a "
    ".py file whose get_config() returns the run's fields, optionally with an argument "
    "after a colon (imagenet_vit_base_ccmim:runlocal); default: demo. "
    "--config.<field>=value overrides one field.",
)

# The run-level flags: the `PretrainConfig` fields that say where the run
# lives and how it is driven, defined from their declarations.
_DEFINE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, str: flags.DEFINE_string}
for _field in dataclasses.fields(training.PretrainConfig):
    if _field.metadata["flag"]:
        _DEFINE[_field.type](_field.name, _field.default, _field.metadata["doc"])


def config_from_flags() -> training.PretrainConfig:
    """The run's `PretrainConfig`: the --config recipe with its
    --config.<field> overrides, and the run-level flags."""
    run_values = {name: FLAGS[name].value for name in config_lib.fields(flag=True)}
    recipe = FLAGS.config if FLAGS.config is not None else config_lib.load_recipe(DEFAULT_RECIPE)
    return config_lib.config_from_recipe(recipe, **run_values)


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        return console.fail(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        with console.run_messages_to_stdout():  # the library logs; show it on the console
            training.pretrain(config_from_flags())
    except (training.ConfigError, training.CheckpointError) as error:
        return console.fail(error)
    except training.NonFiniteLossError as error:
        return console.fail(error, code=1)
    except OSError as error:  # a file or folder that cannot be read or written
        return console.fail(describe_os_error(error))
    except Exception as error:  # the input pipeline's errors come through fit
        line = describe_data_error(error)
        if line is None:
            raise
        return console.fail(line)
    return 0


def parse_flags(argv: Sequence[str]) -> list[str]:
    """`console.parse_flags`, with `--config=<name>` naming a shipped recipe
    (`demo` when none is given), and one line for a recipe that does not
    exist, an unknown `--config.<field>`, a run-level field given as
    `--config.<field>` or a recipe field given as a flag of its own."""
    recipe_fields, run_fields = config_lib.fields(flag=False), config_lib.fields(flag=True)
    resolved, has_config = [argv[0]], False
    for arg in argv[1:]:
        name = arg.lstrip("-").split("=", 1)[0]
        if arg.startswith("--config="):
            has_config = True
            spec = arg[len("--config="):]
            path = config_lib.recipe_path(spec)
            if not os.path.isfile(path):
                sys.exit(console.fail(
                    f"Recipe {spec.partition(':')[0]!r} does not exist: pass a recipe name "
                    f"({', '.join(config_lib.recipe_names())}) or a path to a .py file with "
                    "get_config()."))
            arg = f"--config={path}{spec[len(spec.partition(':')[0]):]}"
        elif name.startswith("config."):
            field = name[len("config."):]
            if field in run_fields:
                sys.exit(console.fail(
                    f"{field} is set per run, not by the recipe: pass --{field}=... instead "
                    f"of --config.{field}=..."))
            if field not in recipe_fields:
                close = difflib.get_close_matches(field, recipe_fields, n=1)
                hint = f" Did you mean --config.{close[0]}?" if close else ""
                sys.exit(console.fail(
                    f"Unknown config field {field!r} (--config.{field}).{hint} The fields: "
                    f"{', '.join(recipe_fields)}."))
        elif name.removeprefix("no") in recipe_fields and name not in FLAGS:
            sys.exit(console.fail(
                f"--{name} is not a flag: set the recipe's field with "
                f"--config.{name.removeprefix('no')}=<value>."))
        resolved.append(arg)
    if not has_config:
        resolved.insert(1, f"--config={config_lib.recipe_path(DEFAULT_RECIPE)}")
    return console.parse_flags(resolved)


def run() -> None:
    """The `ccmim-pretrain` console script."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
