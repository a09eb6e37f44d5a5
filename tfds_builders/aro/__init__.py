"""The aro TFDS builder (Yuksekgonul et al., ICLR 2023 benchmark)."""
