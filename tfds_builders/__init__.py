"""TFDS builders of hardpos_jax.

`import tfds_builders.registered` registers every builder with tfds;
importing one builder's module registers that one. The package itself
imports nothing, so that its TF-free parts (e.g.
`coco_hard_pos_neg/layout.py`, shared with the generator) load without
tensorflow_datasets.
"""
