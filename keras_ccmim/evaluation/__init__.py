"""Evaluating pretrained encoders: features, k-NN, linear probe, fine-tuning
(a classifier or a segmenter), SavedModel export and reconstruction pictures.

Protocols follow MAE / ccMIM (see the spec's "Recipes"): the image feature is
the mean patch embedding by default; k-NN is cosine with k=20 and T=0.07; the
linear probe is BatchNorm without affine + Dense on frozen features;
fine-tuning uses layer-wise lr decay, drop path, RandAugment, MixUp/CutMix
and label smoothing.

The names below load on first use (PEP 562), so that features, k-NN and the
linear probe import without TensorFlow, as on a machine that has only JAX or
torch.
"""

from typing import TYPE_CHECKING

from keras_ccmim.lazy_exports import lazy_exports

if TYPE_CHECKING:  # for type checkers and Bazel's deps; at run time `__getattr__` loads them
    from keras_ccmim.evaluation.encoders import (
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
    from keras_ccmim.evaluation.finetune import FinetuneResult, finetune
    from keras_ccmim.evaluation.finetune_run import FinetuneConfigError
    from keras_ccmim.models.vit_classifier import ViTClassifier, layer_ids
    from keras_ccmim.models.vit_encoder import load_encoder
    from keras_ccmim.training.optimizer import LayerDecayAdamW, layer_decay_scales
    from keras_ccmim.evaluation.knn import knn_classify, knn_scores
    from keras_ccmim.evaluation.linear_probe import (
        LinearProbeResult,
        build_linear_probe,
        linear_probe,
    )
    from keras_ccmim.evaluation.metrics import accuracies, top_k_accuracy
    from keras_ccmim.evaluation.visualize import reconstruction_grid
    from keras_ccmim.evaluation.segmentation import SegmentationResult, finetune_segmenter
    from keras_ccmim.evaluation.segmentation_metrics import (
        SegmentationScores,
        evaluate_segmenter,
        scores_from_confusion,
    )


__getattr__, __dir__, __all__ = lazy_exports(__name__)
