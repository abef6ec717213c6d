r"""The README demo: a short ccMIM pretraining of ViT-T/4 on `synthetic_objects`.

The `vit_tiny_patch4_32` preset (32 px, patch 4, 192 wide, 12 blocks;
decoder 128 x 2) on 3,072 generated images, 2 epochs of 48 steps at batch
64. It is `ccmim-pretrain`'s default recipe, so these run the same:

    ccmim-pretrain --workdir=runs/demo
    ccmim-pretrain --config=demo --workdir=runs/demo

The demo trains at blr 1.5e-3 with a half-epoch warmup: at batch 64 and for
96 steps, the paper's 1.5e-4 barely moves the weights.
"""

from keras_ccmim.training.config import recipe


def get_config(arg=None):
    del arg  # the demo has no variants
    return recipe(
        preset="vit_tiny_patch4_32",
        dataset="synthetic_objects",  # num_images None: 3,072 images
        batch_size=64,
        epochs=2,
        blr=1.5e-3,
        warmup_epochs=0.5,
    )
