"""Driving a pretraining run: optimizer, schedule, callbacks, resume, distribution.

The entry point is `pretrain(config)`; the pieces it assembles are usable on
their own with `model.fit` (see `examples/pretrain_ccmim.ipynb`).
"""

from keras_ccmim.training.checkpoint_files import (
    CheckpointError,
    checkpoint_candidates,
    latest_checkpoint,
    roll_back_to_step,
)
from keras_ccmim.training.checkpointing import TrainingCheckpoint
from keras_ccmim.training.foreground_lift import (
    ForegroundLift,
    foreground_patches,
    predict_outputs,
    seeded_predict_outputs,
)
from keras_ccmim.training.logging_callbacks import (
    LogLearningRate,
    MetricsCSV,
    TensorBoardMaskPictures,
    TensorBoardScalars,
)
from keras_ccmim.training.nan_guard import StopOnNonFiniteLoss
from keras_ccmim.training.config import (
    ConfigError,
    PretrainConfig,
    parse_score_layers,
    resolve_config,
)
from keras_ccmim.training.distribution import (
    DISTRIBUTIONS,
    DistributionSetup,
    plan_distribution,
    setup_distribution,
)
from keras_ccmim.models.vit_encoder import load_encoder  # noqa: F401 (the one loader)
from keras_ccmim.training.export import mask_picture, save_mask_picture
from keras_ccmim.training.recipes import config_from_recipe, load_recipe, recipe
from keras_ccmim.training.run_messages import run_messages_to_stdout
from keras_ccmim.training.optimizer import is_decayed, make_optimizer, scaled_learning_rate
from keras_ccmim.training.pretrain import PretrainResults, build_pretrainer, pretrain
from keras_ccmim.training.resume import NonFiniteLossError, fit_resumable
from keras_ccmim.training.schedules import warmup_cosine
