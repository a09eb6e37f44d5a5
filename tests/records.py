"""Per-caption views of training records (one example per image)."""

CAPTION_KEYS = ("caption", "caption_id", "hard_negatives", "hard_positives",
                "hard_positive_kinds", "neg_images")


def caption_rows(records):
  """Each record's captions as flat dicts: the caption's own features, plus
  `image`, `image_id` and `image_index` (the record's position)."""
  rows = []
  for index, record in enumerate(records):
    captions = record["captions"]
    for j in range(len(captions["caption"])):
      rows.append({
          "image": record["image"], "image_id": record["image_id"],
          "image_index": index,
          **{k: captions[k][j] for k in CAPTION_KEYS},
      })
  return rows
