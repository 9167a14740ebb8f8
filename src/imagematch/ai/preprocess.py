"""open_clip's inference preprocessing in Pillow and numpy, without PyTorch.

Resize (shortest side, or squash), centre crop, scale to [0, 1] and normalise, channels first: the same
arithmetic as open_clip's torchvision pipeline on a PIL image (torchvision resizes PIL images with Pillow), so
vectors match (checked in tests/ai/test_light.py). Other modes fall back to open_clip's own transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

SUPPORTED_MODES = ("shortest", "squash")
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ImagePreprocessor:
    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
    ) -> None:
        if resize_mode not in SUPPORTED_MODES:
            raise ValueError(f"resize mode {resize_mode!r} is not supported here")
        self.size = size
        self.resample = _FILTERS.get(interpolation, Image.Resampling.BICUBIC)  # "random" means bicubic at inference
        self.resize_mode = resize_mode
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def _resized(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if self.resize_mode == "squash":
            return image.resize((self.size, self.size), self.resample)
        if width <= height:
            target = (self.size, int(self.size * height / width))
        else:
            target = (int(self.size * width / height), self.size)
        resized = image if target == image.size else image.resize(target, self.resample)
        left = round((resized.width - self.size) / 2.0)
        top = round((resized.height - self.size) / 2.0)
        return resized.crop((left, top, left + self.size, top + self.size))

    def __call__(self, image: Image.Image) -> npt.NDArray[np.float32]:
        pixels = np.asarray(self._resized(image.convert("RGB")), dtype=np.float32) / 255.0
        normalised: npt.NDArray[np.float32] = (pixels.transpose(2, 0, 1) - self.mean) / self.std
        return normalised.astype(np.float32)
