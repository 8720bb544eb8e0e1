"""Loading visuals (paths, encoded bytes, PIL images) and LLaVA's pad-to-square step."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from harness.errors import DataFileError


def load_image(item: Any) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes, or a PIL image."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    try:
        if isinstance(item, bytes | bytearray):
            with Image.open(io.BytesIO(item)) as img:
                return img.convert("RGB")
        with Image.open(Path(item)) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        shown = f"<{len(item)} bytes>" if isinstance(item, bytes | bytearray) else str(item)
        raise DataFileError(f"cannot read image {shown}: {exc}") from exc


def expand_to_square(img: Image.Image, mean: Sequence[float]) -> Image.Image:
    """LLaVA-1.5's ``expand2square``: pad the short side with the processor's mean colour."""
    width, height = img.size
    if width == height:
        return img
    fill = tuple(int(m * 255) for m in mean)  # truncated, as LLaVA does
    side = max(width, height)
    out = Image.new(img.mode, (side, side), fill)
    out.paste(img, ((side - width) // 2, (side - height) // 2))
    return out
