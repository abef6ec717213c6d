"""The two segmentation protocols of dense transfer on
`synthetic_objects_foreground` (figure-ground: background / object) at 32
px, shared by the dense-transfer study (`benchmarks/segmentation_study.py`)
and the test that pretraining helps (`tests/evaluation/
test_segmentation_helps.py`), so that both measure the same thing.

* `FINETUNE`: the encoder fine-tuned with the FPN head (layer decay 0.65,
  drop path 0.1), 50 steps of 32: the paper's protocol, scaled down. After
  so few steps many pixels sit near the decision boundary, so its scores
  swing with the fine-tuning seed and the backend (README, "Dense
  transfer").
* `LINEAR_PROBE`: the encoder frozen and only the linear head trained
  (a linear map from each patch's features to its pixels' logits), 400 steps
  of 64: a convex problem, so the scores depend on the features and hardly
  on the seed or the backend.

Figure-ground rather than the 11 classes of `synthetic_objects`: each shape
class holds about 2% of the pixels, and in runs this short (200 fine-tuning
steps, measured) every encoder labels all pixels background.

It lives here, not in the tests, because programs never import the tests
(ARCHITECTURE.md); the tests import it.
"""

COMMON = dict(dataset="synthetic_objects_foreground", image_size=32, train_num_images=2000)
FINETUNE = dict(COMMON, epochs=2, steps_per_epoch=25, warmup_epochs=0.5, batch_size=32,
                base_learning_rate=1e-3, head_dim=32, check_every_steps=25)
LINEAR_PROBE = dict(COMMON, head="linear", freeze_encoder=True, epochs=2, steps_per_epoch=200,
                    warmup_epochs=0.1, batch_size=64, base_learning_rate=1e-2,
                    weight_decay=0.0, check_every_steps=200)
PROTOCOLS = {"finetune": FINETUNE, "linear_probe": LINEAR_PROBE}
SCORES = ("miou", "aacc", "macc")


def measure(encoder, protocol="linear_probe", seed=0, eval_num_images=300, **overrides):
    """mIoU, aAcc and mAcc (percent) of `encoder` under `protocol` (a key
    of `PROTOCOLS`) with fine-tuning `seed`, on `eval_num_images` images of
    the "test" split; `overrides` replace the protocol's
    `finetune_segmenter` arguments (a smaller run for a smoke test)."""
    from keras_ccmim.evaluation.segmentation import finetune_segmenter

    run = dict(PROTOCOLS[protocol], **overrides)
    result = finetune_segmenter(encoder, seed=seed, eval_num_images=eval_num_images, **run)
    return {name: getattr(result, name) for name in SCORES}
