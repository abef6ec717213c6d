"""What the step benchmark times: the models of each variant, the timer
callback and the callback arms (--callback_arms)."""

import contextlib
import os
import time

from absl import flags

FLAGS = flags.FLAGS

VARIANTS = {
    "mae": dict(masking="random", contrastive="none"),
    "ccmim": dict(),  # the defaults: importance sampling + InfoNCE
}
SIZE_FLAGS = ("image_size", "patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_ratio")
DECODER_FLAGS = ("decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads")


REFERENCE = "reference_mae"

# What a variant `<step>-<path>` (e.g. `mae-keras_layer_norm`) swaps in for a
# function of `keras_ccmim.backend_specific`: Keras' own path in place of the
# library's JAX-on-CPU one, so that both are timed in the same rounds (a
# backend-specific path stays only while it saves 15% of the step).
KERAS_PATHS = {
    "keras_layer_norm": ("layer_norm_fn", lambda: lambda: None),
}


def split_variant(variant):
    """`"mae-keras_layer_norm"` -> `("mae", "keras_layer_norm")`; `"mae"` -> `("mae", None)`."""
    base, _, path = variant.partition("-")
    return base, path or None


def check_variant(variant):
    """The reason `variant` cannot be timed, or None."""
    base, path = split_variant(variant)
    if base not in VARIANTS and variant != REFERENCE:
        return f"unknown step {base!r}; choose from {', '.join([*VARIANTS, REFERENCE])}"
    if path is not None and (path not in KERAS_PATHS or base == REFERENCE):
        return (f"unknown path {path!r} of {variant!r}; a library step takes one of "
                f"{', '.join(KERAS_PATHS)} (e.g. mae-keras_layer_norm)")
    return None


@contextlib.contextmanager
def keras_path(variant):
    """While open, the `backend_specific` function that `variant`'s path
    replaces is Keras' own (nothing changes for a variant without one).
    Models are built and their steps traced and run inside it."""
    _, path = split_variant(variant)
    if path is None:
        yield
        return
    from keras_ccmim import backend_specific

    name, replacement = KERAS_PATHS[path]
    saved = getattr(backend_specific, name)
    setattr(backend_specific, name, replacement())
    try:
        yield
    finally:
        setattr(backend_specific, name, saved)


def timed_variants():
    """The steps a run times: --variants, plus the plain-Keras reference MAE
    with --compare_reference."""
    variants = list(FLAGS.variants)
    if FLAGS.compare_reference and REFERENCE not in variants:
        variants.append(REFERENCE)
    return variants


def _library_model(variant):
    from keras_ccmim import CCMIMPretrainer

    variant, _ = split_variant(variant)

    encoder_overrides = {k: getattr(FLAGS, k) for k in SIZE_FLAGS if getattr(FLAGS, k) is not None}
    decoder = {k: getattr(FLAGS, k) for k in DECODER_FLAGS if getattr(FLAGS, k) is not None}
    return CCMIMPretrainer.from_architecture(
        FLAGS.preset,
        encoder_overrides=encoder_overrides,
        seed=0,
        **decoder,
        **VARIANTS[variant],
    )


def build_model(variant):
    """`(model, description)`: the model of `variant` and its sizes, input
    shape (H, W, C) and training FLOPs per image."""
    from keras_ccmim import flops as flop_model

    with keras_path(variant):
        library = _library_model("mae" if variant == REFERENCE else variant)
    enc = library.encoder
    config = {
        "masking": library.masking,
        "contrastive": library.contrastive,
        "image_size": list(enc.image_size),
        "patch_size": enc.patch_size,
        "hidden_dim": enc.hidden_dim,
        "num_layers": enc.num_layers,
        "num_heads": enc.num_heads,
        "decoder_hidden_dim": library.decoder_hidden_dim,
        "decoder_num_layers": library.decoder_num_layers,
        "decoder_num_heads": library.decoder_num_heads,
    }
    shape = (*enc.image_size, enc.num_channels)
    if variant != REFERENCE:
        step = flop_model.model_step_flops(library)
        return library, {"config": config, "input_shape": shape, "flops_per_image": step.step,
                         "flop_model": step.as_dict()}
    from benchmarks.reference_mae import ReferenceMAE, mae_flops_per_image

    if enc.image_size[0] != enc.image_size[1] or enc.num_channels != 3:
        raise ValueError("--compare_reference needs square RGB images.")
    model = ReferenceMAE(enc.image_size[0], enc.patch_size, enc.hidden_dim, enc.num_layers,
                         enc.num_heads, library.decoder_hidden_dim, library.decoder_num_layers,
                         library.decoder_num_heads, mask_ratio=library.mask_ratio, seed=0)
    config.update(masking="random (plain Keras)", contrastive="none")
    return model, {"config": config, "input_shape": shape,
                   "flops_per_image": mae_flops_per_image(model),
                   "library_mae_flops_per_image": flop_model.model_step_flops(library).step}


class _FitTimer:
    """Times each `fit` epoch (wall clock, and the process's CPU time: on a
    machine shared with other jobs the CPU time of a one-thread step moves
    far less than its wall time) and records its peak memory."""

    def __init__(self, backend, model):
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                backend.reset_memory()
                outer.start = time.perf_counter()
                outer.cpu_start = time.process_time()

            def on_epoch_end(self, epoch, logs=None):
                for value in (logs or {}).values():
                    float(value)  # waits for the step's outputs
                if backend.name == "jax":
                    backend.sync(model.trainable_variables[0].value)
                else:
                    backend.sync()
                outer.seconds = time.perf_counter() - outer.start
                outer.cpu_seconds = time.process_time() - outer.cpu_start
                outer.memory = backend.peak_memory()

        self.callback = Callback()
        self.start = self.seconds = self.memory = None
        self.cpu_start = self.cpu_seconds = None


CALLBACK_ARMS = ("none", "run", "every_step")


def _arm_callbacks(arm, model, folder, steps):
    """The callbacks a timed fit of `arm` runs besides the timer (see
    --callback_arms), writing under `folder`."""
    if arm == "none":
        return []
    from keras_ccmim import training
    from keras_ccmim.training.config import PretrainConfig

    os.makedirs(folder, exist_ok=True)
    defaults = PretrainConfig()
    every = 1 if arm == "every_step" else defaults.check_every_steps
    board = 1 if arm == "every_step" else defaults.tensorboard_every_steps
    checkpoint = training.TrainingCheckpoint(
        os.path.join(folder, "checkpoints"), steps, check_every_steps=every,
        max_to_keep=1,
    )
    return [
        training.StopOnNonFiniteLoss(checkpoint=checkpoint, check_every_steps=every),
        training.LogLearningRate(),
        training.MetricsCSV(os.path.join(folder, "metrics.csv")),
        training.TensorBoardScalars(os.path.join(folder, "tensorboard"), update_freq=board),
        checkpoint,
    ]


def _count_traces(model):
    """Wrap `model.train_step` so that its Python calls are counted."""
    counter = {"calls": 0}
    step = model.train_step

    def counted(*args, **kwargs):
        counter["calls"] += 1
        return step(*args, **kwargs)

    model.train_step = counted
    return counter
