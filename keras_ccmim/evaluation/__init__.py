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

import ast
import importlib
import sys
import types
from typing import TYPE_CHECKING

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
    from keras_ccmim.evaluation.visualize import (
        colourize,
        denormalize_prediction,
        reconstruction_grid,
    )
    from keras_ccmim.evaluation.segmentation import SegmentationResult, finetune_segmenter
    from keras_ccmim.evaluation.segmentation_metrics import (
        SegmentationScores,
        evaluate_segmenter,
        scores_from_confusion,
    )


def _homes():
    """{name: module} of the imports under `if TYPE_CHECKING:` above (this file
    is their one list)."""
    with open(__file__) as f:
        tree = ast.parse(f.read())
    (block,) = [node for node in tree.body
                if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    return {alias.name: node.module for node in block.body for alias in node.names}


_HOME_OF = _homes()
__all__ = sorted(_HOME_OF)


def __getattr__(name):
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`finetune` and `linear_probe` name both a module and its
    function: when such a module loads, the import system sets the package's
    attribute to the module; this binds the function instead, as the eager
    imports did."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _HOME_OF.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
