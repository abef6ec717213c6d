import keras
import numpy as np
import pytest

from keras_ccmim import CCMIMPretrainer
from tests.testing_utils import (
    constructor_config,
    is_grad_recording,
    loss_grads_wrt_trainable,
    save_and_load_keras,
    serialization_round_trip,
    tiny_pretrainer,
    to_numpy,
)

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml


def smooth_images(n, size=16, seed=0):
    """Oriented sinusoids: each image's patches share one frequency and
    direction, so masked patches are predictable from visible ones."""
    rng = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    freq = rng.uniform(0.3, 0.8, (n, 1, 1, 1))
    angle = rng.uniform(0, np.pi, (n, 1, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 3))
    wave = freq * (np.cos(angle) * xx[None, ..., None] + np.sin(angle) * yy[None, ..., None])
    return np.sin(wave + phase).astype("float32")


@pytest.mark.parametrize(
    "kwargs,keys",
    [
        ({}, {"scores", "cls_masked", "student", "teacher"}),
        ({"masking": "random", "contrastive": "none"}, set()),
        ({"masking": "block", "contrastive": "align"}, {"cls_masked", "student", "teacher"}),
        ({"masking": "importance", "contrastive": "infonce_cross", "score_layers": "last"},
         {"scores", "cls_masked", "student", "teacher"}),
    ],
)
def test_call_outputs(kwargs, keys):
    model = tiny_pretrainer(**kwargs)
    out = model(smooth_images(4), training=True)
    base = {"pred", "mask", "ids_keep", "ids_mask", "ids_restore", "cls_visible"}
    assert set(out) == base | keys
    assert tuple(out["pred"].shape) == (4, 16, 48)
    assert tuple(out["ids_keep"].shape) == (4, 4) and tuple(out["ids_mask"].shape) == (4, 12)
    assert to_numpy(out["mask"]).sum(1).tolist() == [12.0] * 4


def test_mae_configuration_runs_no_scoring_and_no_teacher_pass():
    model = tiny_pretrainer(masking="random", contrastive="none")
    calls = {"cls_attention": 0, "encode": 0}
    encoder = model.encoder
    original_attention, original_encode = encoder.cls_attention, encoder.encode

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    encoder.cls_attention = count("cls_attention", original_attention)
    encoder.encode = count("encode", original_encode)
    model.scorer.call = count("scorer", model.scorer.call)
    calls["scorer"] = 0
    model(smooth_images(2), training=True)
    # The scorer holds the score's settings but is never called, and there
    # is no projector.
    assert calls == {"cls_attention": 0, "encode": 1, "scorer": 0}
    assert not model.selector.needs_scores and model.projector is None
    del calls["scorer"]

    ccmim = tiny_pretrainer()
    encoder = ccmim.encoder
    original_attention, original_encode = encoder.cls_attention, encoder.encode
    encoder.cls_attention = count("cls_attention", original_attention)
    encoder.encode = count("encode", original_encode)
    ccmim(smooth_images(2), training=True)
    assert calls == {"cls_attention": 1, "encode": 3}


def test_scoring_and_teacher_passes_get_no_gradient():
    """The total loss's gradient is the same whether or not the teacher and
    scores are recomputed: they carry no gradient. On torch they must not
    even record an autograd graph."""
    model = tiny_pretrainer(seed=3)
    images = smooth_images(4)
    out = model(images, training=True)
    for key in ("scores", "cls_masked", "teacher"):
        assert not is_grad_recording(out[key]), key
    if keras.backend.backend() == "torch":
        assert out["student"].requires_grad and out["teacher"].grad_fn is None

    grads = loss_grads_wrt_trainable(model, lambda o: keras.ops.sum(o["teacher"]) + keras.ops.sum(o["scores"]), images)
    assert all(np.all(g == 0) for g in grads), "teacher/scores must not send gradient to any weight"
    grads = loss_grads_wrt_trainable(model, lambda o: keras.ops.sum(o["student"] ** 2), images)
    assert any(np.abs(g).max() > 0 for g in grads)


def test_fit_drives_the_loss_down():
    keras.utils.set_random_seed(0)
    model = tiny_pretrainer(seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.0))
    images = smooth_images(16)
    history = model.fit(images, batch_size=16, epochs=150, verbose=0, shuffle=False).history
    first, last = history["loss"][0], np.mean(history["loss"][-5:])
    assert np.isfinite(last)
    assert last < 0.6 * first, (first, last)
    assert {"loss", "reconstruction_loss", "contrastive_loss"} <= set(history)
    assert history["reconstruction_loss"][-1] < 0.6 * history["reconstruction_loss"][0]


def test_keras_save_and_load_give_same_outputs():
    model = tiny_pretrainer(masking="importance", contrastive="align")
    images = smooth_images(3)
    before = model(images, training=False)
    restored = save_and_load_keras(model)
    after = restored(images, training=False)
    for key in ("pred", "student", "teacher", "mask", "scores"):
        np.testing.assert_allclose(to_numpy(after[key]), to_numpy(before[key]), rtol=1e-5, atol=1e-5)
    assert constructor_config(restored.get_config()) == constructor_config(model.get_config())


