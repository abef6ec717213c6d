# %% [markdown]
# # ccMIM pretraining with `model.fit`
#
# The pieces of `keras_ccmim.training` used directly, as in a notebook: a
# `tf.data` pipeline from `keras_ccmim.data`, a `CCMIMPretrainer`, AdamW with
# MAE's decay rule and a warmup + cosine schedule, and `fit` with the
# foreground-lift and CSV callbacks. It runs on every Keras backend (set
# `KERAS_BACKEND` before importing keras) and takes well under a minute on a
# CPU: the model and the data are tiny. For a full run with checkpoints and
# resume, call `keras_ccmim.training.pretrain(PretrainConfig(...))` or
# `train/pretrain.py` instead.

# %%
import os

import keras

from keras_ccmim import data, training
from keras_ccmim.models import CCMIMPretrainer

OUTPUT_DIR = os.environ.get("OUTPUT_DIR", "runs/notebook")
os.makedirs(OUTPUT_DIR, exist_ok=True)
keras.utils.set_random_seed(0)

IMAGE_SIZE, PATCH_SIZE = 16, 4
BATCH_SIZE, EPOCHS, STEPS_PER_EPOCH = 32, 2, 4

# %% [markdown]
# Batches of `(images, extras)`: normalised images `[B, 16, 16, 3]` and, for
# `synthetic_objects`, the foreground masks in `extras["foreground"]`. The
# pretrainer's loss ignores the extras. A fixed evaluation batch feeds the
# foreground-lift callback and the picture.

# %%
train_data = data.make_dataset(
    "synthetic_objects",
    split="train",
    batch_size=BATCH_SIZE,
    image_size=IMAGE_SIZE,
    num_images=512,
    repeat=True,
)
images, extras = next(
    iter(
        data.make_dataset(
            "synthetic_objects",
            split="test",
            batch_size=32,
            image_size=IMAGE_SIZE,
            num_images=32,
            training=False,
        )
    )
)
images, foreground = images.numpy(), extras["foreground"].numpy()

# %% [markdown]
# A small ViT (64 wide, 2 blocks) with the ccMIM defaults: importance
# sampling from [CLS] attention, InfoNCE between the visible and the masked
# set (lambda 0.2, tau 0.5), mask ratio 0.75.

# %%
model = CCMIMPretrainer.from_preset(
    "vit_tiny_patch4_32",
    encoder_overrides=dict(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_dim=64, num_layers=2, num_heads=2
    ),
    decoder_hidden_dim=64,
    decoder_num_layers=1,
    decoder_num_heads=2,
    projection_dim=64,
    seed=0,
)
model.build()
schedule = training.warmup_cosine(
    training.scaled_learning_rate(1.5e-3, BATCH_SIZE),
    warmup_steps=STEPS_PER_EPOCH,
    total_steps=EPOCHS * STEPS_PER_EPOCH,
)
model.compile(optimizer=training.make_optimizer(model, schedule, weight_decay=0.05))

# %%
history = model.fit(
    train_data,
    epochs=EPOCHS,
    steps_per_epoch=STEPS_PER_EPOCH,
    callbacks=[
        training.ForegroundLift(images, foreground, PATCH_SIZE),  # before the CSV writer
        training.MetricsCSV(os.path.join(OUTPUT_DIR, "metrics.csv")),
    ],
    verbose=2,
)
print({name: [round(v, 4) for v in values] for name, values in history.history.items()})

# %% [markdown]
# The masks the model chooses now: each column is an image, the same image
# with its masked patches in grey, and the importance scores (brighter =
# more likely masked).

# %%
outputs = model.predict_on_batch(images)
picture = training.save_mask_picture(
    os.path.join(OUTPUT_DIR, "masks.png"), images, outputs, PATCH_SIZE
)
# The encoder as a preset (keras-hub's layout): ViTEncoder.from_preset(folder).
model.encoder.save_to_preset(os.path.join(OUTPUT_DIR, "encoder"))
print("Saved", picture, "and the encoder preset in", os.path.join(OUTPUT_DIR, "encoder"))
