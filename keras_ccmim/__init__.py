"""keras-ccmim: ccMIM self-supervised ViT pretraining for Keras 3.

ccMIM masks the patches that the [CLS] attention finds important (sampled,
not greedy), reconstructs them MAE-style from the rest, and regularises
[CLS] with a single-view contrastive loss between the visible and the
masked set. The same code runs on TensorFlow, JAX and PyTorch
(`KERAS_BACKEND`).

Where things are:

- `keras_ccmim.ViTEncoder`, `keras_ccmim.CCMIMPretrainer`: the models
  (`keras_ccmim.models`; their layers in `keras_ccmim.layers`, the losses in
  `keras_ccmim.losses`).
- `keras_ccmim.training`: `pretrain(config)`, `PretrainConfig`, the recipes
  (`load_recipe("demo")`), checkpoints and exact resume.
- `keras_ccmim.data`: `make_dataset` (`synthetic_objects`, `folder:/path`,
  TFDS).
- `keras_ccmim.evaluation`: k-NN, linear probe, fine-tuning, SavedModel
  export, pictures.
- `keras_ccmim.conversion`: MAE checkpoints in, timm / MAE state dicts out.
- `keras_ccmim.cli`: the `ccmim-*` programs.

`import keras_ccmim` loads only the models, layers and losses (no
TensorFlow); the other subpackages are imported by name.
"""

from keras_ccmim import layers, losses, models
from keras_ccmim.models import CCMIMPretrainer, ViTEncoder

__all__ = ["CCMIMPretrainer", "ViTEncoder", "layers", "losses", "models"]
__version__ = "0.2.0"
