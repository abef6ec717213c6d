"""The ccMIM pretrainer: one training step on every Keras backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim import backend_specific, checks
from keras_ccmim import losses as ccmim_losses
from keras_ccmim.layers.contrastive_heads import PredictionHead, ProjectionHead
from keras_ccmim.layers.importance_scorer import (
    ImportanceScorer,
    ScoreLayers,
    ScoreScale,
    ScoreSource,
)
from keras_ccmim.layers.mae_decoder import MAEDecoder
from keras_ccmim.layers.patch_selector import MaskingStrategy, PatchSelector, Sampler
from keras_ccmim.layers.patching import patchify
from keras_ccmim.models.preset_files import load_from_preset
from keras_ccmim.models.presets import get_preset
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.type_aliases import PathLike, Tensor


@keras.saving.register_keras_serializable(package="keras_ccmim")
class CCMIMPretrainer(keras.Model):
    """ccMIM: importance-masked image modeling with single-view contrast.

    `call(images)` runs the step of the spec: embed; score patches by [CLS]
    attention (no gradient); select the masked set; encode the visible set
    (student); encode the masked set (teacher, no gradient); decode. Its
    dict output feeds `compute_loss`, which every backend's `train_step`
    calls, so `compile(optimizer)` + `fit(images)` trains it anywhere.

    MAE is the configuration `masking="random", contrastive="none"`: no
    scoring pass and no teacher pass are executed.

    Args:
        encoder: a `ViTEncoder`.
        decoder_hidden_dim: decoder width.
        decoder_num_layers: decoder blocks.
        decoder_num_heads: decoder attention heads.
        mask_ratio: fraction of patches masked.
        masking: `"importance_sampling"`, `"importance"`, `"random"` or `"block"`.
        sampler: `"gumbel"` or `"uniform_noise"` (importance sampling).
        sampling_temperature: `T_s` (with `sampling_temperature_start`, the
            value the schedule ends at).
        sampling_temperature_start: optional `T_s` of the first step; `T_s`
            then anneals along a half cosine to `sampling_temperature` over
            `sampling_temperature_steps` training steps (see `PatchSelector`).
        sampling_temperature_steps: steps of that schedule.
        score_layers: `"all"`, `"last"` or block indices.
        score_from: `"probabilities"` (the probability score, after the
            public code's rule: softmax of the summed head-averaged
            attention probabilities) or `"logits"` (the logit score, the
            paper's Section 3.2: softmax over the patch keys of the
            layer-mean head-averaged scaled logits); see `ImportanceScorer`.
        score_scale: what divides the logit score's logits: `"head_dim"`
            (`sqrt(D / num_heads)`, as the attention) or `"hidden_dim"`
            (`sqrt(D)`, the paper's formula as written). These three
            settings are the scorer's (`self.scorer`, an `ImportanceScorer`,
            their one home); the pretrainer reads them from there.
        scoring_drop_path: whether the encoder's drop path is active in
            training in the no-gradient scoring pass. Default `False`: the
            scores measure the model.
        teacher_drop_path: the same for the teacher pass. Default `False`:
            the teacher sees the whole network, as a DINO teacher does.
        teacher_updates_moving_statistics: whether the teacher pass, as the
            student's, updates the projector's BatchNorm moving statistics
            (default `True`, as SimSiam's shared projector); with `False`
            it still normalises with its own batch statistics. See
            docs/method.md for the references of these three.
        contrastive: `"infonce"`, `"infonce_cross"`, `"align"` or `"none"`.
            A contrastive term needs batches of at least 2 images.
        contrastive_weight: `lambda`.
        temperature: `tau` of the InfoNCE losses.
        projection_dim: projector output width.
        norm_pix_loss: normalise target patches.
        seed: optional int seed for masking.

    Call output (dict):
        `pred [B, N, p*p*C]`, `mask [B, N]`, `ids_keep [B, V]`,
        `ids_mask [B, K]`, `ids_restore [B, N]`, `cls_visible [B, D]`;
        with a contrastive term also `cls_masked [B, D]`, `student [B, E]`,
        `teacher [B, E]`; with importance masking `scores [B, N]`.
    """

    def __init__(
        self,
        encoder: ViTEncoder,
        decoder_hidden_dim: int = 512,
        decoder_num_layers: int = 8,
        decoder_num_heads: int = 16,
        mask_ratio: float = 0.75,
        masking: MaskingStrategy = "importance_sampling",
        sampler: Sampler = "gumbel",
        sampling_temperature: float = 1.0,
        sampling_temperature_start: float | None = None,
        sampling_temperature_steps: int = 0,
        score_layers: ScoreLayers = "all",
        score_from: ScoreSource = "probabilities",
        score_scale: ScoreScale = "head_dim",
        scoring_drop_path: bool = False,
        teacher_drop_path: bool = False,
        teacher_updates_moving_statistics: bool = True,
        contrastive: ccmim_losses.ContrastiveLoss = "infonce",
        contrastive_weight: float = 0.2,
        temperature: float = 0.5,
        projection_dim: int = 256,
        norm_pix_loss: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if not isinstance(encoder, ViTEncoder):
            raise TypeError(
                f"encoder must be a keras_ccmim ViTEncoder, got {type(encoder).__name__}."
            )
        checks.check_choice("contrastive", contrastive, ccmim_losses.CONTRASTIVE_LOSSES)
        checks.check_non_negative(
            "contrastive_weight", contrastive_weight,
            " (ccMIM uses 0.2; 0 trains the reconstruction alone.)",
        )
        checks.check_positive("temperature", temperature, " (ccMIM uses 0.5.)")
        checks.check_int("projection_dim", projection_dim, 1)
        for name, value in (("decoder_hidden_dim", decoder_hidden_dim),
                            ("decoder_num_layers", decoder_num_layers),
                            ("decoder_num_heads", decoder_num_heads)):
            checks.check_int(name, value, 1)
        if decoder_hidden_dim % decoder_num_heads or decoder_hidden_dim % 4:
            raise ValueError(
                f"decoder_hidden_dim {decoder_hidden_dim} must be divisible by "
                f"decoder_num_heads ({decoder_num_heads}) and by 4 (sin-cos position "
                "embedding)."
            )
        # The encoder first: the model's variables (its SeedGenerators among
        # them, whose order checkpoints record) follow the order of assignment.
        self.encoder = encoder
        # The selector checks the masking arguments.
        self.selector = PatchSelector(
            encoder.grid_size,
            mask_ratio=mask_ratio,
            masking=masking,
            sampler=sampler,
            sampling_temperature=sampling_temperature,
            sampling_temperature_start=sampling_temperature_start,
            sampling_temperature_steps=sampling_temperature_steps,
            seed=seed,
            name="selector",
        )
        self.decoder_hidden_dim = int(decoder_hidden_dim)
        self.decoder_num_layers = int(decoder_num_layers)
        self.decoder_num_heads = int(decoder_num_heads)
        self.mask_ratio = self.selector.mask_ratio
        self.masking = masking
        self.sampler = sampler
        self.sampling_temperature = self.selector.temperature
        self.sampling_temperature_start = self.selector.temperature_start
        self.sampling_temperature_steps = self.selector.temperature_steps
        for name, value in (
            ("scoring_drop_path", scoring_drop_path),
            ("teacher_drop_path", teacher_drop_path),
            ("teacher_updates_moving_statistics", teacher_updates_moving_statistics),
        ):
            checks.check_bool(name, value)
        self.scoring_drop_path = scoring_drop_path
        self.teacher_drop_path = teacher_drop_path
        self.teacher_updates_moving_statistics = teacher_updates_moving_statistics
        self.contrastive = contrastive
        self.contrastive_weight = float(contrastive_weight)
        self.temperature = float(temperature)
        self.projection_dim = int(projection_dim)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.seed = seed

        policy = self.dtype_policy
        # The score's settings live here alone; only importance masking calls it.
        self.scorer = ImportanceScorer(
            score_layers, score_from=score_from, score_scale=score_scale, name="scorer"
        )
        self.score_layer_indices = self.scorer.layer_indices(encoder.num_layers)
        self.decoder = MAEDecoder(
            encoder.grid_size,
            encoder.patch_size**2 * encoder.num_channels,
            hidden_dim=self.decoder_hidden_dim,
            num_layers=self.decoder_num_layers,
            num_heads=self.decoder_num_heads,
            mlp_ratio=encoder.mlp_ratio,
            layer_norm_epsilon=encoder.layer_norm_epsilon,
            dtype=policy,
            name="decoder",
        )
        self.projector = None
        self.predictor = None
        if contrastive != "none":
            self.projector = ProjectionHead(
                output_dim=self.projection_dim, dtype=policy, name="projector"
            )
            if contrastive == "align":
                self.predictor = PredictionHead(
                    output_dim=self.projection_dim, dtype=policy, name="predictor"
                )
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.contrastive_tracker = keras.metrics.Mean(name="contrastive_loss")

    @classmethod
    def from_architecture(
        cls, name: str, encoder_overrides: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> CCMIMPretrainer:
        """A pretrainer of a named architecture (encoder and decoder sizes,
        `keras_ccmim.models.presets`) with random weights.

        `encoder_overrides` change encoder arguments (e.g. `drop_path_rate`);
        other keyword arguments are the pretrainer's and win over the
        architecture's decoder size.
        """
        preset = get_preset(name)
        encoder_config = dict(preset["encoder"], **(encoder_overrides or {}))
        decoder = preset["decoder"]
        kwargs.setdefault("decoder_hidden_dim", decoder["hidden_dim"])
        kwargs.setdefault("decoder_num_layers", decoder["num_layers"])
        kwargs.setdefault("decoder_num_heads", decoder["num_heads"])
        encoder = ViTEncoder(**encoder_config, name="encoder")
        return cls(encoder, **kwargs)

    @classmethod
    def from_preset(cls, preset: PathLike) -> CCMIMPretrainer:
        """A trained pretrainer from a preset folder or handle (e.g. a
        converted ccMIM checkpoint, `ccmim-convert-mae`), built, with its
        weights. An architecture name is refused: `from_architecture`."""
        return load_from_preset(preset, cls)

    # -- the score's settings, read from the scorer ---------------------------

    @property
    def score_layers(self) -> ScoreLayers:
        return self.scorer.score_layers

    @property
    def score_from(self) -> ScoreSource:
        return self.scorer.score_from

    @property
    def score_scale(self) -> ScoreScale:
        return self.scorer.score_scale

    # -- shapes --------------------------------------------------------------

    @property
    def num_masked(self) -> int:
        return self.selector.num_masked

    @property
    def num_visible(self) -> int:
        return self.selector.num_visible

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        enc = self.encoder
        h, w = enc.image_size
        shapes = [
            (enc, (None, h, w, enc.num_channels)),
            (self.selector, (None, enc.num_patches, enc.hidden_dim)),
            (self.decoder, (None, 1 + self.num_visible, enc.hidden_dim)),
            (self.projector, (None, enc.hidden_dim)),
            (self.predictor, (None, self.projection_dim)),
        ]
        for layer, shape in shapes:
            if layer is not None and not layer.built:
                layer.build(shape)
        self.built = True

    def get_build_config(self) -> dict[str, Any]:
        enc = self.encoder
        return {"input_shape": (None,) + tuple(enc.image_size) + (enc.num_channels,)}

    def build_from_config(self, config: Mapping[str, Any]) -> None:
        self.build(config.get("input_shape"))

    # -- the step ------------------------------------------------------------

    def score_patches(
        self, patch_tokens: Tensor, training: bool | None = None
    ) -> dict[str, Tensor]:
        """ccMIM step 2: importance scores from [CLS] attention, no gradient.

        Drop path is active here only with `scoring_drop_path=True`."""
        scorer = self.scorer
        with backend_specific.no_grad():
            maps = self.encoder.cls_attention(
                ops.stop_gradient(patch_tokens),
                self.score_layer_indices,
                kind=scorer.score_from,
                scale=scorer.score_scale,
                training=training if self.scoring_drop_path else False,
            )
            result = scorer(maps)
        return {key: ops.stop_gradient(value) for key, value in result.items()}

    def call(self, images: Tensor, training: bool | None = None) -> dict[str, Tensor]:
        self._check_images(images)
        if self.projector is not None and training:
            self._check_contrastive_batch(images.shape[0])
        tokens = self.encoder.embed(images)
        outputs = {}
        scores = attention_sum = None
        if self.selector.needs_scores:
            scored = self.score_patches(tokens, training=training)
            scores, attention_sum = scored["scores"], scored["attention_sum"]
            outputs["scores"] = scores
        selection = self.selector(
            tokens, scores=scores, attention_sum=attention_sum, training=training
        )
        outputs.update(selection)

        latent = self.encoder.encode(tokens, selection["ids_keep"], training=training)
        outputs["cls_visible"] = latent[:, 0]
        outputs["pred"] = self.decoder(latent, selection["ids_restore"], training=training)

        if self.projector is not None:
            student = self.projector(latent[:, 0], training=training)
            if self.predictor is not None:
                student = self.predictor(student, training=training)
            with backend_specific.no_grad():
                teacher_latent = self.encoder.encode(
                    ops.stop_gradient(tokens),
                    selection["ids_mask"],
                    training=training if self.teacher_drop_path else False,
                )
                cls_masked = ops.stop_gradient(teacher_latent[:, 0])
                teacher = ops.stop_gradient(
                    self.projector(
                        cls_masked,
                        training=training,
                        update_moving_statistics=self.teacher_updates_moving_statistics,
                    )
                )
            outputs.update(cls_masked=cls_masked, student=student, teacher=teacher)
        return outputs

    def _check_contrastive_batch(self, batch_size):
        """Refuses a batch of one image with a contrastive term when its size
        is known while tracing (not in a TensorFlow graph with a `None` batch
        dimension; see docs/method.md). Several `tf.distribute` replicas may
        hold one image each: the losses gather the global batch."""
        if batch_size is None or batch_size >= 2:
            return
        if backend_specific.cross_replica_gather() is not None:
            return
        raise ValueError(
            f"contrastive={self.contrastive!r} needs at least 2 images per batch, got a "
            f"batch of {batch_size}: InfoNCE needs the other images as negatives and the "
            "projector's BatchNorm needs two samples (one normalises to exactly 0, so the "
            "contrastive loss would be silently 0). Use a batch size of at least 2 and drop "
            "a last partial batch of one image, or contrastive='none'."
        )

    def _check_images(self, images):
        shape = tuple(images.shape)
        expected = tuple(self.encoder.image_size) + (self.encoder.num_channels,)
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            raise ValueError(
                f"Expected images of shape [batch, {expected[0]}, {expected[1]}, "
                f"{expected[2]}], got {list(shape)}. Resize the input pipeline to "
                f"the encoder's image_size or build the model for this size."
            )

    def compute_loss(
        self,
        x: Tensor | Sequence[Tensor] | None = None,
        y: Any = None,
        y_pred: Mapping[str, Tensor] | None = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Tensor:
        images = x[0] if isinstance(x, (tuple, list)) else x
        target = patchify(images, self.encoder.patch_size)
        reconstruction = ccmim_losses.reconstruction_loss(
            target, y_pred["pred"], y_pred["mask"], self.norm_pix_loss
        )
        total = reconstruction
        if self.projector is not None:
            self._check_contrastive_batch(y_pred["student"].shape[0])
            # Under tf.distribute the negatives are gathered from every
            # replica, so they come from the global batch on every backend.
            contrastive = ccmim_losses.contrastive_loss(
                self.contrastive, y_pred["student"], y_pred["teacher"], self.temperature,
                cross_replica=backend_specific.cross_replica_gather(),
            )
            total = total + self.contrastive_weight * contrastive
        else:
            contrastive = ops.zeros((), "float32")
        if self.losses:
            total = total + ops.cast(ops.sum(self.losses), "float32")
        self.reconstruction_tracker.update_state(reconstruction)
        self.contrastive_tracker.update_state(contrastive)
        return backend_specific.scale_loss_for_replicas(total)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder_hidden_dim": self.decoder_hidden_dim,
                "decoder_num_layers": self.decoder_num_layers,
                "decoder_num_heads": self.decoder_num_heads,
                "mask_ratio": self.mask_ratio,
                "masking": self.masking,
                "sampler": self.sampler,
                "sampling_temperature": self.sampling_temperature,
                "sampling_temperature_start": self.sampling_temperature_start,
                "sampling_temperature_steps": self.sampling_temperature_steps,
                "score_layers": self.score_layers,
                "score_from": self.score_from,
                "score_scale": self.score_scale,
                "scoring_drop_path": self.scoring_drop_path,
                "teacher_drop_path": self.teacher_drop_path,
                "teacher_updates_moving_statistics": self.teacher_updates_moving_statistics,
                "contrastive": self.contrastive,
                "contrastive_weight": self.contrastive_weight,
                "temperature": self.temperature,
                "projection_dim": self.projection_dim,
                "norm_pix_loss": self.norm_pix_loss,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CCMIMPretrainer:
        """Rebuilds a pretrainer from `get_config()`. A config saved before
        the passes' drop path became a choice (no `scoring_drop_path` or
        `teacher_drop_path`) had it active in both passes, and keeps it."""
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config.setdefault("scoring_drop_path", True)
        config.setdefault("teacher_drop_path", True)
        return cls(**config)
