"""FLOP counts of the CLIP towers and the measured matmul peak, shared by
the benchmarks that report utilisation."""

import statistics
import time

import jax
import jax.numpy as jnp


def forward_flops(config: dict, images: int, texts: int, length: int) -> int:
  """Matmul FLOPs of both towers' forward pass: `images` images and `texts`
  texts of `length` tokens (2 per multiply-add; norms, softmax and the
  loss left out, a fraction of a percent)."""

  def encoder(tower, tokens, seq):
    w, m = tower["width"], tower["mlp_dim"]
    # q, k, v, out projections and the MLP, per token; QK^T and AV per pair.
    per_token = 2 * (4 * w * w + 2 * w * m) + 2 * 2 * seq * w
    return tower["depth"] * tokens * per_token

  img, txt, e = config["image"], config["text"], config["embed_dim"]
  patches = (config["image_size"] // img["patch_size"]) ** 2
  seq = patches + (img.get("pool", "cls") == "cls")
  image = images * (2 * patches * img["patch_size"] ** 2 * 3 * img["width"]
                    + 2 * img["width"] * e) + encoder(img, images * seq, seq)
  text = texts * 2 * txt["width"] * e + encoder(txt, texts * length, length)
  return image + text


def matmul_peak(dtype: str) -> float:
  """FLOP/s of large jitted square matmuls on the default device: the best
  over three sizes of the median of 5 calls."""
  sizes = (1024, 2048, 4096) if jax.default_backend() == "cpu" else (
      4096, 8192, 16384)
  best = 0.0
  for n in sizes:
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    times = []
    for _ in range(5):
      start = time.perf_counter()
      f(a).block_until_ready()
      times.append(time.perf_counter() - start)
    best = max(best, 2 * n ** 3 / statistics.median(times))
  return best
