"""Bad input fails in `resolve_config`, before any work, naming the fix."""

import dataclasses

import pytest

from keras_ccmim.training import ConfigError, PretrainConfig, resolve_config
from keras_ccmim.training import workdir


def test_demo_defaults_resolve(tiny_run):
    # The demo recipe (keras_ccmim/recipes/demo.py): the library's defaults are the
    # paper's ImageNet recipe.
    config, info = resolve_config(PretrainConfig(
        preset="vit_tiny_patch4_32", batch_size=64, epochs=2, blr=1.5e-3, warmup_epochs=0.5,
        workdir="runs/demo"))
    assert config.dataset == "synthetic_objects" and info.has_foreground
    assert (config.image_size, config.patch_size, config.hidden_dim) == (32, 4, 192)
    assert config.num_layers == 12 and config.num_images == info.num_images == 3072
    assert config.steps_per_epoch == 3072 // config.batch_size
    assert config.learning_rate == pytest.approx(config.blr * config.batch_size / 256)


def test_resolve_fills_preset_sizes_and_keeps_overrides(tiny_run):
    config = resolve_config(tiny_run(hidden_dim=None, steps_per_epoch=None))[0]
    assert config.hidden_dim == 192  # from the preset
    assert config.num_layers == 2  # override kept
    assert config.steps_per_epoch == 128 // 16
    assert config.warmup_steps == 4 and config.total_steps == 16


def test_score_layers_string_is_parsed(tiny_run):
    assert resolve_config(tiny_run(score_layers="0,-1"))[0].score_layers == [0, -1]


