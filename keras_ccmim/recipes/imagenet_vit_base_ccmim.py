r"""The paper's ccMIM pretraining: ImageNet-1K, ViT-B/16, 800 epochs.

As in ccMIM (ICLR 2023) and MAE: 224 px, patch 16; mask ratio 0.75 by
importance sampling (T_s = 1); normalised-pixel reconstruction plus InfoNCE
with lambda 0.2 and tau 0.5; AdamW (betas 0.9, 0.95, fixed in
`keras_ccmim.training.optimizer`; weight decay 0.05, none on biases, norms
and embeddings); `lr = blr * 4096 / 256` with blr 1.5e-4, 40 warmup epochs
then a cosine decay. These are also `PretrainConfig`'s defaults; the
recipe writes them out. The importance score is the library's default, the
probability score of the public code's rule; the paper's own (Section 3.2)
is the logit score, `--config.score_from=logits`, with
`--config.score_scale=hidden_dim` for its `sqrt(D)` as written
(`docs/method.md`). The TFDS folder holding `imagenet2012` must be
given; on fewer devices, trade batch for accumulation
(`--config.batch_size=1024 --config.accum_steps=4`):

    ccmim-pretrain --config=imagenet_vit_base_ccmim --workdir=runs/imagenet \
        --config.data_dir=<folder holding the TFDS datasets>

`:runlocal` shrinks it to a smoke run of the same recipe (a tiny ViT on a
few `synthetic_objects` images, 4 steps), small enough for a CPU:

    ccmim-pretrain --config=imagenet_vit_base_ccmim:runlocal --workdir=runs/smoke
"""

from keras_ccmim.training.config import recipe


def get_config(arg=None):
    if arg not in (None, "", "runlocal"):
        raise ValueError(f"Unknown argument {arg!r}: use no argument or ':runlocal'.")
    config = recipe(
        preset="vit_base_patch16_224",
        mask_ratio=0.75,
        masking="importance_sampling",
        sampling_temperature=1.0,
        contrastive="infonce",
        contrastive_weight=0.2,
        temperature=0.5,
        norm_pix_loss=True,
        dataset="imagenet2012",
        data_dir=None,  # must be given: --config.data_dir
        split="train",
        batch_size=4096,
        accum_steps=1,
        epochs=800,
        blr=1.5e-4,
        warmup_epochs=40,
        weight_decay=0.05,
    )
    if arg == "runlocal":
        # The same losses, masking and optimiser on a model and data that
        # fit a CPU: 16 px, patch 4, encoder 32 x 2, decoder 32 x 1.
        config.update(
            preset="vit_tiny_patch4_32",
            image_size=16,
            patch_size=4,
            hidden_dim=32,
            num_layers=2,
            num_heads=2,
            decoder_hidden_dim=32,
            decoder_num_layers=1,
            decoder_num_heads=2,
            projection_dim=16,
            dataset="synthetic_objects",
            num_images=64,
            batch_size=16,
            epochs=2,
            steps_per_epoch=2,
            warmup_epochs=0.5,
            lift_images=16,
        )
    return config
