"""Input pipeline: TFDS sources, the train and eval transforms, global batches."""
