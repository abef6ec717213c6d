"""Input pipelines: TFDS datasets, image folders, `synthetic_objects`, augmentation.

The entry point is `make_dataset`, which yields batches of `(images, extras)`
for `model.fit` on every Keras backend.

The names below load on first use (PEP 562), so that the numpy parts
(`make_synthetic_objects`, the normalisation constants) import without
TensorFlow, as on a machine that has only JAX or torch.
"""

from typing import TYPE_CHECKING

from keras_ccmim.lazy_exports import lazy_exports

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
    from keras_ccmim.data.pipeline import evenly_spaced_batch, make_dataset
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


__getattr__, __dir__, __all__ = lazy_exports(__name__)
