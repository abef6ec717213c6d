"""`finetune_segmenter`: a tiny fine-tuning run, its outputs, resuming and
refusals."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from keras_ccmim.evaluation.finetune_run import FinetuneConfigError
from keras_ccmim.evaluation.segmentation import finetune_segmenter

# Seconds on TensorFlow and torch, but over a minute on JAX (it compiles the
# train and predict steps of three models): see the `slow` marker in pyproject.toml.
pytestmark = pytest.mark.slow

TINY_RUN = dict(image_size=16, train_num_images=32, eval_num_images=8, epochs=2,
                steps_per_epoch=2, warmup_epochs=0.5, batch_size=8, base_learning_rate=1e-3,
                head_dim=8, check_every_steps=1)


def test_tiny_run_writes_its_outputs_and_resumes(tiny_encoder, tmp_path, caplog):
    output_dir = tmp_path / "segment"
    result = finetune_segmenter(tiny_encoder, output_dir=str(output_dir), **TINY_RUN)
    assert result.global_step == 4 and result.initial_step == 0
    assert result.num_classes == 11 and result.num_eval == 8
    assert result.num_pixels == 8 * 16 * 16
    assert 0 <= result.miou <= 100 and 0 <= result.macc <= 100 and 0 <= result.aacc <= 100
    assert result.history["epoch"] == [1, 2] and result.best_epoch in (1, 2)
    saved = json.loads((output_dir / "results.json").read_text())
    assert saved["miou"] == result.miou and len(saved["per_class_iou"]) == 11
    picture = np.asarray(Image.open(output_dir / "predictions.png"))
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0] / 2
    assert (output_dir / "segmenter.keras").exists()
    # The same call again: already finished, nothing trained, same scores.
    with caplog.at_level(logging.INFO, logger="keras_ccmim.evaluation.segmentation"):
        again = finetune_segmenter(tiny_encoder, output_dir=str(output_dir), **TINY_RUN)
    assert again.initial_step == 4 and again.miou == pytest.approx(result.miou)
    # The summary is logged (the binary shows it on stderr).
    assert (f"Segmentation fine-tuned for 4 steps: mIoU {again.miou:.2f}, aAcc "
            f"{again.aacc:.2f}, mAcc {again.macc:.2f} on 8 images; segmenter saved to "
            f"{output_dir / 'segmenter.keras'}.") in caplog.text
    with pytest.raises(FinetuneConfigError, match=r"segmentation run.*epochs"):
        finetune_segmenter(tiny_encoder, output_dir=str(output_dir), **dict(TINY_RUN, epochs=3))
    # A folder written before `head` and `freeze_encoder` existed holds an FPN
    # fine-tuning: it still resumes, and is still refused to the linear probe.
    config_path = output_dir / "segment_config.json"
    saved = json.loads(config_path.read_text())
    assert (saved["head"], saved["freeze_encoder"]) == ("fpn", False)
    del saved["head"], saved["freeze_encoder"]
    config_path.write_text(json.dumps(saved))
    older = finetune_segmenter(tiny_encoder, output_dir=str(output_dir), **TINY_RUN)
    assert older.initial_step == 4
    config_path.write_text(json.dumps(saved))
    with pytest.raises(FinetuneConfigError, match=r"head: 'fpn' -> 'linear'"):
        finetune_segmenter(tiny_encoder, output_dir=str(output_dir), head="linear", **TINY_RUN)


def test_bad_image_size_and_warmup(tiny_encoder):
    with pytest.raises(ValueError, match="multiple of the encoder's patch size 4"):
        finetune_segmenter(tiny_encoder, **dict(TINY_RUN, image_size=18))
    with pytest.raises(ValueError, match="warmup_epochs"):
        finetune_segmenter(tiny_encoder, **dict(TINY_RUN, warmup_epochs=2))


def test_linear_probe_trains_the_head_alone(tiny_encoder):
    """`head="linear", freeze_encoder=True`: the encoder's weights stay as
    they were, the head's change."""
    import keras

    from keras_ccmim.evaluation.segmentation import build_segmenter
    from tests.testing_utils import to_numpy

    before = [to_numpy(w).copy() for w in tiny_encoder.weights]
    result = finetune_segmenter(tiny_encoder, head="linear", freeze_encoder=True, **TINY_RUN)
    model = result.model
    assert model.head == "linear" and not model.encoder.trainable
    assert model.encoder.drop_path_rate == 0.0
    trained = [v.path for v in model.trainable_variables]
    assert trained == [model.classifier.kernel.path, model.classifier.bias.path]
    # The probe's copy of the encoder is the one given, unchanged by training.
    for source, copy in zip(before, model.encoder.weights):
        if "position_embedding" not in copy.path:
            np.testing.assert_array_equal(source, to_numpy(copy))
    # The head starts where finetune_segmenter() built it (seeded) and has moved.
    keras.utils.set_random_seed(0)
    start = build_segmenter(tiny_encoder, 11, 16, head="linear", freeze_encoder=True)
    moved = np.abs(to_numpy(start.classifier.kernel) - to_numpy(model.classifier.kernel))
    assert moved.max() > 1e-3
