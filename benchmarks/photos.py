"""Photo-like test images for the benchmarks (no flags, so any script can
import it)."""

import numpy as np


def photo_like(rng: np.random.Generator, width: int = 640,
               height: int = 480) -> np.ndarray:
  """uint8 [H, W, 3] noise with a 1/f^1.2 amplitude spectrum (1/f^2.4 power):
  natural-image statistics, so its JPEG is about as large as a COCO photo's
  (~160 KB at 640x480)."""
  fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
  f = np.maximum(np.sqrt(fx**2 + fy**2), 1 / max(height, width))
  channels = []
  for _ in range(3):
    spectrum = rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)
    x = np.fft.irfft2(spectrum / f**1.2, s=(height, width))
    channels.append((x - x.mean()) / x.std())
  return np.clip(128 + 50 * np.stack(channels, -1), 0, 255).astype(np.uint8)
