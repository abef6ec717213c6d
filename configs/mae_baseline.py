r"""MAE, the baseline ccMIM is measured against: the ImageNet recipe
(`imagenet_vit_base_ccmim.py`) with random masking and no contrastive loss.

MAE mode is two fields: `masking="random"` (uniformly random 75% of the
patches, so no importance scoring) and `contrastive="none"` (the
reconstruction loss alone; `contrastive_weight` is then unused). The same
`:runlocal` switch shrinks it to a smoke run:

    python train/pretrain.py --config=configs/mae_baseline.py \
        --data_dir=<folder holding the TFDS datasets>
    python train/pretrain.py --config=configs/mae_baseline.py:runlocal
"""

import os

from keras_ccmim.training.config import load_recipe

CCMIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_vit_base_ccmim.py")


def get_config(arg=None):
    config = load_recipe(CCMIM + (f":{arg}" if arg else ""))
    config.update(
        masking="random",
        contrastive="none",
        workdir=config.workdir.replace("imagenet_vit_base_ccmim", "imagenet_vit_base_mae"),
    )
    return config
