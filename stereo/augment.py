"""Photometric augmentation of a training pair (``docs/stereo.md``, section 5); training only.

Images are H x W x 3 float32 on the [0, 1] scale. All randomness comes from the
``numpy.random.Generator`` passed in (seeded per sample by the caller), never from global state.

Right view only:
1. Gaussian noise with sigma 1/50, then clip to [0, 1].
2. With probability 0.5, a Gaussian blur with sigma ~ U[0, 1).
3. Colour jitter: brightness, contrast and saturation factors in [0.8, 1.2], hue shift in
   [-0.01, 0.01] (fraction of the colour circle), applied in that order.

Then, with probability 0.5, one more colour jitter drawn once and applied to *both* views.

The published code also augments at validation; here augmentation is a separate step that
:class:`stereo.dataset.StereoPairDataset` applies only when training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

NOISE_SIGMA = 1.0 / 50.0
BLUR_PROBABILITY = 0.5
BLUR_SIGMA_MAX = 1.0
JITTER_RANGE = 0.2  # brightness / contrast / saturation factors in [1 - r, 1 + r]
HUE_RANGE = 0.01
SHARED_JITTER_PROBABILITY = 0.5

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class ColourJitter:
    """One draw of colour-jitter parameters; apply it to as many images as should share it."""

    brightness: float
    contrast: float
    saturation: float
    hue: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> ColourJitter:
        lo, hi = 1.0 - JITTER_RANGE, 1.0 + JITTER_RANGE
        return cls(
            brightness=float(rng.uniform(lo, hi)),
            contrast=float(rng.uniform(lo, hi)),
            saturation=float(rng.uniform(lo, hi)),
            hue=float(rng.uniform(-HUE_RANGE, HUE_RANGE)),
        )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = np.clip(image * self.brightness, 0.0, 1.0)
        grey_mean = float((x @ _LUMA).mean())
        x = np.clip((x - grey_mean) * self.contrast + grey_mean, 0.0, 1.0)
        grey = (x @ _LUMA)[..., None]
        x = np.clip((x - grey) * self.saturation + grey, 0.0, 1.0)
        if self.hue != 0.0:
            x = shift_hue(x, self.hue)
        return x.astype(np.float32)


def shift_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of an RGB image in [0, 1] by ``shift`` turns (HSV round trip)."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    maxc = image.max(axis=-1)
    minc = image.min(axis=-1)
    delta = maxc - minc
    safe = np.where(delta > 0, delta, 1.0)
    h = np.where(maxc == r, (g - b) / safe, np.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    s = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1.0), 0.0)
    v = maxc
    h = (h + shift) % 1.0
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    i = i.astype(np.int64) % 6
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    out = np.stack([np.choose(i, choices_r), np.choose(i, choices_g), np.choose(i, choices_b)], axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def augment_right(right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise, optional blur and colour jitter of the right view (float32 in [0, 1])."""
    x = np.asarray(right, dtype=np.float32)
    x = np.clip(x + rng.normal(0.0, NOISE_SIGMA, size=x.shape).astype(np.float32), 0.0, 1.0)
    if rng.random() < BLUR_PROBABILITY:
        sigma = float(rng.uniform(0.0, BLUR_SIGMA_MAX))
        if sigma > 0:
            x = ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0.0))
    return ColourJitter.draw(rng)(x)


def augment_pair(left: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training augmentation of a pair: :func:`augment_right`, then a shared jitter half the time."""
    left = np.asarray(left, dtype=np.float32)
    right = augment_right(right, rng)
    if rng.random() < SHARED_JITTER_PROBABILITY:
        jitter = ColourJitter.draw(rng)
        left, right = jitter(left), jitter(right)
    return left, right
