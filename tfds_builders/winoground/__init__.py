"""The winoground TFDS builder (Thrush et al., CVPR 2022)."""
