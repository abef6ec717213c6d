"""`DatasetInfo`: what a data source holds."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A short description of one split of a data source.

    Args:
        name: str, the dataset name as given to `make_dataset`.
        split: str, the split string, slice included.
        num_images: int or `None`, images in the split after slicing and
            `num_images` capping (unreadable folder files already left out);
            `None` when unknown.
        num_classes: int or `None`; `None` for unlabelled sources, whose
            labels are -1.
        class_names: tuple of str or `None`, indexed by label.
        has_foreground: bool, whether examples carry a foreground mask.
        image_shape: `(height, width, 3)` when every image has the same
            stored size, else `None`.
    """

    name: str
    split: str
    num_images: int | None
    num_classes: int | None
    class_names: tuple[str, ...] | None = None
    has_foreground: bool = False
    image_shape: tuple[int, int, int] | None = None
