import pytest

from keras_ccmim.data import parse_split, split_bounds


@pytest.mark.parametrize(
    "split, expected",
    [
        ("train", ("train", 0, 1000)),
        ("train[:90%]", ("train", 0, 900)),
        ("train[90%:]", ("train", 900, 1000)),
        ("train[45000:45100]", ("train", 1000, 1000)),
        ("test[-100:]", ("test", 900, 1000)),
        (" validation[10:-10] ", ("validation", 10, 990)),
        ("train[500:100]", ("train", 500, 500)),
    ],
)
def test_split_bounds(split, expected):
    assert split_bounds(split, 1000) == expected


def test_parse_split_keeps_bounds_as_written():
    assert parse_split("train[10%:-5]") == ("train", "10%", "-5")
    assert parse_split("train") == ("train", None, None)


@pytest.mark.parametrize("split", ["", "train[", "train[1:2:3]", "train+test", 3])
def test_invalid_splits(split):
    with pytest.raises(ValueError, match="Invalid split"):
        parse_split(split)
