"""Evaluating pretrained encoders: features, k-NN, linear probe, fine-tuning,
SavedModel export and reconstruction pictures.

Protocols follow MAE / ccMIM (see the spec's "Recipes"): the image feature is
the mean patch embedding by default; k-NN is cosine with k=20 and T=0.07; the
linear probe is BatchNorm without affine + Dense on frozen features;
fine-tuning uses layer-wise lr decay, drop path, RandAugment, MixUp/CutMix
and label smoothing.
"""

from keras_ccmim.evaluation.encoders import (
    load_encoder,
    load_pretrainer,
    random_encoder,
    random_pretrainer,
)
from keras_ccmim.evaluation.export import export_saved_model
from keras_ccmim.evaluation.features import (
    FEATURE_NAMES,
    EncoderFeatures,
    extract_features,
    extract_saved_model_features,
    whole_batch_size,
)
from keras_ccmim.evaluation.finetune import finetune
from keras_ccmim.evaluation.finetune_result import FinetuneResult
from keras_ccmim.models.vit_classifier import ViTClassifier, layer_ids
from keras_ccmim.training.optimizer import LayerDecayAdamW, layer_decay_scales
from keras_ccmim.evaluation.knn import knn_classify, knn_scores
from keras_ccmim.evaluation.linear_probe import (
    LinearProbeResult,
    build_linear_probe,
    linear_probe,
)
from keras_ccmim.evaluation.metrics import accuracies, top_k_accuracy
from keras_ccmim.evaluation.visualize import reconstruction_grid
from keras_ccmim.evaluation.segment import SegmentResult, segment
from keras_ccmim.evaluation.segmentation_metrics import (
    SegmentationScores,
    evaluate_segmenter,
    scores_from_confusion,
)
