"""Full fine-tuning with layer-wise learning-rate decay (MAE's recipe)."""

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_ccmim.evaluation.features import whole_batch_size
from keras_ccmim.evaluation.metrics import accuracies
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.training.optimizer import is_decayed


@keras.saving.register_keras_serializable(package="keras_ccmim")
class ViTClassifier(keras.Model):
    """A `ViTEncoder` with MAE's fine-tuning head.

    The patch tokens (after the encoder's own norm) are averaged, normalised
    by a final LayerNorm (`fc_norm`) and classified by a linear head
    initialised with std 2e-5, as in MAE.

    Args:
        encoder: a `ViTEncoder` (its `drop_path_rate` is the stochastic depth
            used while fine-tuning).
        num_classes: int.
        head_init_std: std of the head's truncated-normal kernel init.

    Call: `images [B, H, W, C]` (normalised) -> logits `[B, num_classes]`.
    """

    def __init__(self, encoder, num_classes, head_init_std=2e-5, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(encoder, ViTEncoder):
            raise TypeError(
                f"encoder must be a keras_ccmim ViTEncoder, got {type(encoder).__name__}."
            )
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.head_init_std = float(head_init_std)
        self.fc_norm = keras.layers.LayerNormalization(
            epsilon=encoder.layer_norm_epsilon, dtype=self.dtype_policy, name="fc_norm"
        )
        self.head = keras.layers.Dense(
            self.num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=self.head_init_std),
            dtype=self.dtype_policy,
            name="head",
        )

    def build(self, input_shape=None):
        if not self.encoder.built:
            self.encoder.build()
        self.fc_norm.build((None, self.encoder.hidden_dim))
        self.head.build((None, self.encoder.hidden_dim))
        self.built = True

    def call(self, images, training=None):
        tokens = self.encoder(images, training=training)
        pooled = ops.mean(tokens[:, 1:], axis=1)
        return self.head(self.fc_norm(pooled))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes,
                "head_init_std": self.head_init_std,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def layer_ids(model):
    """`{variable path: layer id}` over a `ViTClassifier`'s trainable variables.

    Layer 0 is the embedding (patch embedding, [CLS], positions), `i + 1` is
    block `i`, and `num_layers + 1` is everything after the blocks (the
    encoder's norm, `fc_norm`, the head).
    """
    if not model.built:
        model.build()
    encoder = model.encoder
    last = encoder.num_layers + 1
    ids = {v.path: last for v in model.trainable_variables}
    for v in encoder.patch_embedding.trainable_variables:
        ids[v.path] = 0
    for v in encoder.position_embedding.trainable_variables:
        ids[v.path] = 0
    ids[encoder.cls_token.path] = 0
    for index, block in enumerate(encoder.blocks):
        for v in block.trainable_variables:
            ids[v.path] = index + 1
    return ids


def layer_decay_scales(model, layer_decay=0.65):
    """`{variable path: lr scale}`: `layer_decay ** (num_layers + 1 - layer id)`."""
    if not 0 < float(layer_decay) <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}.")
    last = model.encoder.num_layers + 1
    return {path: float(layer_decay) ** (last - i) for path, i in layer_ids(model).items()}


