"""TFDS builders of hardpos_jax; importing this registers them with tfds."""

from tfds_builders import coco_hard_pos_neg
from tfds_builders import hard_positives
from tfds_builders import sugar_crepe
from tfds_builders import synthetic_shapes
