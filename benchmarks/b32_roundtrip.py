"""ViT-B/32-sized import -> encode -> export round trip, against transformers.

Random B/32 weights are written as an OpenAI-key `.pt`, loaded with
`hardpos_jax.load`, encoded, exported to a HF directory and an open_clip
`.safetensors`, and the HF export is run in `transformers.CLIPModel`. Prints
each step's seconds, the largest embedding difference and peak RSS.

  .venv/bin/python benchmarks/b32_roundtrip.py
"""

import os
import resource
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

import hardpos_jax
from hardpos_jax import convert
from hardpos_jax.models import clip

CAPTIONS = ["a photo of a cat", "chair in conference room",
            "three giraffes and two antelope"]


def main():
  timings = {}
  t = time.perf_counter()

  def lap(name):
    nonlocal t
    timings[name] = time.perf_counter() - t
    t = time.perf_counter()

  with tempfile.TemporaryDirectory() as tmp:
    config = clip.model_config("B/32")
    params = clip.init_params(config, jax.random.key(0))
    pt = os.path.join(tmp, "ViT-B-32.pt")
    convert.write_open_clip(pt, config, params)
    del params
    lap("write random B/32 .pt")
    model = hardpos_jax.load(pt)
    lap("hardpos_jax.load(.pt)")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
              for _ in range(4)]
    pixels = model.preprocess(images)
    zimg, ztxt = model.encode_image(pixels), model.encode_text(CAPTIONS)
    lap("preprocess + encode (4 images, 3 captions, incl. compile)")
    hf_dir = os.path.join(tmp, "hf")
    model.export("hf", hf_dir)
    model.export("open_clip", os.path.join(tmp, "export.safetensors"))
    lap("export hf + open_clip")
    hf = transformers.CLIPModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
      out = hf(input_ids=torch.from_numpy(model.tokenize(CAPTIONS)).long(),
               pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
    lap("transformers load + forward")
  diff = max(np.abs(out.image_embeds.numpy() - zimg).max(),
             np.abs(out.text_embeds.numpy() - ztxt).max())
  for name, seconds in timings.items():
    print(f"{name:60s} {seconds:7.1f} s")
  print(f"max |embedding difference| hardpos_jax vs transformers: {diff:.2e}")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"peak RSS: {peak:.1f} GiB")


if __name__ == "__main__":
  main()
