"""TFDS builders of hardpos_jax; importing this registers them with tfds."""
