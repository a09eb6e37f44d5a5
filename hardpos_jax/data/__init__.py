"""Input pipeline: TFDS sources, preprocessing, global batches."""
