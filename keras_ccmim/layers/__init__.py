"""Keras layers of ccMIM: preprocessing, patching, embeddings, blocks, masking,
decoder, heads."""

from keras_ccmim.layers.contrastive_heads import PredictionHead, ProjectionHead
from keras_ccmim.layers.drop_path import DropPath
from keras_ccmim.layers.image_normalization import ImageNormalization
from keras_ccmim.layers.importance_scorer import ImportanceScorer, resolve_score_layers
from keras_ccmim.layers.layer_scale import LayerScale
from keras_ccmim.layers.mae_decoder import MAEDecoder
from keras_ccmim.layers.patch_selector import (
    MASKING_STRATEGIES,
    SAMPLERS,
    PatchSelector,
    num_masked_patches,
)
from keras_ccmim.layers.patching import PatchEmbedding, patchify, unpatchify
from keras_ccmim.layers.position_embedding import (
    SinCosPositionEmbedding,
    sincos_2d_position_embedding,
)
from keras_ccmim.layers.token_ops import POOLINGS, gather_tokens, pool_tokens
from keras_ccmim.layers.transformer_block import TransformerBlock
