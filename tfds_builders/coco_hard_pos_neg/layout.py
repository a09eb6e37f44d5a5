"""The manual_dir layout of the COCO training set with HNs and HPs.

Shared by the coco_hard_pos_neg builder, which reads these files, and by
`hardpos_jax.generate`, which writes the HP and HN files; pure Python, so
that the generator needs neither TensorFlow nor TFDS.
"""

CAPTIONS_FILE = "annotations/captions_train2017.json"
IMAGE_DIR = "train2017"
HARD_POSITIVE_FILES = {
    "swap": "hard_positives_ft/swap_hp.jsonl",
    "replace": "hard_positives_ft/replace_hp.jsonl",
}
HARD_NEGATIVE_FILE = "hard_negatives/hard_negatives.jsonl"
# How the released HP files mark a caption without a hard positive.
NO_HARD_POSITIVE = "None"

NEGCLIP_FILES = {
    "train": "train_neg_clip.tsv",
    "validation": "valid_neg_clip.tsv",
}
