"""The hard_positives TFDS builder (Kamath et al., ECCV 2024 benchmark)."""

from tfds_builders.hard_positives.hard_positives import HardPositives
