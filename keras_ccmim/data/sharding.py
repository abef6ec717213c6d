"""Multi-process input sharding: each process's share of a global batch
(`make_dataset(..., shard=(index, count))`)."""

import tensorflow as tf


def check_shard(shard, batch_size, training):
    """`(index, count)` of a valid `shard` (None: `(0, 1)`)."""
    if shard is None:
        return 0, 1
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (index, count), got {shard!r}.") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {shard!r}: index must be in [0, count) with count >= 1.")
    if count > 1 and not training:
        raise ValueError(
            "shard splits the training stream between processes; evaluation batches are "
            "read whole. Pass training=True, or shard=None."
        )
    if batch_size % count:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) is not divisible by the {count} "
            f"processes of shard={shard!r}. Use a multiple of {count}."
        )
    return index, count


def take_share(dataset, batch_size, index, local_batch):
    """Batches of `batch_size` consecutive elements, each cut to its
    `index`-th slice of `local_batch`."""
    begin = index * local_batch
    return dataset.batch(batch_size, drop_remainder=True).map(
        lambda *parts: tf.nest.map_structure(
            lambda t: t[begin : begin + local_batch], parts if len(parts) > 1 else parts[0]
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
