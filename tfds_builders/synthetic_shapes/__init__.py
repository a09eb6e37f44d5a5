"""The synthetic_shapes and synthetic_shapes_benchmark TFDS builders."""
