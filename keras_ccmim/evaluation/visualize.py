"""The picture of a pretrainer's masks, reconstructions and importance on
given images (`reconstruction_grid`); the drawing is `keras_ccmim.pictures`'s."""

from keras_ccmim.pictures import check_images, mask_picture, save_png


def reconstruction_grid(model, images, path=None, scale=None):
    """`keras_ccmim.pictures.mask_picture` of `model` on `images`: one row
    per image; columns image, masked input, reconstruction and, for a
    model whose masking has scores, importance. Saved as PNG when `path`
    is given.

    Args:
        model: a `CCMIMPretrainer`.
        images: `[B, H, W, 3]` normalised images (as `make_dataset` yields).
        path: optional `.png` path.
        scale: upscaling factor; default: images at least 96 px high.

    Returns:
        The uint8 picture `[height, width, 3]`.
    """
    images = check_images(images)
    outputs = model.predict_on_batch(images)
    picture = mask_picture(
        images, outputs, model.encoder.patch_size, model.norm_pix_loss, scale=scale
    )
    if path is not None:
        save_png(path, picture)
    return picture
