"""The ViT encoder, classifier and segmenter, the ccMIM pretrainer, the named
architectures and the preset files of trained models."""

from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.preset_files import (
    ENCODER_PRESET,
    load_from_preset,
    load_preprocessing,
    save_to_preset,
    upload_preset,
)
from keras_ccmim.models.presets import ALIASES, PRESETS, get_preset, preset_names
from keras_ccmim.models.vit_classifier import ViTClassifier
from keras_ccmim.models.vit_encoder import ViTEncoder, load_encoder
from keras_ccmim.models.segmenter import ViTSegmenter, feature_blocks, resized_encoder
