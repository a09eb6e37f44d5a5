"""The control: fine-tuning on the same captions, no hard negatives/positives."""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.base_config(arg)[0]
