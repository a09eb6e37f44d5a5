"""OpenAI CLIP's eval transform, in PIL and numpy (no TF, no torchvision).

`clip_eval_image` is OpenAI CLIP's `_transform(n_px)` (torchvision Resize with
PIL bicubic, CenterCrop, ToTensor, Normalize), so evaluation and
`hardpos_jax.Model.preprocess` match the paper's `run_eval.py`; importing it
pulls in no TF, so loading, encoding and exporting need none.
"""

import io

import numpy as np
from PIL import Image

# OpenAI CLIP's normalisation (clip/clip.py `_transform`).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)



def decode_rgb(data: bytes) -> np.ndarray:
  """Encoded image bytes -> uint8 [H, W, 3], as PIL `open().convert("RGB")`."""
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def clip_eval_image(image: np.ndarray, size: int) -> np.ndarray:
  """OpenAI CLIP's eval transform of one image.

  Args:
    image: uint8 [H, W, 3] RGB.
    size: S, the model's input side.

  Returns:
    float32 [S, S, 3], normalised with CLIP's mean and std.
  """
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(
        f"Expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
  height, width = image.shape[:2]
  # torchvision Resize(int): the short side becomes S, the long side is
  # truncated (`int(S * long / short)`), as in `_compute_resized_output_size`.
  if height <= width:
    new_h, new_w = size, int(size * width / height)
  else:
    new_h, new_w = int(size * height / width), size
  pil = Image.fromarray(image)
  if (new_h, new_w) != (height, width):
    pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
  # torchvision CenterCrop: Python's round (half to even) of the margins.
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  pixels = np.asarray(pil)[top:top + size, left:left + size]
  # ToTensor divides by 255 in float32; Normalize subtracts, then divides.
  pixels = pixels.astype(np.float32) / np.float32(255)
  return (pixels - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
