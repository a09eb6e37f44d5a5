"""The synthetic_shapes and synthetic_shapes_benchmark TFDS builders."""
from tfds_builders.synthetic_shapes.synthetic_shapes import (
    SyntheticShapes,
    SyntheticShapesBenchmark,
)
