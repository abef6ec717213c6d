"""The evaluation protocol of test_pretraining_helps.py, shared with
measure_margins.py, which measures that test's margins: a k-NN bank of
8,000 synthetic_objects training images, 2,000 images of the separate "test"
split, the mean patch embedding as the feature."""

from keras_ccmim.data import make_dataset
from keras_ccmim.evaluation import extract_features, knn_classify, linear_probe

NUM_TRAIN = 8000
NUM_EVAL = 2000


def load_splits():
    """The training and evaluation batches as numpy, generated once."""
    splits = []
    for split, count in (("train", NUM_TRAIN), ("test", NUM_EVAL)):
        dataset = make_dataset(
            "synthetic_objects", split=split, batch_size=500, image_size=32,
            training=False, num_images=count,
        )
        splits.append([(x.numpy(), {"label": e["label"].numpy()}) for x, e in dataset])
    return splits


def measure(encoder, train, evaluation):
    """k-NN top-1/top-5 and linear-probe top-1 of `encoder`'s features."""
    train_x, train_y = extract_features(encoder, train, "mean_patch")
    eval_x, eval_y = extract_features(encoder, evaluation, "mean_patch")
    knn = knn_classify(train_x, train_y, eval_x, eval_y)
    probe = linear_probe(train_x, train_y, eval_x, eval_y, epochs=30, seed=0)
    return {"knn_top1": knn["top1"], "knn_top5": knn["top5"], "probe_top1": probe.top1}
