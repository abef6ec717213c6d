"""The FLOP model against the numbers the spec and the performance notes state."""

import pytest

from keras_ccmim import flops
from tests.testing_utils import tiny_pretrainer


def test_block_formula_is_the_spec_formula_at_mlp_ratio_4():
    n, d = 197, 768
    assert flops.block_forward_flops(n, d) == 24 * n * d * d + 4 * n * n * d
    # MLP ratio 2: QKV 6, proj 2, MLP 2*2*2 = 8 -> 16*n*D^2.
    assert flops.block_forward_flops(n, d, mlp_ratio=2) == 16 * n * d * d + 4 * n * n * d


def test_vit_base_matches_the_spec():
    """ViT-B/16, 224 px, decoder 512 x 8: [CLS] counted, patch embedding counted."""
    s = flops.preset_step_flops("vit_base_patch16_224")
    assert s.full_forward / 1e9 == pytest.approx(35.1, abs=0.05)
    assert s.mae_step / 1e9 == pytest.approx(58, abs=0.5)
    assert s.ccmim_step / 1e9 == pytest.approx(119, abs=0.5)
    assert s.ccmim_to_mae_ratio == pytest.approx(2.05, abs=0.005)
    # The spec's shares: scoring ~29%, teacher ~22% of the ccMIM step.
    assert s.ccmim_scoring / s.ccmim_step == pytest.approx(0.29, abs=0.01)
    assert s.ccmim_teacher / s.ccmim_step == pytest.approx(0.22, abs=0.01)


def test_vit_base_blocks_only_misses_the_spec_ratio():
    """Why the patch embedding is counted: without it the ratio is 2.06."""
    s = flops.preset_step_flops("vit_base_patch16_224", count_patch_embedding=False)
    assert s.full_forward / 1e9 == pytest.approx(34.89, abs=0.01)
    assert s.ccmim_to_mae_ratio == pytest.approx(2.06, abs=0.005)


def test_tiny32_matches_the_performance_notes_blocks_only():
    s = flops.preset_step_flops("vit_tiny_patch4_32", count_patch_embedding=False)
    assert s.mae_step / 1e6 == pytest.approx(716, abs=0.5)
    assert s.full_forward / 1e6 == pytest.approx(729, abs=0.5)
    assert s.ccmim_teacher / 1e6 == pytest.approx(542, abs=0.5)
    assert s.ccmim_step / 1e6 == pytest.approx(1987, abs=0.5)
    assert s.ccmim_to_mae_ratio == pytest.approx(2.78, abs=0.005)


def test_tiny32_with_patch_embedding():
    s = flops.preset_step_flops("vit_tiny_patch4_32")
    assert s.mae_step / 1e6 == pytest.approx(719.3, abs=0.1)
    assert s.ccmim_to_mae_ratio == pytest.approx(2.77, abs=0.005)


def test_step_follows_the_configuration():
    kwargs = dict(image_size=32, patch_size=4, hidden_dim=64, num_layers=4,
                  decoder_hidden_dim=32, decoder_num_layers=1)
    mae = flops.step_flops(**kwargs, scoring=False, teacher=False)
    assert mae.step == mae.mae_step
    ccmim = flops.step_flops(**kwargs)
    assert ccmim.step == ccmim.ccmim_step == mae.mae_step + ccmim.scoring + ccmim.teacher
    # Scoring stops after the deepest scoring layer.
    shallow = flops.step_flops(**kwargs, score_layers=[1])
    assert shallow.scoring * 2 == ccmim.scoring
    # The decoder maps are counted only on request, and only with a gradient.
    io = flops.step_flops(**kwargs, count_decoder_io=True)
    assert io.mae_step - mae.mae_step == 3 * (2 * 17 * 64 * 32 + 2 * 65 * 32 * 48)


def test_model_step_flops_reads_the_model():
    mae = flops.model_step_flops(tiny_pretrainer(masking="random", contrastive="none"))
    assert mae.scoring == 0 and mae.teacher == 0
    ccmim = flops.model_step_flops(tiny_pretrainer())
    assert ccmim.scoring > 0 and ccmim.teacher > 0
    assert ccmim.mae_step == mae.mae_step
    # tiny_pretrainer: 16 px, patch 4, width 32, 2 blocks, decoder 32 x 1.
    expected = flops.step_flops(16, 4, 32, 2, 32, 1)
    assert ccmim == expected
