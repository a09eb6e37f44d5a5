"""The coco_hard_pos_neg TFDS builder (training captions with HNs and HPs)."""

from tfds_builders.coco_hard_pos_neg.coco_hard_pos_neg import CocoHardPosNeg
