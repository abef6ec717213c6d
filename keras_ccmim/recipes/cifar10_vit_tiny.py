r"""The CIFAR-10 study's pretraining (`benchmarks/cifar10_study.py`, variant `ccmim`).

ViT-T/4 (`vit_tiny_patch4_32`, 32 px) on `cifar10_jpeg` `train[:45000]`
(`train[45000:]` is the study's held-out evaluation split), one pass over
the 45,000 images at batch 128, blr 1.5e-3 with a warmup of a fifth of it.
As in the study, the pass is logged as 8 Keras epochs of 43 steps (the
curves' resolution; the warmup, 0.2 of the pass, is 1.6 of them). The
TFDS folder must be given:

    ccmim-pretrain --config=cifar10_vit_tiny --workdir=runs/cifar10 \
        --config.data_dir=<folder holding the TFDS datasets>

The study's ablations are overrides, e.g. `--config.masking=random
--config.contrastive=none` (MAE) or `--config.score_from=logits`.
"""

from keras_ccmim.training.config import recipe

IMAGES = 45000
BATCH_SIZE = 128
POINTS_PER_EPOCH = 8  # the study's --points_per_epoch


def get_config(arg=None):
    del arg  # no variants: ablations are --config.<field> overrides
    return recipe(
        preset="vit_tiny_patch4_32",
        dataset="cifar10_jpeg",
        data_dir=None,  # must be given: --config.data_dir
        split="train[:45000]",
        num_images=IMAGES,
        batch_size=BATCH_SIZE,
        epochs=1 * POINTS_PER_EPOCH,
        steps_per_epoch=IMAGES // BATCH_SIZE // POINTS_PER_EPOCH,
        blr=1.5e-3,
        warmup_epochs=0.2 * POINTS_PER_EPOCH,
        seed=0,
        verbose=2,
        tensorboard_every_steps=0,
    )