def test_config_dict_round_trip(tiny_run, tmp_path):
    config = resolve_config(tiny_run())[0]
    config.save(tmp_path / "config.json")
    assert PretrainConfig.load(tmp_path / "config.json") == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(preset="vit_gigantic"),
            r"Unknown preset 'vit_gigantic'. Valid presets: .*vit_tiny_patch4_32",
        ),
        (dict(image_size=18), r"image_size 18 is not divisible by patch_size 4.*e\.g\. 16"),
        (dict(hidden_dim=30), "divisible by num_heads"),
        (dict(decoder_hidden_dim=30), "decoder_hidden_dim 30"),
        (dict(mask_ratio=0.0), "mask_ratio must be strictly between 0 and 1"),
        (dict(mask_ratio=1.0), "mask_ratio must be strictly between 0 and 1"),
        (
            dict(masking="greedy"),
            r"Unknown masking 'greedy'; choose one of importance_sampling, importance, "
            "random, block",
        ),
        (dict(sampler="topk"), r"Unknown sampler 'topk'; choose one of gumbel, uniform_noise"),
        (
            dict(contrastive="simclr"),
            r"Unknown contrastive 'simclr'; choose one of infonce, infonce_cross, align, none",
        ),
        (dict(contrastive_weight=-0.1), "contrastive_weight must be >= 0"),
        (dict(temperature=0.0), "temperature must be a positive number"),
        (dict(sampling_temperature=-1.0), "sampling_temperature must be a positive number"),
        (dict(sampling_temperature_start=0.0), "sampling_temperature_start must be a positive"),
        (
            dict(sampling_temperature_start=1.0, masking="importance"),
            "sampling_temperature_start anneals importance sampling",
        ),
        (dict(sampling_temperature_steps=0), "sampling_temperature_steps must be an integer >= 1"),
        (dict(score_from="values"), "Unknown score_from 'values'; choose one of probabilities, logits"),
        (dict(score_layers="1,x"), "comma-separated block indices"),
        (dict(score_scale="hidden_dim"), "score_scale='hidden_dim' applies to the logit score"),
        (dict(scoring_drop_path="yes"), "scoring_drop_path must be True or False"),
        (dict(score_layers=[5]), "out of range for an encoder with 2 blocks"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(batch_size=256), "fewer than batch_size=256"),
        (dict(epochs=0), "epochs must be an integer >= 1"),
        (dict(steps_per_epoch=0), "steps_per_epoch must be an integer >= 1"),
        (dict(blr=-1.0), "blr must be a positive number"),
        (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
        (dict(warmup_epochs=2), "warmup_epochs must be >= 0 and smaller than epochs"),
        (dict(warmup_epochs=1.9, steps_per_epoch=1), "warmup_epochs=1.9 is 2 steps"),
        (
            dict(mixed_precision="float16"),
            "Unknown mixed_precision 'float16'; choose one of float32, bfloat16",
        ),
        (
            dict(distribution="horovod"),
            "Unknown distribution 'horovod'; choose one of auto, none, mirrored, multi_worker, data_parallel",
        ),
        (dict(workdir=""), "workdir must be a folder path"),
        (dict(data_dir="/tmp"), "synthetic_objects is generated"),
        (dict(split="validation"), r"Invalid split 'validation' for synthetic_objects"),
    ],
)
def test_bad_config_is_rejected(tiny_run, overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(tiny_run(**overrides))


def test_temperature_schedule_spans_the_run_unless_told(tiny_run):
    config, _ = resolve_config(tiny_run(sampling_temperature_start=1.0, sampling_temperature=0.1))
    assert config.temperature_schedule_steps == config.total_steps == 6
    assert config.sampling_temperature_steps is None  # resolved at build time, not stored
    config, _ = resolve_config(tiny_run(sampling_temperature_start=1.0, sampling_temperature_steps=4))
    assert config.temperature_schedule_steps == 4
    assert resolve_config(tiny_run())[0].temperature_schedule_steps == 0


def test_unknown_field_is_rejected(tiny_run):
    with pytest.raises(ValueError, match=r"Unknown config field\(s\) \['mask_rate'\]"):
        resolve_config(dict(tiny_run(), mask_rate=0.5))


def test_unknown_dataset_lists_the_valid_names(tiny_run, tmp_path):
    message = r"Unknown dataset 'imagenet_tiny'.*synthetic_objects.*folder:"
    with pytest.raises(ValueError, match=message):
        resolve_config(tiny_run(dataset="imagenet_tiny", data_dir=str(tmp_path)))


def test_tfds_dataset_without_data_dir(tiny_run):
    with pytest.raises(ValueError, match="needs data_dir"):
        resolve_config(tiny_run(dataset="cifar10_jpeg"))


def test_missing_data_dir(tiny_run, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"data_dir '.*nowhere' does not exist. Pass "
                       r"--config.data_dir=<folder holding the prepared TFDS datasets>"):
        resolve_config(tiny_run(dataset="cifar10_jpeg", data_dir=missing))


def test_empty_image_folder(tiny_run, tmp_path):
    empty = tmp_path / "images"
    empty.mkdir()
    with pytest.raises(ValueError, match="images"):
        resolve_config(tiny_run(dataset=f"folder:{empty}"))


def test_missing_image_folder(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        resolve_config(tiny_run(dataset=f"folder:{tmp_path / 'nowhere'}"))


def test_resolve_does_not_change_its_argument(tiny_run):
    config = PretrainConfig(**tiny_run(hidden_dim=None))
    before = dataclasses.asdict(config)
    resolve_config(config)
    assert dataclasses.asdict(config) == before


def test_distribution_must_fit_the_backend(tiny_run):
    import keras

    other = "data_parallel" if keras.backend.backend() == "tensorflow" else "mirrored"
    with pytest.raises(ConfigError, match=f"distribution='{other}'"):
        resolve_config(tiny_run(distribution=other))


FLOAT_FIELDS = (
    "mask_ratio",
    "sampling_temperature",
    "sampling_temperature_start",
    "contrastive_weight",
    "temperature",
    "blr",
    "warmup_epochs",
    "weight_decay",
)


def test_every_float_field_is_listed():
    floats = [f.name for f in dataclasses.fields(PretrainConfig) if f.type in (float, "float")]
    assert sorted(floats) == sorted(FLOAT_FIELDS)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_non_finite_floats_are_rejected(tiny_run, field, value):
    with pytest.raises(ConfigError, match=f"^{field} must be .*got {value!r}"):
        resolve_config(tiny_run(**{field: value}))


@pytest.mark.parametrize(
    "field, value",
    [
        ("mask_ratio", 1.5),
        ("sampling_temperature", 0.0),
        ("sampling_temperature_start", -1.0),
        ("contrastive_weight", -1e-3),
        ("temperature", -0.5),
        ("blr", 0.0),
        ("warmup_epochs", -0.5),
        ("weight_decay", -1e-3),
    ],
)
def test_out_of_range_floats_are_rejected(tiny_run, field, value):
    with pytest.raises(ConfigError, match=f"^{field} must be .*got {value!r}"):
        resolve_config(tiny_run(**{field: value}))


def test_a_workdir_that_is_a_file_is_rejected(tiny_run, tmp_path):
    path = tmp_path / "run.txt"
    path.write_text("mine")
    with pytest.raises(ConfigError, match=r"workdir '.*run.txt' is a file, not a folder"):
        resolve_config(tiny_run(workdir=str(path)))
    with pytest.raises(ConfigError, match=r"cannot be created: '.*run.txt' is a file"):
        resolve_config(tiny_run(workdir=str(path / "run")))
    assert path.read_text() == "mine"


def test_a_read_only_workdir_is_rejected(tiny_run, tmp_path, monkeypatch):
    import os

    real_access = os.access
    read_only = str(tmp_path / "read_only")
    os.mkdir(read_only)
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if p == read_only else real_access(p, mode)
    )
    for workdir in (read_only, os.path.join(read_only, "new", "run")):
        with pytest.raises(ConfigError, match=r"cannot be written: '.*read_only' is read-only"):
            resolve_config(tiny_run(workdir=workdir))
    assert os.listdir(read_only) == []


# Every field that changes what a run trains: a rerun on its checkpointed
# workdir that changes one is refused. A new field must be put here or in
# RESUMABLE_CHANGES, deliberately.
RUN_FIELDS = (
    "preset", "init_from", "image_size", "patch_size", "hidden_dim", "num_layers", "num_heads",
    "decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads",
    "mask_ratio", "masking", "sampler", "sampling_temperature", "sampling_temperature_start",
    "sampling_temperature_steps", "score_layers", "score_from", "score_scale",
    "scoring_drop_path", "teacher_drop_path", "teacher_updates_moving_statistics", "contrastive",
    "contrastive_weight", "temperature", "projection_dim", "norm_pix_loss",
    "dataset", "split", "num_images", "max_pixels",
    "batch_size", "accum_steps", "epochs", "steps_per_epoch", "blr", "warmup_epochs",
    "weight_decay", "seed",
    "mixed_precision", "lift_images",
)


def test_every_field_is_classified_for_reruns():
    fields = [field.name for field in dataclasses.fields(PretrainConfig)]
    assert sorted(set(fields) - set(workdir.RESUMABLE_CHANGES)) == sorted(RUN_FIELDS)
    assert set(workdir.RESUMABLE_CHANGES) <= set(fields)
    assert set(workdir.RESTART_CHANGES) <= set(RUN_FIELDS)


def test_config_changes_name_old_and_new_values(tiny_run):
    saved = resolve_config(tiny_run(epochs=2))[0]
    current = dataclasses.replace(saved, epochs=3, seed=1, masking="random", blr=1e-4)
    changes = workdir.config_changes(saved, current)
    assert [name for name, _, _ in changes] == ["masking", "epochs", "blr", "seed"]
    assert workdir.describe_changes(changes) == (
        "masking: 'importance_sampling' -> 'random', epochs: 2 -> 3, blr: 0.0015 -> 0.0001, "
        "seed: 0 -> 1"
    )


def test_harmless_changes_are_not_config_changes(tiny_run, tmp_path):
    saved = resolve_config(tiny_run())[0]
    current = dataclasses.replace(
        saved, workdir=str(tmp_path / "moved"), data_dir=str(tmp_path), verbose=2,
        tensorboard_every_steps=0, checkpoint_every_steps=1, keep_checkpoints=5,
        distribution="none", jit_compile=False, fresh=True, resume_from_step=3,
        allow_config_change=True,
    )
    assert workdir.config_changes(saved, current) == []
    assert len(workdir.all_config_changes(saved, current)) == 11


def test_resume_from_step_may_change_the_optimisation_knobs(tiny_run):
    saved = resolve_config(tiny_run(blr=1e6))[0]
    knobs = dict(blr=1.5e-3, warmup_epochs=1.0, weight_decay=0.0, mixed_precision="bfloat16")
    current = dataclasses.replace(saved, **knobs)
    assert [name for name, _, _ in workdir.config_changes(saved, current)] == list(knobs)
    restart = dataclasses.replace(current, resume_from_step=2)
    assert workdir.config_changes(saved, restart) == []
    # Not the schedule length nor the rest of the run.
    longer = dataclasses.replace(restart, epochs=3, seed=1)
    assert workdir.describe_changes(workdir.config_changes(saved, longer)) == (
        "epochs: 2 -> 3, seed: 0 -> 1"
    )


def test_a_list_read_back_from_json_equals_a_tuple(tiny_run, tmp_path):
    current = resolve_config(tiny_run(score_layers=(0, 1)))[0]
    assert current.score_layers == (0, 1)
    current.save(tmp_path / "config.json")
    saved = PretrainConfig.load(tmp_path / "config.json")
    assert saved.score_layers == [0, 1]
    assert workdir.all_config_changes(saved, current) == []
    changed = dataclasses.replace(current, score_layers=(1,))
    assert workdir.describe_changes(workdir.config_changes(saved, changed)) == (
        "score_layers: [0, 1] -> [1]"
    )


def test_a_preset_alias_is_the_preset_it_names(tiny_run):
    saved = resolve_config(tiny_run())[0]
    assert workdir.config_changes(saved, dataclasses.replace(saved, preset="T/4")) == []


def test_allow_config_change_must_be_a_bool(tiny_run):
    with pytest.raises(ConfigError, match="allow_config_change must be True or False"):
        resolve_config(tiny_run(allow_config_change="yes"))[0]
