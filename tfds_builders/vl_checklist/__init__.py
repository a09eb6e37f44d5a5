"""The vl_checklist TFDS builder (Zhao et al., 2022)."""
