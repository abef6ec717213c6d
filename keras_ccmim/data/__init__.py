"""Input pipelines: TFDS datasets, image folders, `synthetic_objects`, augmentation.

The entry point is `make_dataset`, which yields batches of `(images, extras)`
for `model.fit` on every Keras backend.

The names below load on first use (PEP 562), so that the numpy parts
(`make_synthetic_objects`, the normalisation constants) import without
TensorFlow, as on a machine that has only JAX or torch.
"""

import ast
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and Bazel's deps; at run time `__getattr__` loads them
    from keras_ccmim.data.augment import (
        eval_transform,
        normalize,
        pretrain_transform,
        random_resized_crop,
        random_resized_crop_box,
        unnormalize,
    )
    from keras_ccmim.data.dataset_info import DatasetInfo
    from keras_ccmim.input_contract import IMAGENET_MEAN, IMAGENET_STD
    from keras_ccmim.data.folder_manifest import (
        image_folder_manifest,
        read_image_folder_manifest,
        write_image_folder_manifest,
    )
    from keras_ccmim.data.image_folder import load_image_folder
    from keras_ccmim.data.image_folder_scan import ImageFolder, scan_image_folder
    from keras_ccmim.data.pipeline import make_dataset
    from keras_ccmim.data.sources import (
        describe_dataset,
        load_source,
        read_dataset_manifest,
        write_dataset_manifest,
    )
    from keras_ccmim.data.splits import parse_split, split_bounds
    from keras_ccmim.data.synthetic_objects import (
        SYNTHETIC_OBJECTS_CLASS_NAMES,
        load_synthetic_objects,
        make_synthetic_objects,
    )
    from keras_ccmim.data.decode_failures import (
        NoReadableRecordError,
        SkippedRecordsReport,
        describe_data_error,
        lost_records,
        report_skipped_records,
        skipped_records,
    )
    from keras_ccmim.data.image_header import DEFAULT_MAX_PIXELS
    from keras_ccmim.data.tfds_source import load_tfds
    from keras_ccmim.data.segmentation_pipeline import make_segmentation_dataset
    from keras_ccmim.data.segmentation_sources import (
        IGNORE_LABEL,
        SegmentationInfo,
        load_segmentation_source,
    )
    from keras_ccmim.data.synthetic_objects import (
        SYNTHETIC_OBJECTS_SEGMENTATION_CLASSES,
        synthetic_objects_segmentation,
    )


def _homes():
    """{name: module} of the imports under `if TYPE_CHECKING:` above (this file
    is their one list)."""
    with open(__file__) as f:
        tree = ast.parse(f.read())
    (block,) = [node for node in tree.body
                if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    return {alias.name: node.module for node in block.body for alias in node.names}


_HOME_OF = _homes()
__all__ = sorted(_HOME_OF)


def __getattr__(name):
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
