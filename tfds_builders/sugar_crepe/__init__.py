"""The sugar_crepe TFDS builder (Hsieh et al., NeurIPS 2023)."""

from tfds_builders.sugar_crepe.sugar_crepe import SugarCrepe