def test_config_round_trip_of_the_model():
    model = tiny_pretrainer(masking="block", sampler="uniform_noise", score_layers=[0],
                            score_from="logits", score_scale="hidden_dim",
                            scoring_drop_path=True, teacher_drop_path=True,
                            teacher_updates_moving_statistics=False,
                            contrastive="infonce_cross", contrastive_weight=0.1, temperature=0.2,
                            mask_ratio=0.5, norm_pix_loss=False)
    clone = serialization_round_trip(model)
    assert isinstance(clone, CCMIMPretrainer)
    assert constructor_config(clone.get_config()) == constructor_config(model.get_config())
    assert clone.num_masked == 8
    assert (clone.score_scale, clone.scoring_drop_path, clone.teacher_drop_path,
            clone.teacher_updates_moving_statistics) == ("hidden_dim", True, True, False)


def test_score_settings_live_in_the_scorer_alone():
    model = tiny_pretrainer(score_layers=[1], score_from="logits", score_scale="hidden_dim")
    scorer = model.scorer
    assert (scorer.score_layers, scorer.score_from, scorer.score_scale) == ([1], "logits", "hidden_dim")
    assert (model.score_layers, model.score_from, model.score_scale) == ([1], "logits", "hidden_dim")
    for name in ("score_layers", "score_from", "score_scale"):
        with pytest.raises(AttributeError):
            setattr(model, name, "all" if name == "score_layers" else "probabilities")
    # The step scores with the scorer's settings: the logit score over the
    # patch keys, scaled by sqrt(D), at block 1 only.
    images = smooth_images(2)
    scores = model(images)["scores"]
    tokens = model.encoder.embed(images)
    maps = model.encoder.cls_attention(tokens, [1], kind="logits", scale="hidden_dim")
    np.testing.assert_allclose(to_numpy(scores), to_numpy(keras.ops.softmax(maps[0], axis=-1)),
                               rtol=1e-5, atol=1e-7)
    config = model.get_config()
    assert (config["score_layers"], config["score_from"], config["score_scale"]) == (
        [1], "logits", "hidden_dim")


def test_a_config_saved_before_the_new_arguments_still_loads():
    """Presets on disk hold `score_from` and `score_layers` at the
    pretrainer's level and none of the later arguments; their passes had
    drop path active, and keep it."""
    config = constructor_config(tiny_pretrainer(score_from="logits", score_layers="last").get_config())
    for key in ("score_scale", "scoring_drop_path", "teacher_drop_path",
                "teacher_updates_moving_statistics"):
        del config[key]
    model = CCMIMPretrainer.from_config(config)
    assert (model.score_from, model.score_layers, model.score_scale) == ("logits", "last", "head_dim")
    assert model.scoring_drop_path and model.teacher_drop_path
    assert model.teacher_updates_moving_statistics


@pytest.mark.parametrize("scoring_drop_path,teacher_drop_path",
                         [(False, False), (True, False), (False, True)])
