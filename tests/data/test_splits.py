import pytest

from keras_ccmim.data import parse_split, split_bounds

# Split strings and the absolute ranges the hand-written parser (before TFDS's
# ReadInstruction read them) gave, written out: the new code must give the same.
HAND_WRITTEN_RESULTS = [
    ("train", 1000, ("train", 0, 1000)),
    ("train[:90%]", 1000, ("train", 0, 900)),
    ("train[90%:]", 1000, ("train", 900, 1000)),
    ("train[45000:45100]", 1000, ("train", 1000, 1000)),
    ("test[-100:]", 1000, ("test", 900, 1000)),
    (" validation[10:-10] ", 1000, ("validation", 10, 990)),
    ("train[500:100]", 1000, ("train", 500, 500)),
    # CIFAR-10's 50,000 training images: the training part and the hold-out.
    ("train[:45000]", 50000, ("train", 0, 45000)),
    ("train[45000:]", 50000, ("train", 45000, 50000)),
    ("train[45000:45100]", 50000, ("train", 45000, 45100)),
    ("test[:10%]", 10000, ("test", 0, 1000)),
    # Mixed units: each bound in its own (TFDS's from_spec would read -5 as -5%).
    ("train[10%:-5]", 1000, ("train", 100, 995)),
    ("train[-5:10%]", 1000, ("train", 995, 995)),
    ("train[:-5%]", 1000, ("train", 0, 950)),
    ("train[-1500:]", 1000, ("train", 0, 1000)),
    ("train[:]", 1000, ("train", 0, 1000)),
    ("train [ 10 : 20 ]", 1000, ("train", 10, 20)),
    # Percentages round to the nearest example, halves to even.
    ("train[:50%]", 5, ("train", 0, 2)),
    ("train[:50%]", 7, ("train", 0, 4)),
    ("train[33%:67%]", 10, ("train", 3, 7)),
    ("train[-50%:]", 3, ("train", 1, 3)),
    ("train[:90%]", 0, ("train", 0, 0)),
    ("train[5:]", 0, ("train", 0, 0)),
    ("train[100%:]", 1000, ("train", 1000, 1000)),
    ("train[-100%:1]", 1000, ("train", 0, 1)),
]


@pytest.mark.parametrize("split, num_examples, expected", HAND_WRITTEN_RESULTS)
def test_split_bounds_match_the_hand_written_parser(split, num_examples, expected):
    assert split_bounds(split, num_examples) == expected


def test_complementary_slices_partition_the_split():
    for num_examples in (0, 1, 7, 999, 50000):
        for cut in ("45000", "90%", "-5", "-5%", "33%"):
            _, _, first = split_bounds(f"train[:{cut}]", num_examples)
            _, second, end = split_bounds(f"train[{cut}:]", num_examples)
            assert first == second and end == num_examples


def test_parse_split_reads_each_bound_in_its_own_unit():
    import tensorflow_datasets as tfds

    name, start, stop = parse_split("train[10%:-5]")
    assert name == "train"
    assert start == tfds.core.ReadInstruction("train", from_=10.0, unit="%")
    assert stop == tfds.core.ReadInstruction("train", to=-5, unit="abs")
    assert parse_split("train") == ("train", None, None)


@pytest.mark.parametrize(
    "split, reason",
    [
        ("", None),
        ("train[", None),
        ("train[1:2:3]", None),
        ("train[5]", None),
        ("train[1.5:]", None),
        ("train[a:]", None),
        ("tr ain", None),
        (3, None),
        ("train+test", "sums of splits are not supported"),
        ("train[:150%]", "percentages lie in [-100%, 100%]"),
        ("all[:10]", "'all' cannot be sliced"),
        ("train[1shard:]", "shard slices are not supported"),
    ],
)
def test_invalid_splits(split, reason):
    with pytest.raises(ValueError, match="Invalid split") as error:
        parse_split(split)
    assert "e.g. 'train', 'train[:90%]'" in str(error.value)
    if reason:
        assert f"({reason})" in str(error.value)
