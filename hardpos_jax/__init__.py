"""hardpos_jax: CLIP with hard negatives and hard positives in JAX/Flax."""
