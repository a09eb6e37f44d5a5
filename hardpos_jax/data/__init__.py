"""Input pipeline: TFDS sources, train and eval transforms, global batches."""
