"""The hard_positives TFDS builder (Kamath et al., ECCV 2024 benchmark)."""
