"""The shipped recipes (keras_ccmim/recipes/): each loads by name and
resolves, the demo is the old defaults, the ImageNet recipe's runlocal
variant trains, and a recipe file outside the package loads by path."""

import dataclasses
import os

import pytest

from keras_ccmim.training import (
    ConfigError,
    PretrainConfig,
    config_from_recipe,
    load_recipe,
    pretrain,
    recipe,
    resolve_config,
)
from tests.training.conftest import OLD_DEFAULTS, REPO_ROOT

DEMO = "demo"
CIFAR10 = "cifar10_vit_tiny"
IMAGENET = "imagenet_vit_base_ccmim"
MAE = "mae_baseline"
SHARED_TFDS_DIR = REPO_ROOT.parent / "shared" / "data" / "tfds"


def _load(spec, **overrides):
    config = load_recipe(spec)
    return dataclasses.replace(config_from_recipe(config), **overrides)


def test_the_demo_recipe_is_the_old_defaults_field_by_field():
    demo = _load(DEMO).to_dict()
    assert list(demo) == list(OLD_DEFAULTS)
    for name, value in OLD_DEFAULTS.items():
        assert demo[name] == value and type(demo[name]) is type(value), name


def test_the_library_defaults_are_the_papers_recipe():
    defaults = PretrainConfig()
    assert (defaults.preset, defaults.batch_size, defaults.epochs) == (
        "vit_base_patch16_224", 4096, 800)
    assert (defaults.blr, defaults.warmup_epochs, defaults.weight_decay) == (1.5e-4, 40, 0.05)
    assert (defaults.mask_ratio, defaults.contrastive_weight, defaults.temperature) == (
        0.75, 0.2, 0.5)
    assert defaults.norm_pix_loss and defaults.workdir is None
    # The ImageNet recipe writes them out.
    recipe_fields = _load(IMAGENET).to_dict()
    differ = {k for k, v in defaults.to_dict().items() if recipe_fields[k] != v}
    assert differ == {"dataset"}


def test_a_config_without_workdir_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"workdir is not set: pass --workdir="):
        resolve_config(_load(DEMO, workdir=None))


@pytest.mark.parametrize("spec", [DEMO, IMAGENET + ":runlocal", MAE + ":runlocal"])
def test_recipes_on_generated_data_resolve(spec, tmp_path):
    config, info = resolve_config(_load(spec, workdir=str(tmp_path / "run")))
    assert info.num_images == config.num_images and config.steps_per_epoch >= 1


@pytest.mark.parametrize("spec", [CIFAR10, IMAGENET, MAE])
def test_recipes_on_tfds_data_resolve_up_to_the_data(spec, tmp_path):
    # Without data_dir every check but the data passes: the error is the
    # missing folder, named as the flag to pass.
    with pytest.raises(ConfigError, match="needs data_dir"):
        resolve_config(_load(spec, workdir=str(tmp_path / "run")))


def test_the_cifar10_recipe_resolves_on_the_shared_data(tmp_path):
    if not (SHARED_TFDS_DIR / "cifar10_jpeg").is_dir():
        pytest.skip("the shared cifar10_jpeg is not beside the repository")
    config, info = resolve_config(
        _load(CIFAR10, data_dir=str(SHARED_TFDS_DIR), workdir=str(tmp_path / "run")))
    assert (config.split, config.num_images, info.num_images) == ("train[:45000]", 45000, 45000)
    assert (config.epochs, config.steps_per_epoch) == (8, 43)  # the study's 8 points of a pass


def test_the_mae_baseline_is_the_imagenet_recipe_without_ccmim():
    ccmim, mae = _load(IMAGENET).to_dict(), _load(MAE).to_dict()
    differ = {k: (ccmim[k], mae[k]) for k in ccmim if ccmim[k] != mae[k]}
    assert differ == {
        "masking": ("importance_sampling", "random"),
        "contrastive": ("infonce", "none"),
    }


def test_an_unknown_recipe_argument_is_refused():
    with pytest.raises(ValueError, match="Unknown argument 'huge'"):
        load_recipe(IMAGENET + ":huge")


def test_a_recipe_loads_by_name_from_any_directory_and_by_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_recipe("demo").batch_size == 64
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from keras_ccmim.training.config import recipe\n"
        "def get_config(arg=None):\n"
        "    return recipe(preset='vit_tiny_patch4_32', epochs=int(arg or 1))\n")
    assert load_recipe(str(mine)).epochs == 1 and load_recipe(f"{mine}:3").epochs == 3
    assert load_recipe("mine.py:2").epochs == 2  # a relative path
    with pytest.raises(FileNotFoundError, match=r"Recipe 'nosuch' does not exist: pass a "
                       r"recipe name \(cifar10_vit_tiny, demo, "):
        load_recipe("nosuch")


def test_run_level_fields_are_not_recipe_fields():
    with pytest.raises(ValueError, match=r"workdir is set per run, not by a recipe: pass "
                       r"--workdir=\.\.\."):
        recipe(workdir="runs/x")
    assert "workdir" not in recipe() and "fresh" not in recipe()


def test_recipe_fields_are_typed_for_command_line_overrides():
    config = recipe(warmup_epochs=40)
    assert isinstance(config.warmup_epochs, float)
    config.image_size = 16  # a placeholder of type int
    with pytest.raises(TypeError):
        config.image_size = "sixteen"
    with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['mask_rate'\]"):
        recipe(mask_rate=0.5)
    assert config_from_recipe(recipe(jit_compile="false", verbose="0")).jit_compile is False


@pytest.mark.slow
def test_the_runlocal_recipe_trains(tmp_path):
    results = pretrain(_load(IMAGENET + ":runlocal", workdir=str(tmp_path / "run"), verbose=0))
    assert results.global_step == 4
    assert os.path.isdir(os.path.join(results.workdir, "encoder"))
