"""LLaVA's pad-to-square step (reading visuals is :mod:`harness.media`)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


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
