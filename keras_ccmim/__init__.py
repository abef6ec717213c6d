"""keras-ccmim: ccMIM self-supervised ViT pretraining for Keras 3.

Runs unchanged on the TensorFlow, JAX and PyTorch backends.
"""

from keras_ccmim import layers, losses, models
from keras_ccmim.models import CCMIMPretrainer, ViTEncoder

__version__ = "0.1.0"
