"""The pretraining budget of the key test (`tests/evaluation/
test_pretraining_helps.py`), shared with the dense-transfer study
(`benchmarks/segmentation_study.py`) so that both measure the same encoder:
ccMIM (importance sampling + InfoNCE) on synthetic_objects at 32 px with
8 px patches, width 64, 2 blocks, 1000 steps of 64 on 10,000 images.

It lives here, not in the tests, because programs never import the tests
(ARCHITECTURE.md); the tests import it.
"""

PRETRAIN_RUN = dict(
    preset="vit_tiny_patch4_32",
    image_size=32,
    patch_size=8,
    hidden_dim=64,
    num_layers=2,
    num_heads=4,
    decoder_hidden_dim=64,
    decoder_num_layers=1,
    decoder_num_heads=4,
    projection_dim=64,
    masking="importance_sampling",
    contrastive="infonce",
    num_images=10000,
    batch_size=64,
    epochs=2,
    steps_per_epoch=500,
    blr=1e-2,
    warmup_epochs=0.2,
    lift_images=16,
    tensorboard_every_steps=0,
    seed=0,
    verbose=0,
)
ENCODER_FIELDS = ("image_size", "patch_size", "hidden_dim", "num_layers", "num_heads")
PRETRAIN_ENCODER = {k: PRETRAIN_RUN[k] for k in ENCODER_FIELDS}
