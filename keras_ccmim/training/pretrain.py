"""`pretrain(config)`: one ccMIM pretraining run, from data to saved encoder.

The workdir of a run:

    config.json             the resolved configuration
    checkpoints/            resumable checkpoints (see TrainingCheckpoint)
    metrics.csv             per-epoch logs (loss terms, foreground_lift,
                            foreground_lift_max, mask_selectivity, lr)
    tensorboard/train/      TensorBoard events: the scalars, and the masks
                            picture of each epoch
    encoder/                the final encoder as a preset in keras-hub's
                            layout (config.json, model.weights.h5,
                            metadata.json): `ViTEncoder.from_preset(...)`
    pretrainer.keras        the final pretrainer, whole
    masks.png               the final model's masks, reconstructions and
                            importance on 8 images spread over the
                            split (`keras_ccmim.pictures.mask_picture`)
    results.json            final loss, the masking metrics and what random
                            masking gets on the same images
    image_folder_manifest.json
                            for a `folder:` dataset, the scan of the folder
                            (readable files with labels, skipped files); a
                            resumed run reuses it while the folder is
                            unchanged
    run.lock                held by the run while it runs (`WorkdirLock`)

Running `pretrain` again with the same config and workdir resumes from the
newest intact checkpoint, or, when the run had finished, only rewrites the
outputs (results.json keeps the history); the rules are in
`keras_ccmim.training.workdir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import keras

from keras_ccmim.file_io import large_write
from keras_ccmim.masking_metrics import MASKING_METRICS, random_masking_metrics
from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.preset_files import (
    CONFIG_FILE as PRESET_CONFIG_FILE,
    ENCODER_PRESET,
    is_preset_dir,
    load_from_preset,
    resolve_preset,
    save_to_preset,
)
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.pictures import mask_picture, save_png
from keras_ccmim.training.callbacks import (
    ForegroundLift,
    LogLearningRate,
    MetricsCSV,
    TensorBoardMaskPictures,
    TensorBoardScalars,
    seeded_predict_outputs,
)
from keras_ccmim.training.checkpoints import fit_resumable, holds_checkpoints, latest_checkpoint
from keras_ccmim.training.config import (
    FOLDER_MANIFEST_FILE,
    ConfigError,
    PretrainConfig,
    build_pretrainer,
    resolve_config,
)
from keras_ccmim.training.distribution import (
    initialize_processes,
    is_primary,
    outside_distribution,
    process_count,
    setup_distribution,
)
from keras_ccmim.training.exact_resume import training_batches
from keras_ccmim.training.nan_guard import nan_advice
from keras_ccmim.training.optimizer import make_optimizer, training_steps
from keras_ccmim.training.workdir import (
    WorkdirLock,
    CONFIG_FILE,
    RESULTS_FILE,
    earlier_results,
    merged_history,
    prepare_workdir,
)
from keras_ccmim.training.schedules import warmup_cosine

logger = logging.getLogger(__name__)

PICTURE_IMAGES = 8


@dataclasses.dataclass
class PretrainResults:
    """What `pretrain` returns.

    Attributes:
        final_loss: mean training loss of the last epoch (None if no step ran
            now and no checkpoint recorded one).
        foreground_lift: foreground lift of the final model's masks on the
            fixed batch (None for data without foreground masks).
        foreground_lift_max: the lift of masking the foreground first on the
            same batch with the same K, the ceiling of `foreground_lift`.
        mask_selectivity: `(lift - 1) / (lift_max - 1)`: 0 random masking,
            1 foreground first.
        random_masking: what uniformly random masking with the same K gets
            on the same batch, `{metric: {"mean", "std"}}` over 100 draws.
        global_step: optimizer steps done in total.
        initial_step: the step this call started from (0 for a fresh run).
        history: per-epoch logs of the run: those an earlier call wrote to
            `results.json` (when it ended at or before `initial_step`)
            followed by this call's, so rerunning a finished run keeps them.
        workdir: the run's folder; `paths` maps output names to files in it.
    """

    final_loss: float | None
    foreground_lift: float | None
    foreground_lift_max: float | None
    mask_selectivity: float | None
    random_masking: dict[str, dict[str, float]] | None
    global_step: int
    initial_step: int
    history: dict[str, list]
    workdir: str
    paths: dict[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def _dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def pretrain(
    config: PretrainConfig | dict[str, Any] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    fresh: bool | None = None,
) -> PretrainResults:
    """Runs (or resumes) a ccMIM pretraining run and saves its outputs.

    Validates the whole config first (`resolve_config`), then builds the
    input pipeline, the distribution, the model and AdamW with a warmup +
    cosine schedule, trains with `fit_resumable` and writes the workdir (see
    the module docstring).

    Args:
        config: a `PretrainConfig` or dict of its fields (those left out: the
            paper's recipe; the demo is `load_recipe("demo")`).
        callbacks: extra Keras callbacks, run after the built-in loggers.
        fresh: bool, start over even in a workdir that holds an earlier run
            (its outputs are moved to `previous-<n>/`, never deleted); None
            takes `config.fresh`.

    Returns:
        A `PretrainResults`.

    Raises:
        ConfigError: bad config or data (a `ValueError`), before any work
            starts; also for a workdir that holds a different run
            (without `allow_config_change`), or metrics but no checkpoint
            (without `fresh`).
        CheckpointError: the workdir holds checkpoints but none is intact.
        NonFiniteLossError: the loss became NaN or infinite; the last good
            checkpoint is kept and no final outputs are written.
    """
    config = config if config is not None else PretrainConfig()
    fields = config if isinstance(config, dict) else config.to_dict()
    try:
        # Before anything touches a device: JAX joins the processes first.
        initialize_processes(
            fields.get("coordinator_address"), fields.get("num_processes"),
            fields.get("process_id"),
        )
    except ValueError as error:
        raise ConfigError(str(error)) from error
    config, info = resolve_config(config)
    distribution = setup_distribution(config.distribution)
    processes = process_count()
    if fresh is not None:
        if not isinstance(fresh, bool):
            raise ConfigError(f"fresh must be True or False, got {fresh!r}.")
        config = dataclasses.replace(config, fresh=fresh)
    # One run at a time: the lock is taken before anything is written.
    with WorkdirLock(config.workdir) if is_primary() else contextlib.nullcontext():
        return _run(config, info, distribution, processes, callbacks)


def _run(config, info, distribution, processes, callbacks):
    """`pretrain` after its checks, with the workdir locked."""
    from keras_ccmim import data

    workdir, checkpoint_dir = prepare_workdir(config, fresh=config.fresh)
    # The scan resolve_config made of an image folder, for a later call.
    if is_primary():
        data.write_dataset_manifest(
            config.dataset, os.path.join(workdir, FOLDER_MANIFEST_FILE), config.max_pixels
        )
    keras.utils.set_random_seed(config.seed)
    policy = "mixed_bfloat16" if config.mixed_precision == "bfloat16" else "float32"

    dataset_at = training_batches(config, distribution, processes)
    # The masking figures predict on a fixed batch in one process; with
    # several, each process would feed a share (see the README).
    images = foreground = pictured = None
    if processes == 1:
        images, foreground = fixed_batch(config, info, distribution.num_replicas)
        pictured = picture_batch(config, distribution.num_replicas)

    with _dtype_policy(policy), distribution.scope():
        model = build_pretrainer(config)
        if config.init_from and not holds_checkpoints(checkpoint_dir):
            initialise_from(model, config.init_from)
        schedule = warmup_cosine(
            config.learning_rate, config.warmup_steps, config.total_steps,
            accum_steps=config.accum_steps,
        )
        optimizer = make_optimizer(
            model, schedule, weight_decay=config.weight_decay, accum_steps=config.accum_steps
        )
        model.compile(optimizer=optimizer, jit_compile=config.jit_compile)

        lift = None
        run_callbacks = []
        if foreground is not None:
            lift = ForegroundLift(
                images, foreground, config.patch_size, seed=config.seed
            )
            run_callbacks.append(lift)
        run_callbacks.append(LogLearningRate())
        if is_primary():  # the files of the run: process 0 writes them
            run_callbacks += [
                MetricsCSV(os.path.join(workdir, "metrics.csv")),
                TensorBoardScalars(
                    os.path.join(workdir, "tensorboard"),
                    update_freq=config.tensorboard_every_steps,
                ),
            ]
            if pictured is not None:
                run_callbacks.append(TensorBoardMaskPictures(
                    os.path.join(workdir, "tensorboard"), pictured, config.patch_size,
                    seed=config.seed, max_images=PICTURE_IMAGES,
                ))
        run_callbacks += [data.SkippedRecordsReport(), *callbacks]
        history, initial_step = fit_resumable(
            model,
            dataset_at,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            checkpoint_dir=checkpoint_dir,
            callbacks=run_callbacks,
            save_every_steps=config.checkpoint_every_steps,
            max_to_keep=config.keep_checkpoints,
            verbose=config.verbose,
            resume_from_step=config.resume_from_step,
            nan_advice=functools.partial(nan_advice, config),
            check_every_steps=config.check_every_steps,
        )

        masking = dict.fromkeys(MASKING_METRICS)
        random_masking = None
        if lift is not None:
            # One inference call on the fixed batch, its masks drawn from
            # fixed seeds (the same weights give the same figures), gives the
            # masking metrics, next to random masking's on the same images.
            mask = seeded_predict_outputs(model, images, config.seed)["mask"]
            masking = lift.metrics_of(mask)
            random_masking = random_masking_metrics(
                mask, lift.foreground_patches, seed=config.seed
            )
        paths = {
            "config": os.path.join(workdir, CONFIG_FILE),
            "checkpoints": checkpoint_dir,
            "metrics": os.path.join(workdir, "metrics.csv"),
            "tensorboard": os.path.join(workdir, "tensorboard"),
            "encoder": os.path.join(workdir, ENCODER_PRESET),
            "pretrainer": os.path.join(workdir, "pretrainer.keras"),
            "masks": None,
            "results": os.path.join(workdir, RESULTS_FILE),
        }
        if is_primary():
            if pictured is not None:
                picture = mask_picture(
                    pictured, seeded_predict_outputs(model, pictured, config.seed),
                    config.patch_size, model.norm_pix_loss, max_images=PICTURE_IMAGES,
                )
                paths["masks"] = save_png(os.path.join(workdir, "masks.png"), picture)
            with outside_distribution():  # process 0 alone
                with large_write(paths["pretrainer"]):
                    paths["encoder"] = save_to_preset(model.encoder, paths["encoder"])
                    model.save(paths["pretrainer"])

    earlier = earlier_results(paths["results"])
    final_loss = history["loss"][-1] if history.get("loss") else None
    if final_loss is None:
        record = latest_checkpoint(checkpoint_dir)
        final_loss = record and record.get("loss")
    if final_loss is None and earlier.get("global_step") == initial_step:
        final_loss = earlier.get("final_loss")
    results = PretrainResults(
        final_loss=None if final_loss is None else float(final_loss),
        **masking,
        random_masking=random_masking,
        global_step=int(keras.ops.convert_to_numpy(training_steps(model.optimizer))),
        initial_step=initial_step,
        history=merged_history(earlier, history, initial_step),
        workdir=workdir,
        paths=paths,
    )
    if not is_primary():
        return results
    with open(paths["results"], "w") as f:
        json.dump(results.to_dict(), f, indent=1)
    loss_text = "n/a" if results.final_loss is None else f"{results.final_loss:.4f}"
    logger.info(
        f"Final loss {loss_text} after {results.global_step} steps. Outputs in {workdir}: "
        f"{ENCODER_PRESET}/ (the encoder preset), pretrainer.keras, masks.png, metrics.csv, "
        "checkpoints/, "
        "tensorboard/."
    )
    logger.info(masking_summary(results))
    return results


def masking_summary(results):
    """The main job's last line: the masks' lift, its ceiling and selectivity,
    beside what random masking gets on the same images."""
    if results.foreground_lift is None:
        return "Masking metrics: n/a (the data have no foreground masks)."
    rand = results.random_masking
    return (
        f"Masking on {results.workdir}'s fixed batch: foreground lift "
        f"{results.foreground_lift:.3f} of at most {results.foreground_lift_max:.3f}, "
        f"selectivity {results.mask_selectivity:.3f} (0 = random, 1 = foreground first); "
        f"random masking on the same images: lift {rand['foreground_lift']['mean']:.3f} "
        f"+- {rand['foreground_lift']['std']:.3f}, selectivity "
        f"{rand['mask_selectivity']['mean']:.3f} +- {rand['mask_selectivity']['std']:.3f}."
    )


def initialise_from(model, source):
    """Sets the weights of `model` (a built `CCMIMPretrainer`) from a
    preset or a pretraining workdir: a `ViTEncoder` preset gives the
    encoder; a `CCMIMPretrainer` preset (a converted `mae_visualize_*` or
    ccMIM checkpoint, `ccmim-convert-mae`) gives every layer whose
    weights have the run's shapes (encoder and decoder, the ccMIM heads
    when the run has them), the rest keeping their initial values. A
    checkpointed run resumes from its checkpoint, which overrides this.

    Raises:
        ConfigError: the source's encoder has another architecture (the
            image size may differ: the position table is recomputed).
    """
    try:
        folder = resolve_preset(source)
        if not is_preset_dir(folder) and is_preset_dir(os.path.join(folder, ENCODER_PRESET)):
            folder = os.path.join(folder, ENCODER_PRESET)  # a pretraining workdir
        with open(os.path.join(folder, PRESET_CONFIG_FILE)) as f:
            class_name = json.load(f).get("class_name")
        if class_name == "CCMIMPretrainer":
            pretrainer = load_from_preset(folder, CCMIMPretrainer)
            loaded = pretrainer.encoder
        else:
            pretrainer, loaded = None, load_from_preset(folder, ViTEncoder)
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(
            f"init_from={source!r} cannot be read: {error} Pass a preset folder (config.json, "
            "model.weights.h5, metadata.json), a kaggle:// or hf:// handle, or a pretraining "
            "workdir."
        ) from error
    encoder = model.encoder
    mismatched = [
        f"{field}: {getattr(loaded, field)!r} -> {getattr(encoder, field)!r}"
        for field in ("patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_ratio",
                      "num_channels", "qkv_bias")
        if getattr(loaded, field) != getattr(encoder, field)
    ]
    if mismatched:
        raise ConfigError(
            f"init_from={source!r} holds an encoder of another architecture than the run's "
            f"({'; '.join(mismatched)}). Pass the matching --preset and size flags (e.g. "
            "--preset=vit_base_patch16_224 for a converted MAE ViT-B), or another init_from."
        )
    if not _copy_matching(encoder, loaded, skip_position=True):
        raise ConfigError(
            f"init_from={source!r}: its encoder's weights do not have the run's shapes although "
            "its architecture fields match; it was written by another version."
        )
    copied = ["encoder"]
    if pretrainer is not None:
        for name in ("decoder", "projector", "predictor"):
            target, origin = getattr(model, name, None), getattr(pretrainer, name, None)
            if target is not None and origin is not None and _copy_matching(
                target, origin, skip_position=True
            ):
                copied.append(name)
    logger.info(f"Initialised the {', '.join(copied)} from {source}.")


def _copy_matching(target, origin, skip_position=False):
    """Copies `origin`'s weights into `target` when both have the same
    weights in the same shapes (the position tables, recomputed per grid,
    excepted with `skip_position`); returns whether it copied."""
    pairs = list(zip(target.weights, origin.weights))
    if len(target.weights) != len(origin.weights) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in pairs
        if not (skip_position and "position_embedding" in a.path)
    ):
        return False
    for a, b in pairs:
        if skip_position and "position_embedding" in a.path:
            continue
        a.assign(b.value)
    return True


def fixed_batch(config, info, num_replicas):
    """The first evaluation batch of the training split (at most
    `lift_images`, a multiple of `num_replicas`): images and, when the data
    have them, foreground masks (numpy)."""
    from keras_ccmim import data

    size = min(config.lift_images, info.num_images or config.lift_images)
    dataset = data.make_dataset(
        config.dataset,
        split=config.split,
        batch_size=max(size // num_replicas, 1) * num_replicas,
        image_size=config.image_size,
        data_dir=config.data_dir,
        training=False,
        seed=config.seed,
        num_images=config.num_images,
        max_pixels=config.max_pixels,
    )
    images, extras = next(iter(dataset.take(1)))
    foreground = extras.get("foreground")
    return images.numpy(), None if foreground is None else foreground.numpy()


def picture_batch(config, num_replicas):
    """The images of `masks.png` and the TensorBoard picture (numpy): about
    `PICTURE_IMAGES` (a multiple of `num_replicas`, as a predicted batch
    must be) spread evenly over the training split
    (`keras_ccmim.data.evenly_spaced_batch`), so that a folder listed class
    by class is pictured across its classes; None for a split with fewer
    images than replicas."""
    from keras_ccmim import data

    count = -(-PICTURE_IMAGES // num_replicas) * num_replicas
    images, _ = data.evenly_spaced_batch(
        config.dataset,
        split=config.split,
        count=count,
        image_size=config.image_size,
        data_dir=config.data_dir,
        num_images=config.num_images,
        max_pixels=config.max_pixels,
    )
    usable = len(images) // num_replicas * num_replicas
    return images.numpy()[:usable] if usable else None
