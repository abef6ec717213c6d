"""The data of a pretraining run: the training batches from any global
step (so a resumed run reads what the killed run would have read next) and
the fixed batch the masking figures are measured on."""

import functools


def training_batches(config, distribution, processes):
    """`dataset_at(step)`: the training batches from global step `step` on,
    so a resumed run reads exactly the batches the killed run would have
    read next."""
    from keras_ccmim import data

    dataset = functools.partial(
        data.make_dataset,
        config.dataset,
        split=config.split,
        batch_size=config.batch_size,
        image_size=config.image_size,
        data_dir=config.data_dir,
        training=True,
        seed=config.seed,
        repeat=True,
        num_images=config.num_images,
        # Several processes: each feeds its own share of every global batch.
        shard=distribution.shard if processes > 1 else None,
    )

    def dataset_at(step):
        return dataset(start_batch=step)

    return dataset_at



def fixed_batch(config, info, num_replicas):
    """The first evaluation batch of the training split (at most
    `lift_images`, a multiple of `num_replicas`): images and, when the data
    have them, foreground masks (numpy)."""
    from keras_ccmim import data

    size = min(config.lift_images, info.num_images or config.lift_images)
    dataset = data.make_dataset(
        config.dataset,
        split=config.split,
        batch_size=max(size // num_replicas, 1) * num_replicas,
        image_size=config.image_size,
        data_dir=config.data_dir,
        training=False,
        seed=config.seed,
        num_images=config.num_images,
    )
    images, extras = next(iter(dataset.take(1)))
    foreground = extras.get("foreground")
    return images.numpy(), None if foreground is None else foreground.numpy()
