"""The k-NN / probe inputs: the features of two splits from an encoder, and
the checks of an encoder SavedModel given as input."""

import numpy as np
import pytest

from keras_ccmim.data import make_dataset
from keras_ccmim.evaluation.features import extract_features
from keras_ccmim.evaluation.saved_model_input import check_saved_model_input
from keras_ccmim.evaluation.train_eval_features import train_and_eval_features

SPLITS = dict(train_split="train", eval_split="test", train_num_images=12,
              eval_num_images=8, batch_size=4)


def test_features_of_both_splits_are_the_encoders(tiny_encoder):
    got = train_and_eval_features("synthetic_objects", encoder=tiny_encoder, **SPLITS)
    assert got.image_size == 16 and got.num_classes is not None
    assert got.train_x.shape == (12, 32) and got.eval_x.shape == (8, 32)
    assert got.train_y.shape == (12,) and got.eval_y.shape == (8,)
    # The same as extracting each split's batches by hand.
    batches = make_dataset("synthetic_objects", split="test", batch_size=4, image_size=16,
                           training=False, num_images=8)
    eval_x, eval_y = extract_features(tiny_encoder, batches)
    np.testing.assert_array_equal(got.eval_y, eval_y)
    np.testing.assert_allclose(got.eval_x, eval_x, atol=1e-6)


def test_exactly_one_encoder(tiny_encoder):
    with pytest.raises(ValueError, match="exactly one of encoder= and saved_model="):
        train_and_eval_features("synthetic_objects", **SPLITS)
    with pytest.raises(ValueError, match="exactly one of encoder= and saved_model="):
        train_and_eval_features("synthetic_objects", encoder=tiny_encoder,
                                saved_model=object(), **SPLITS)


def test_a_saved_model_input_that_is_not_one(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    for path, message in [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "a_file", "is a file, not a SavedModel folder"),
        (tmp_path / "empty", "is not a SavedModel: it has no saved_model.pb"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_saved_model_input(str(path))
    (tmp_path / "empty" / "saved_model.pb").write_bytes(b"")
    check_saved_model_input(str(tmp_path / "empty"))
