"""Helpers of the image-folder tests: a small folder with a broken JPEG, and
a count of the folder decodes (scans) a process makes."""

import numpy as np
import tensorflow as tf

from keras_ccmim.data import image_folder_scan

BROKEN = "broken.jpg"


def jpeg(seed, height=12, width=10):
    """The bytes of a random JPEG."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3))
    return tf.io.encode_jpeg(image.astype(np.uint8)).numpy()


def write_class_folder(root, classes=("cat", "dog"), per_class=6):
    """`root/<class>/<i>.jpg` for each class, plus `root/<last class>/broken.jpg`
    (a JPEG header and nothing decodable): `len(classes) * per_class + 1`
    files, one of them skipped."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg(100 * label + i))
    (root / classes[-1] / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    return root


def new_process(monkeypatch):
    """The scan state of a process that has scanned no folder yet."""
    monkeypatch.setattr(image_folder_scan, "_SCANS", {})
    monkeypatch.setattr(image_folder_scan, "_WARNED", set())


def count_decodes(monkeypatch):
    """Starts from `new_process` and returns a list that gets the file list
    of each folder decode (`image_folder_scan._readable` call)."""
    new_process(monkeypatch)
    calls = []
    readable = image_folder_scan._readable

    def counting(files, max_pixels):
        calls.append(list(files))
        return readable(files, max_pixels)

    monkeypatch.setattr(image_folder_scan, "_readable", counting)
    return calls


def skipped_warnings(caplog):
    """The messages of the skipped-files warnings `caplog` holds."""
    return [r.getMessage() for r in caplog.records if "unreadable or corrupt" in r.getMessage()]
