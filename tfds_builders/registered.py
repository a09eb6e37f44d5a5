"""Importing this registers every hardpos_jax builder with tfds."""

# pylint: disable=unused-import
from tfds_builders.aro import aro
from tfds_builders.coco_hard_pos_neg import coco_hard_pos_neg
from tfds_builders.hard_positives import hard_positives
from tfds_builders.sugar_crepe import sugar_crepe
from tfds_builders.sugar_crepe_pp import sugar_crepe_pp
from tfds_builders.synthetic_shapes import synthetic_shapes
from tfds_builders.vl_checklist import vl_checklist
from tfds_builders.winoground import winoground
