"""A plain-Keras MAE, independent of keras_ccmim: the step benchmark's fixed
yardstick (`--compare_reference`).

Nothing here imports the library. It is the textbook MAE step written with
stock Keras layers only (`Conv2D` patch embedding, `MultiHeadAttention`,
`LayerNormalization`, `Dense`), random masking by argsort of uniform noise,
pre-norm blocks with an MLP ratio of 4, a narrower decoder with mask tokens,
and the normalised-pixel MSE on the masked patches. It has the same shapes
and FLOPs as the library's MAE step at the same sizes, so
`mae / reference_mae` on one machine says how much the library's own layers
cost or save, and the reference's img/s on two machines says how the
machines differ, whatever the library does.
"""

import keras
from keras import layers, ops


def sincos_table(grid, dim):
    """Fixed 2-D sin-cos position embedding of a grid x grid patch layout."""
    import numpy as np

    def one_axis(positions, d):
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2))
        angles = positions.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    ys, xs = np.meshgrid(np.arange(grid, dtype="float64"), np.arange(grid, dtype="float64"),
                         indexing="ij")
    table = np.concatenate([one_axis(ys, dim // 2), one_axis(xs, dim // 2)], axis=1)
    return table[None].astype("float32")


class Block(layers.Layer):
    def __init__(self, dim, heads, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = layers.LayerNormalization(epsilon=1e-6)
        self.attn = layers.MultiHeadAttention(heads, dim // heads)
        self.norm2 = layers.LayerNormalization(epsilon=1e-6)
        self.fc1 = layers.Dense(4 * dim, activation="gelu")
        self.fc2 = layers.Dense(dim)

    def call(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h)
        return x + self.fc2(self.fc1(self.norm2(x)))


class ReferenceMAE(keras.Model):
    """MAE pretraining step at the given sizes; `fit` on images alone."""

    def __init__(self, image_size, patch_size, hidden_dim, num_layers, num_heads,
                 decoder_hidden_dim, decoder_num_layers, decoder_num_heads, mask_ratio=0.75,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid**2
        self.num_visible = int(self.num_patches * (1 - mask_ratio))
        self.embed = layers.Conv2D(hidden_dim, patch_size, strides=patch_size)
        self.cls = self.add_weight(shape=(1, 1, hidden_dim), initializer="zeros", name="cls")
        self.pos = sincos_table(self.grid, hidden_dim)
        self.dec_pos = sincos_table(self.grid, decoder_hidden_dim)
        self.blocks = [Block(hidden_dim, num_heads) for _ in range(num_layers)]
        self.norm = layers.LayerNormalization(epsilon=1e-6)
        self.to_decoder = layers.Dense(decoder_hidden_dim)
        self.mask_token = self.add_weight(shape=(1, 1, decoder_hidden_dim),
                                          initializer="zeros", name="mask_token")
        self.dec_blocks = [Block(decoder_hidden_dim, decoder_num_heads)
                           for _ in range(decoder_num_layers)]
        self.dec_norm = layers.LayerNormalization(epsilon=1e-6)
        self.predict_pixels = layers.Dense(patch_size * patch_size * 3)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _patches(self, images):
        b, p, g = ops.shape(images)[0], self.patch_size, self.grid
        x = ops.reshape(images, (b, g, p, g, p, 3))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (b, g * g, p * p * 3))

    def call(self, images, training=False):
        b = ops.shape(images)[0]
        tokens = ops.reshape(self.embed(images), (b, self.num_patches, -1))
        tokens = tokens + ops.convert_to_tensor(self.pos, tokens.dtype)
        noise = keras.random.uniform((b, self.num_patches), seed=self.seed_generator)
        order = ops.argsort(noise, axis=1)
        restore = ops.argsort(order, axis=1)
        keep = order[:, : self.num_visible]
        x = ops.take_along_axis(tokens, keep[..., None], axis=1)
        x = ops.concatenate([ops.broadcast_to(self.cls, (b, 1, ops.shape(x)[-1])), x], axis=1)
        for block in self.blocks:
            x = block(x)
        x = self.to_decoder(self.norm(x))
        hidden = ops.shape(x)[-1]
        masked = ops.broadcast_to(self.mask_token,
                                  (b, self.num_patches - self.num_visible, hidden))
        patches = ops.concatenate([x[:, 1:], masked], axis=1)
        patches = ops.take_along_axis(patches, restore[..., None], axis=1)
        patches = patches + ops.convert_to_tensor(self.dec_pos, patches.dtype)
        x = ops.concatenate([x[:, :1], patches], axis=1)
        for block in self.dec_blocks:
            x = block(x)
        prediction = self.predict_pixels(self.dec_norm(x))[:, 1:]
        is_masked = ops.cast(restore >= self.num_visible, prediction.dtype)
        return prediction, is_masked

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        prediction, is_masked = y_pred
        target = self._patches(ops.cast(x, "float32"))
        mean = ops.mean(target, axis=-1, keepdims=True)
        var = ops.var(target, axis=-1, keepdims=True)
        target = (target - mean) / ops.sqrt(var + 1e-6)
        error = ops.mean(ops.square(ops.cast(prediction, "float32") - target), axis=-1)
        is_masked = ops.cast(is_masked, "float32")
        return ops.sum(error * is_masked) / ops.sum(is_masked)


def mae_flops_per_image(model):
    """Training FLOPs per image (3x forward; the same count as the library's
    FLOP model: blocks with [CLS], the patch embedding, no softmax/norm)."""
    def block(tokens, width):
        return 24 * tokens * width**2 + 4 * tokens**2 * width

    d = model.embed.filters
    dd = model.to_decoder.units
    embed = 2 * model.num_patches * (model.patch_size**2 * 3) * d
    forward = (embed + len(model.blocks) * block(1 + model.num_visible, d)
               + len(model.dec_blocks) * block(1 + model.num_patches, dd))
    return 3 * forward

