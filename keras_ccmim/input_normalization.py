"""The per-channel mean and standard deviation images are normalised with.

ImageNet's, as MAE and timm use, on RGB values scaled to `[0, 1]`: the input
pipelines (`keras_ccmim.data`) apply them, and an export to timm's naming
records them beside the weights (`keras_ccmim.conversion.export_timm`).
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
