"""The sugar_crepe TFDS builder (Hsieh et al., NeurIPS 2023)."""
