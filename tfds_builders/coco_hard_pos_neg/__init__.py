"""The coco_hard_pos_neg TFDS builder (training captions with HNs and HPs)."""
