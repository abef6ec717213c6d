"""The protocol of test_segmentation_helps.py, shared with
measure_segmentation_margins.py, which measures that test's margins: a
short segmentation fine-tuning (`segment`, 50 steps of 32) on
`synthetic_objects_foreground` at 32 px (figure-ground: background and
object), scored on 300 images of the separate "test" split.

Figure-ground rather than the 11 classes of `synthetic_objects`: in a run
this short (and in 200 steps, measured) the 11-class segmenter, pretrained
or not, labels every pixel background (mIoU 7.3-7.7, aAcc 77-78%: each shape
class holds about 2% of the pixels, so no shape class wins the argmax),
which leaves nothing to compare.
"""

from keras_ccmim.evaluation.segment import segment

SEGMENT_RUN = dict(
    dataset="synthetic_objects_foreground",
    image_size=32,
    train_num_images=2000,
    eval_num_images=300,
    epochs=2,
    steps_per_epoch=25,
    warmup_epochs=0.5,
    batch_size=32,
    base_learning_rate=1e-3,
    head_dim=32,
    check_every_steps=25,
)
SCORES = ("miou", "aacc", "macc")


def measure(encoder, seed=0):
    """mIoU, aAcc and mAcc (percent) of `encoder` fine-tuned with `seed`."""
    result = segment(encoder, seed=seed, **SEGMENT_RUN)
    return {name: getattr(result, name) for name in SCORES}
