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
    model(smooth_images(2), training=True)
    assert calls == {"cls_attention": 0, "encode": 1}
    assert model.scorer is None and model.projector is None

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
                            contrastive="infonce_cross", contrastive_weight=0.1, temperature=0.2,
                            mask_ratio=0.5, norm_pix_loss=False)
    clone = serialization_round_trip(model)
    assert isinstance(clone, CCMIMPretrainer)
    assert constructor_config(clone.get_config()) == constructor_config(model.get_config())
    assert clone.num_masked == 8


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="Unknown contrastive"):
        tiny_pretrainer(contrastive="byol")
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_pretrainer(mask_ratio=0.0)
    with pytest.raises(TypeError, match="ViTEncoder"):
        CCMIMPretrainer(keras.layers.Dense(3))
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
