"""The sugar_crepe_pp TFDS builder (Dumpala et al., NeurIPS 2024 D&B)."""
