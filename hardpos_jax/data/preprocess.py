"""The TF train transform (the eval transform is eval_transform.py).

The train transform is a list of small ops, big_vision style: each factory
returns a `dict -> dict` function over a feature dict of TF tensors, applied
in order by `compose`. Random ops read the example's stateless seed from
`data["seed"]` (int64 [2]), so an example's augmentation is a pure function of
its position in the data order.
"""

from collections.abc import Callable, Sequence
import math

import tensorflow as tf

from hardpos_jax.data import eval_transform

Op = Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]


def decode(key: str = "image") -> Op:
  """Encoded bytes (JPEG/PNG) -> uint8 [H, W, 3]."""

  def op(data):
    image = tf.io.decode_image(data[key], channels=3, expand_animations=False)
    return {**data, key: image}

  return op


def _crop_window(height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor,
                 scale: Sequence[float], ratio: Sequence[float]):
  """torchvision `RandomResizedCrop.get_params`, with stateless TF randomness.

  Ten tries of an area fraction in `scale` and a log-uniform aspect ratio in
  `ratio`; the first that fits is placed uniformly at random. If none fits,
  the centred crop of the image clamped to `ratio`.

  Returns:
    (top, left, crop height, crop width), int32 scalars.
  """
  tries = 10
  # The same seed values must give the same crop whatever their dtype.
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
  h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  area = h_f * w_f * tf.random.stateless_uniform(
      [tries], seeds[0], scale[0], scale[1])
  aspect = tf.exp(tf.random.stateless_uniform(
      [tries], seeds[1], math.log(ratio[0]), math.log(ratio[1])))
  # tf.round rounds half to even, as Python's round in torchvision.
  crop_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  crop_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (crop_w > 0) & (crop_h > 0) & (crop_w <= width) & (crop_h <= height)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  in_ratio = w_f / h_f
  fallback_w = tf.where(in_ratio > ratio[1],
                        tf.cast(tf.round(h_f * ratio[1]), tf.int32), width)
  fallback_h = tf.where(in_ratio < ratio[0],
                        tf.cast(tf.round(w_f / ratio[0]), tf.int32), height)
  found = tf.reduce_any(fits)
  crop_h = tf.where(found, crop_h[first], fallback_h)
  crop_w = tf.where(found, crop_w[first], fallback_w)

  def offset(room, seed):
    drawn = tf.random.stateless_uniform([], seed, 0, room + 1, tf.int32)
    return tf.where(found, drawn, room // 2)

  return (offset(height - crop_h, seeds[2]), offset(width - crop_w, seeds[3]),
          crop_h, crop_w)


def random_resized_crop(size: int, scale: Sequence[float],
                        ratio: Sequence[float], antialias: bool = True,
                        key: str = "image") -> Op:
  """torchvision's RandomResizedCrop, resized to float32 [size, size, 3].

  The crop covers a fraction `scale` of the image's area with an aspect ratio
  (width / height) in `ratio`, and is resized with bicubic, antialiased as
  PIL resizes unless `antialias` is False (big_vision's default; a third of
  the op's time on a COCO image, see docs/data.md). Randomness comes from
  `data["seed"]`.

  Args:
    size: S, the output side.
    scale: (min, max) fraction of the area.
    ratio: (min, max) width / height.
    antialias: widen the kernel when shrinking, as PIL does.
    key: the image's key.

  Returns:
    The op.
  """

  def op(data):
    image = data[key]
    shape = tf.shape(image)
    top, left, height, width = _crop_window(shape[0], shape[1], data["seed"],
                                            scale, ratio)
    crop = image[top:top + height, left:left + width]
    resized = tf.image.resize(crop, [size, size], method="bicubic",
                              antialias=antialias)
    # Bicubic overshoots; PIL clips to the uint8 range, so do we.
    return {**data, key: tf.clip_by_value(resized, 0.0, 255.0)}

  return op


def normalize(mean: Sequence[float] = eval_transform.CLIP_MEAN,
              std: Sequence[float] = eval_transform.CLIP_STD,
              key: str = "image") -> Op:
  """Values in [0, 255] -> (x / 255 - mean) / std, float32."""

  def op(data):
    image = tf.cast(data[key], tf.float32) / 255.0
    return {**data, key: (image - mean) / std}

  return op


def compose(ops: Sequence[Op]) -> Op:
  """Applies `ops` in order."""

  def op(data):
    for f in ops:
      data = f(data)
    return data

  return op
