r"""MAE, the baseline ccMIM is measured against: the ImageNet recipe
(`imagenet_vit_base_ccmim`) with random masking and no contrastive loss.

MAE mode is two fields: `masking="random"` (uniformly random 75% of the
patches, so no importance scoring) and `contrastive="none"` (the
reconstruction loss alone; `contrastive_weight` is then unused). The same
`:runlocal` switch shrinks it to a smoke run:

    ccmim-pretrain --config=mae_baseline --workdir=runs/imagenet_mae \
        --config.data_dir=<folder holding the TFDS datasets>
    ccmim-pretrain --config=mae_baseline:runlocal --workdir=runs/smoke_mae
"""

from keras_ccmim.training.config import load_recipe


def get_config(arg=None):
    config = load_recipe("imagenet_vit_base_ccmim" + (f":{arg}" if arg else ""))
    config.update(masking="random", contrastive="none")
    return config
