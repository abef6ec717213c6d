"""The input contract of every encoder this package trains or converts.

Images are RGB, channels last, with values in `[0, 255]`; the encoder sees
them scaled to `[0, 1]` and normalised by ImageNet's channel mean and std:
`(images / 255 - IMAGENET_MEAN) / IMAGENET_STD`. The input pipelines
(`keras_ccmim.data`) and the preprocessing layer that travels with a preset
(`keras_ccmim.layers.ImageNormalization`) both read these values from here.
"""

from typing import Final

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)
VALUE_RANGE: Final = (0, 255)
CHANNEL_ORDER: Final = "rgb"
