"""Dense transfer: the test's short ccMIM pretraining beats random
initialisation on synthetic figure-ground segmentation, on every backend.

The encoder is pretrained once per session (`PRETRAIN_RUN` in conftest, the
run test_pretraining_helps.py uses) and probed here with
`benchmarks.segmentation_protocols.LINEAR_PROBE` (the encoder frozen, a
linear map from each patch's features to its pixels' logits, 400 steps of
64 on `synthetic_objects_foreground` at 32 px, scored on 300 test images),
against random encoders of the same architecture probed the same way. Both
arms run with seeds 0 and 1 (the random encoder's initialisation seed is
the probe's seed).

The margin comes from the test's own runs: the pretrained encoder's worst
score must beat random init's best by `SPREADS` times the larger of the two
arms' seed-to-seed ranges, and by at least `MIN_GAIN`. Measured with
`python -m tests.evaluation.measure_segmentation_margins` (seeds 0-2 on each
backend, a 2-core AMD EPYC; benchmarks/results/segmentation_helps_margins.json):
the worst pretrained score beat the best random one by 7.6-9.2 mIoU, 3.5-4.2
aAcc and 7.7-9.7 mAcc, while the widest seed-to-seed range was 2.4 mIoU, 0.6
aAcc and 2.8 mAcc (random encoders on JAX; the pretrained arm's: at most
0.4, 0.2 and 0.7). So the margins asked here (at most 2 x 2.4 = 4.8 mIoU)
sit well under the measured gains, and a pretraining that taught the encoder
nothing (a random encoder scores 45.8-48.7 mIoU, the pretrained one 56.1-56.7)
fails them.

The probe replaced a 50-step fine-tuning of the FPN head, whose scores
swung with the backend and the seed (there random init won seed 0 on torch
and JAX): the probe is a convex problem over fixed features, so it measures
the features and not the run.
"""

import pytest

from benchmarks.segmentation_protocols import measure
from keras_ccmim.evaluation import load_encoder, random_encoder
from tests.evaluation.conftest import PRETRAIN_ENCODER

pytestmark = pytest.mark.slow  # a minute: see the `slow` marker in pyproject.toml

SEEDS = (0, 1)
SPREADS = 2.0
MIN_GAIN = {"miou": 3.0, "aacc": 1.5, "macc": 3.0}


@pytest.fixture(scope="module")
def results(pretrained_workdir):
    pretrained = load_encoder(pretrained_workdir)
    out = {
        "pretrained": [measure(pretrained, seed=seed) for seed in SEEDS],
        "random": [measure(random_encoder(seed=seed, **PRETRAIN_ENCODER), seed=seed)
                   for seed in SEEDS],
    }
    print(out)
    return out


@pytest.mark.parametrize("metric", sorted(MIN_GAIN))
def test_pretrained_beats_random_init(results, metric):
    pretrained = [run[metric] for run in results["pretrained"]]
    random = [run[metric] for run in results["random"]]
    spread = max(max(pretrained) - min(pretrained), max(random) - min(random))
    margin = max(SPREADS * spread, MIN_GAIN[metric])
    assert min(pretrained) > max(random) + margin, (metric, margin, results)