@keras.saving.register_keras_serializable(package="keras_ccmim")
class LayerDecayAdamW(keras.optimizers.Adam):
    """AdamW whose learning rate (and decoupled weight decay) is scaled per
    variable, for layer-wise lr decay.

    Keras optimizers take one learning rate; this one multiplies it, in
    `update_step`, by `lr_scales[variable.path]` (1 for paths not listed).
    Weight decay `variable -= lr * scale * weight_decay * variable` is applied
    there too, before the Adam step (as torch's AdamW with per-group lr), and
    skipped for biases, norms, [CLS] and position embeddings
    (`keras_ccmim.training.is_decayed`).

    Args:
        learning_rate: float or schedule.
        lr_scales: dict from variable path to a float scale.
        weight_decay: decoupled weight decay.
        beta_1, beta_2, epsilon: Adam's.
    """

    def __init__(
        self,
        learning_rate=1e-3,
        lr_scales=None,
        weight_decay=0.05,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs
        )
        if float(weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.lr_scales = {str(k): float(v) for k, v in (lr_scales or {}).items()}
        self.decoupled_weight_decay = float(weight_decay)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._variable_lr_scales = [self.lr_scales.get(v.path, 1.0) for v in var_list]
        self._variable_decayed = [is_decayed(v) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype) * self._variable_lr_scales[index]
        if self.decoupled_weight_decay and self._variable_decayed[index]:
            self.assign_sub(variable, variable * (learning_rate * self.decoupled_weight_decay))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(lr_scales=dict(self.lr_scales), weight_decay=self.decoupled_weight_decay)
        return config


def finetune_encoder(encoder, drop_path_rate=0.1):
    """A copy of `encoder` with its weights and the given stochastic depth."""
    config = encoder.get_config()
    config["drop_path_rate"] = float(drop_path_rate)
    copy = ViTEncoder.from_config(config)
    copy.build()
    copy.set_weights(encoder.get_weights())
    return copy


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns: accuracies in percent, what was run, the model."""

    top1: float
    top5: float
    num_eval: int
    epochs: int
    steps: int
    learning_rate: float
    final_loss: float
    model: keras.Model = dataclasses.field(repr=False)

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "model"}


def evaluate_classifier(model, dataset, max_batches=None):
    """Top-1/top-5 (percent) and `num_eval` of a classifier over
    `(images, extras)` batches."""
    scores, labels = [], []
    for index, (images, extras) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        logits = model.predict_on_batch(np.asarray(images, dtype="float32"))
        scores.append(ops.convert_to_numpy(logits))
        labels.append(np.asarray(extras["label"]).reshape(-1))
    if not scores:
        raise ValueError("The evaluation dataset yielded no batch.")
    labels = np.concatenate(labels)
    if labels.min() < 0:
        raise ValueError("The evaluation split is unlabelled (label -1).")
    result = accuracies(np.concatenate(scores), labels)
    result["num_eval"] = int(labels.shape[0])
    return result


def finetune(
    encoder,
    dataset="synthetic_objects",
    *,
    train_split="train",
    eval_split="test",
    data_dir=None,
    image_size=None,
    num_classes=None,
    train_num_images=None,
    eval_num_images=None,
    epochs=100,
    steps_per_epoch=None,
    warmup_epochs=5,
    batch_size=128,
    base_learning_rate=5e-4,
    weight_decay=0.05,
    layer_decay=0.65,
    drop_path_rate=0.1,
    rand_augment_magnitude=9,
    random_erasing_probability=0.25,
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    label_smoothing=0.1,
    seed=0,
    verbose=0,
):
    """Fine-tunes a copy of `encoder` end to end and evaluates it.

    MAE / ccMIM's recipe by default: AdamW (betas 0.9, 0.999), `lr =
    base_learning_rate * batch_size / 256` with linear warmup then cosine to
    0, layer-wise lr decay 0.65, drop path 0.1, RandAugment m9, random
    erasing 0.25, MixUp 0.8 / CutMix 1.0, label smoothing 0.1, mean-pooled
    patch tokens + final norm + linear head (`ViTClassifier`).

    Args:
        encoder: the pretrained `ViTEncoder` (not modified; a copy is trained).
        dataset, data_dir: as in `keras_ccmim.data.make_dataset`.
        train_split, eval_split: split strings (TFDS slicing allowed).
        image_size: default the encoder's.
        num_classes: default from the dataset description.
        train_num_images, eval_num_images: `num_images` of each split.
        epochs, steps_per_epoch: training length (steps default: one pass).
        warmup_epochs, batch_size, base_learning_rate, weight_decay,
        layer_decay, drop_path_rate, rand_augment_magnitude,
        random_erasing_probability, mixup_alpha, cutmix_alpha,
        label_smoothing: the recipe.
        seed: seeds initialisation, data order and augmentation.
        verbose: `fit` verbosity.

    Returns:
        A `FinetuneResult`.
    """
    from keras_ccmim.data import describe_dataset, make_dataset
    from keras_ccmim.evaluation.finetune_data import make_finetune_dataset

    image_size = int(image_size or encoder.image_size[0])
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    if not 0 <= float(warmup_epochs) < int(epochs):
        raise ValueError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}.")
    info = describe_dataset(
        dataset,
        split=train_split,
        data_dir=data_dir,
        num_images=train_num_images,
        image_size=image_size,
    )
    if num_classes is None:
        num_classes = info.num_classes
    if num_classes is None:
        raise ValueError(
            f"{dataset!r} split {train_split!r} is unlabelled; fine-tuning needs labels "
            "(or pass num_classes for a labelled source of unknown size)."
        )
    if steps_per_epoch is None:
        if not info.num_images:
            raise ValueError("The training split's size is unknown; pass steps_per_epoch.")
        steps_per_epoch = max(info.num_images // int(batch_size), 1)
    keras.utils.set_random_seed(int(seed))

    train = make_finetune_dataset(
        dataset,
        split=train_split,
        batch_size=int(batch_size),
        image_size=image_size,
        num_classes=int(num_classes),
        data_dir=data_dir,
        seed=int(seed),
        num_images=train_num_images,
        rand_augment_magnitude=rand_augment_magnitude,
        random_erasing_probability=random_erasing_probability,
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        label_smoothing=label_smoothing,
    )
    eval_info = describe_dataset(
        dataset,
        split=eval_split,
        data_dir=data_dir,
        num_images=eval_num_images,
        image_size=image_size,
    )
    evaluation = make_dataset(
        dataset,
        split=eval_split,
        batch_size=whole_batch_size(eval_info.num_images, batch_size),
        image_size=image_size,
        data_dir=data_dir,
        training=False,
        num_images=eval_num_images,
    )

    model = ViTClassifier(finetune_encoder(encoder, drop_path_rate), int(num_classes))
    model.build()
    total_steps = int(epochs) * int(steps_per_epoch)
    warmup_steps = min(int(round(float(warmup_epochs) * steps_per_epoch)), total_steps - 1)
    learning_rate = float(base_learning_rate) * int(batch_size) / 256.0
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    optimizer = LayerDecayAdamW(
        schedule, lr_scales=layer_decay_scales(model, layer_decay), weight_decay=weight_decay
    )
    model.compile(
        optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(
        train, epochs=int(epochs), steps_per_epoch=int(steps_per_epoch), verbose=verbose
    )
    result = evaluate_classifier(model, evaluation)
    losses = history.history.get("loss") or [math.nan]
    return FinetuneResult(
        top1=result["top1"],
        top5=result["top5"],
        num_eval=result["num_eval"],
        epochs=int(epochs),
        steps=total_steps,
        learning_rate=learning_rate,
        final_loss=float(losses[-1]),
        model=model,
    )

