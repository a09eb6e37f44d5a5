"""Hard negatives only (NegCLIP-style): the paper's "HN" row."""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, options = common.base_config(arg, hn_fraction=1.0)
  config.input.num_hard_negatives = 1
  config.input.hard_negative_fraction = options.hn_fraction
  return config
