"""A CIFAR-10 subset as one numpy file, for a machine without TensorFlow.

The GPU machine has neither TensorFlow nor TFDS, and what travels there is
at most 64 MiB: 25,000 CIFAR-10 images decoded (3 KiB each) would not fit,
their JPEG bytes as TFDS stores them (about 1 KiB each) do. So the file keeps
the JPEG bytes of each part, one buffer per part with the offsets of its
images, and `read_subset` decodes them with pillow:

    <part>_jpeg     uint8 [total bytes]  the JPEG files, one after the other
    <part>_offsets  int64 [n + 1]        image i is jpeg[offsets[i]:offsets[i+1]]
    <part>_labels   int32 [n]
    <part>_split    the TFDS split string the part was read from

with the parts `train` (pretraining images, the k-NN bank and the probe's
training set) and `heldout` (the images scored). `np.load` reads it with
`allow_pickle=False`: nothing in it runs.

`write_subset_from_tfds` (TensorFlow and TFDS, here only) writes it from the
`cifar10_jpeg` train split: `train[:20000]` and the held-out `train[45000:]`
of the studies.
"""

import io

import numpy as np

PARTS = ("train", "heldout")
DEFAULT_SPLITS = {"train": "train[:20000]", "heldout": "train[45000:]"}


def write_subset(path, parts):
    """Writes `{part: (list of JPEG bytes, labels, split)}` as the subset file."""
    arrays = {}
    for name in PARTS:
        jpegs, labels, split = parts[name]
        sizes = np.array([len(b) for b in jpegs], dtype="int64")
        arrays[f"{name}_jpeg"] = np.frombuffer(b"".join(jpegs), dtype="uint8")
        arrays[f"{name}_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype("int64")
        arrays[f"{name}_labels"] = np.asarray(labels, dtype="int32")
        arrays[f"{name}_split"] = np.array(split)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def write_subset_from_tfds(path, data_dir, splits=None):
    """The subset file of `cifar10_jpeg` under the TFDS `data_dir` (needs
    TensorFlow and TFDS); `splits` maps each part to a TFDS split string."""
    import tensorflow_datasets as tfds

    splits = dict(DEFAULT_SPLITS, **(splits or {}))
    builder = tfds.builder("cifar10_jpeg", data_dir=data_dir)
    parts = {}
    for name in PARTS:
        dataset = builder.as_dataset(split=splits[name], shuffle_files=False,
                                     decoders={"image": tfds.decode.SkipDecoding()})
        jpegs, labels = [], []
        for example in dataset.as_numpy_iterator():
            jpegs.append(bytes(example["image"]))
            labels.append(int(example["label"]))
        parts[name] = (jpegs, labels, splits[name])
    return write_subset(path, parts)


def jpeg_bytes(images, quality=90):
    """uint8 `[n, H, W, 3]` images as a list of JPEG files (pillow)."""
    from PIL import Image

    out = []
    for image in np.asarray(images, dtype="uint8"):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out.append(buffer.getvalue())
    return out


def read_subset(path):
    """`{part: (images uint8 [n, H, W, 3], labels int32 [n])}` and
    `{part: split}` of a subset file, the JPEGs decoded with pillow."""
    from PIL import Image

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Cannot read the CIFAR-10 subset {path}: {error}. Build it with "
            "benchmarks/gpu_carry_kit.py.") from error
    missing = [f"{p}_{k}" for p in PARTS for k in ("jpeg", "offsets", "labels")
               if f"{p}_{k}" not in arrays]
    if missing:
        raise ValueError(f"{path} is not a CIFAR-10 subset file (no {', '.join(missing)}); "
                         "build it with benchmarks/gpu_carry_kit.py.")
    data, splits = {}, {}
    for name in PARTS:
        buffer, offsets = arrays[f"{name}_jpeg"], arrays[f"{name}_offsets"]
        try:
            images = [np.asarray(Image.open(io.BytesIO(buffer[a:b].tobytes())).convert("RGB"))
                      for a, b in zip(offsets[:-1], offsets[1:])]
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: an image of its {name!r} part does not decode ({error}); "
                             "build the file again with benchmarks/gpu_carry_kit.py.") from error
        data[name] = (np.stack(images), arrays[f"{name}_labels"].astype("int32"))
        splits[name] = str(arrays.get(f"{name}_split", ""))
    return data, splits
