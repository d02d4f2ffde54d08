"""Decoding one image file for the dataset plugins, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from harness.errors import HarnessError


def decode_image(path: Path | BinaryIO, mode: str, size: int, dataset: str) -> np.ndarray:
    """``path`` (a file, or an encoded image in memory) as uint8 ``[size, size]`` (mode "L") or ``[size, size, 3]``
    (mode "RGB").

    Images of another size are resized with Lanczos, as the reference MAML
    preprocessing (``resize_images.py``) does.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.LANCZOS)
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise HarnessError(f"{dataset} image is missing: {path}") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise HarnessError(f"cannot read {dataset} image {path}: {exc}") from None
