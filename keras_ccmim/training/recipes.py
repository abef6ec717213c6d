"""Recipes: a run's `PretrainConfig` fields as an `ml_collections.ConfigDict`.

A recipe is a Python file with `get_config(arg=None)` returning
`recipe(field=value, ...)`, big_vision style (`configs/` at the repository
root holds the project's: the README demo, the CIFAR-10 study, the paper's
ImageNet run and its MAE baseline). `train/pretrain.py --config=FILE[:ARG]`
loads one and `--config.<field>=value` overrides a field; in Python,
`load_recipe("configs/demo.py")` does the same and `config_from_recipe`
turns the ConfigDict into a `PretrainConfig`.
"""

import dataclasses
import importlib.util
import os

from ml_collections import config_dict

from keras_ccmim.training.config import PretrainConfig

# Fields of type `object` whose command-line override arrives as a string:
# the value each string stands for (other strings pass through unchanged).
_FROM_STRING = {
    "jit_compile": {"auto": "auto", "true": True, "false": False},
    "verbose": {"auto": "auto", "0": 0, "1": 1, "2": 2},
}


def recipe(**values):
    """A ConfigDict with every `PretrainConfig` field: `values` where given,
    the library's default (the paper's recipe) elsewhere.

    A field whose value is None is a typed placeholder, so that
    `--config.<field>=value` parses as the field's type (int, float, str,
    bool); float fields hold floats (`--config.warmup_epochs=0.5` on a
    recipe that wrote 40).
    """
    fields = {field.name: field for field in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"Unknown config field(s) {unknown}. Valid fields: {', '.join(sorted(fields))}."
        )
    config = config_dict.ConfigDict()
    for name, field in fields.items():
        value = values.get(name, field.default)
        kind = field.type if field.type in (int, float, str, bool) else str
        if value is None:
            value = config_dict.placeholder(kind)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        config[name] = value
    return config


def recipe_values(config):
    """The fields of a recipe's ConfigDict (or a dict) as `PretrainConfig`
    takes them: "true"/"false" and "0"/"1"/"2" given on the command line for
    jit_compile and verbose become the bool or int they stand for."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for name, meanings in _FROM_STRING.items():
        if isinstance(values.get(name), str):
            values[name] = meanings.get(values[name].lower(), values[name])
    return values


def config_from_recipe(config):
    """The `PretrainConfig` of a recipe's ConfigDict (unknown fields are an
    error naming the valid ones)."""
    return PretrainConfig.from_dict(recipe_values(config))


def load_recipe(spec):
    """The ConfigDict of recipe `spec`, `"path/to/recipe.py"` or
    `"path/to/recipe.py:arg"` (`arg` is passed to its `get_config`), as
    `--config=spec` loads it."""
    path, colon, arg = os.fspath(spec).partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Recipe {path!r} does not exist: pass a configs/*.py file.")
    name = "recipe_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if colon else module.get_config()
