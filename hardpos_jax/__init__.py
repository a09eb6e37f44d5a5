"""hardpos_jax: CLIP with hard negatives and hard positives in JAX/Flax."""

from hardpos_jax.api import Model, load
