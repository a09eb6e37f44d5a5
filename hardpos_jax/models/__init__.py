"""Flax CLIP towers; see clip.py for the two-tower model and its params."""

from hardpos_jax.models.clip import CLIP, VARIANTS, init_params, model_config