def test_drop_path_in_the_scoring_and_teacher_passes(scoring_drop_path, teacher_drop_path):
    """With drop path 0.5, a pass without drop path gives the same result on
    every call, and the inference pass's; with drop path it does not.
    Top-K masking, so the teacher sees the same patches whenever the scores
    agree (its check needs a scoring pass without drop path)."""
    model = tiny_pretrainer(
        masking="importance", scoring_drop_path=scoring_drop_path,
        teacher_drop_path=teacher_drop_path,
        encoder_overrides=dict(num_layers=4, drop_path_rate=0.5, seed=3),
    )
    images = smooth_images(8)
    first, second = model(images, training=True), model(images, training=True)
    clean = model(images, training=False)
    checks = [("scores", scoring_drop_path)]
    if not scoring_drop_path:
        checks.append(("cls_masked", teacher_drop_path))
    for key, noisy in checks:
        gap = np.abs(to_numpy(first[key]) - to_numpy(second[key])).max()
        if noisy:
            assert gap > 1e-4, key
        else:
            assert gap == 0.0, (key, gap)
            np.testing.assert_allclose(to_numpy(first[key]), to_numpy(clean[key]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("teacher_updates", [True, False])
def test_projector_moving_statistics_from_the_student_or_both(teacher_updates):
    """The projector's BatchNorm moving statistics after one training call
    are those of a copy of the projector fed the student's [CLS] only, or
    the student's and then the teacher's; the teacher's output is the same
    either way (it normalises with its own batch statistics)."""
    from keras_ccmim.layers import ProjectionHead

    images = smooth_images(8)
    model = tiny_pretrainer(masking="importance",
                            teacher_updates_moving_statistics=teacher_updates)
    other = tiny_pretrainer(masking="importance",
                            teacher_updates_moving_statistics=not teacher_updates)
    model(images)
    other(images)
    other.set_weights(model.get_weights())
    reference = ProjectionHead(output_dim=16)
    reference.build((None, 32))
    reference.set_weights(model.projector.get_weights())

    out = model(images, training=True)
    reference(out["cls_visible"], training=True)
    if teacher_updates:
        reference(out["cls_masked"], training=True)
    names = [v.path for v in model.projector.non_trainable_variables]
    assert len(names) == 4 and all("moving" in n for n in names), names
    for got, want in zip(model.projector.non_trainable_variables,
                         reference.non_trainable_variables):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-6)
    # One more fed batch moves the statistics measurably: the check above
    # can tell one update from two.
    before = [to_numpy(v) for v in reference.non_trainable_variables]
    reference(out["cls_masked"], training=True)
    assert max(np.abs(to_numpy(v) - b).max()
               for v, b in zip(reference.non_trainable_variables, before)) > 1e-4

    np.testing.assert_allclose(to_numpy(other(images, training=True)["teacher"]),
                               to_numpy(out["teacher"]), rtol=1e-5, atol=1e-5)


def test_who_updates_the_moving_statistics_changes_no_trained_weight():
    """Training normalises with batch statistics, so the choice changes the
    projector's moving statistics only: after the same steps every trainable
    weight is the same either way."""
    trained = {}
    for teacher_updates in (True, False):
        keras.utils.set_random_seed(0)
        model = tiny_pretrainer(seed=0, teacher_updates_moving_statistics=teacher_updates)
        model.compile(optimizer=keras.optimizers.AdamW(3e-3))
        model.fit(smooth_images(8), batch_size=4, epochs=1, verbose=0, shuffle=False)
        trained[teacher_updates] = model
    for got, want in zip(trained[False].trainable_weights, trained[True].trainable_weights):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=0, atol=1e-6)
    gaps = [np.abs(to_numpy(a) - to_numpy(b)).max() for a, b in zip(
        trained[False].projector.non_trainable_weights, trained[True].projector.non_trainable_weights)]
    assert max(gaps) > 1e-4


def test_a_batch_of_one_is_refused_with_a_contrastive_loss():
    import tensorflow as tf

    model = tiny_pretrainer()
    one = smooth_images(1)
    message = "needs at least 2 images per batch"
    with pytest.raises(ValueError, match=message):
        model(one, training=True)
    with pytest.raises(ValueError, match=message):  # evaluate's loss, from inference outputs
        model.compute_loss(one, y_pred=model(one), training=False)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    batches = tf.data.Dataset.from_tensor_slices(smooth_images(3)).batch(1, drop_remainder=True)
    with pytest.raises(ValueError, match=message):
        model.fit(batches, epochs=1, verbose=0)
    # Two images train; without a contrastive term one image does too.
    model = tiny_pretrainer()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit(smooth_images(2), batch_size=2, epochs=1, verbose=0)
    tiny_pretrainer(masking="random", contrastive="none")(one, training=True)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="Unknown contrastive"):
        tiny_pretrainer(contrastive="byol")
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_pretrainer(mask_ratio=0.0)
    with pytest.raises(TypeError, match="ViTEncoder"):
        CCMIMPretrainer(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="scoring_drop_path must be True or False"):
        tiny_pretrainer(scoring_drop_path="no")
    with pytest.raises(ValueError, match="applies to the logit score only"):
        tiny_pretrainer(score_scale="hidden_dim")
    model = tiny_pretrainer()
    with pytest.raises(ValueError, match="Expected images of shape"):
        model(np.zeros((2, 32, 32, 3), "float32"))


def test_from_architecture():
    model = CCMIMPretrainer.from_architecture(
        "vit_tiny_patch4_32", encoder_overrides={"num_layers": 2}
    )
    assert model.decoder.hidden_dim == 128 and model.encoder.num_layers == 2
    assert model.num_masked == 48 and model.num_visible == 16


def test_mixed_bfloat16_trains_with_float32_weights_and_losses():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny_pretrainer(seed=0)
    finally:
        keras.config.set_dtype_policy("float32")
    model.compile(optimizer=keras.optimizers.AdamW(3e-3))
    history = model.fit(smooth_images(16), batch_size=16, epochs=20, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    out = model(smooth_images(2))
    assert keras.backend.standardize_dtype(out["pred"].dtype) == "bfloat16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in model.trainable_weights)


def test_the_seed_generators_keep_their_order():
    # Checkpoints record the SeedGenerator states in model order, and the
    # masking figures seed them by position (`fixed_seeds`): the encoder's
    # generators come first, then the selector's, as in earlier versions.
    from keras_ccmim.training.exact_resume import seed_states

    model = tiny_pretrainer(seed=0)
    model.build()
    states = [id(v) for v in seed_states(model)]
    encoder = [id(v) for v in seed_states(model.encoder)]
    assert len(encoder) == model.encoder.num_layers  # one per block's drop path
    assert states[:len(encoder)] == encoder
    assert states[len(encoder)] == id(model.selector.seed_generator.state)
