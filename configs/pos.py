"""Hard positives only: the paper's "HP" row (`hp=swap|replace|both`)."""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, options = common.base_config(arg, hp="both")
  config.input.num_hard_positives = 1
  config.input.hard_positive_kinds = options.hp
  return config
