"""Driving a pretraining run: config, optimizer, schedule, callbacks,
checkpoints and exact resume, the workdir's rules, distribution.

The entry point is `pretrain(config)`; the pieces it assembles are usable on
their own with `model.fit` (see `examples/pretrain_ccmim.ipynb`).
"""

from keras_ccmim.training.callbacks import (
    ForegroundLift,
    LogLearningRate,
    MetricsCSV,
    PeriodicCallback,
    TensorBoardMaskPictures,
    TensorBoardScalars,
    foreground_patches,
    predict_outputs,
    seeded_predict_outputs,
)
from keras_ccmim.training.checkpoints import (
    CheckpointError,
    TrainingCheckpoint,
    checkpoint_candidates,
    fit_resumable,
    latest_checkpoint,
    roll_back_to_step,
)
from keras_ccmim.training.config import (
    ConfigError,
    PretrainConfig,
    config_from_recipe,
    load_recipe,
    parse_score_layers,
    recipe,
    resolve_config,
)
from keras_ccmim.training.distribution import (
    DISTRIBUTIONS,
    DistributionSetup,
    plan_distribution,
    setup_distribution,
)
from keras_ccmim.training.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from keras_ccmim.training.optimizer import is_decayed, make_optimizer, scaled_learning_rate
from keras_ccmim.training.pretrain import PretrainResults, build_pretrainer, pretrain
from keras_ccmim.training.schedules import warmup_cosine
