"""Reading visuals: images (paths, encoded bytes, PIL images) and uniform video frames.

Shared by the model adapters (evaluation) and the synthetic world's training
data, so neither imports the other. ``sample_frames(path, n)`` returns ``n``
RGB frames at ``linspace(0, total-1, n)`` (integer truncation, as
Video-LLaVA's loader does). Frames are counted by demuxing packets (no
decoding) when the container does not say, and only the chosen frames are
converted to images, so long videos cost little memory. A file that cannot be
read raises :class:`~harness.errors.DataFileError`, which adapters turn into a
per-sample failure.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness.api.requests import VIDEO_SUFFIXES, is_video
from harness.errors import DataFileError

__all__ = ["VIDEO_SUFFIXES", "frame_indices", "is_video", "load_image", "sample_frames"]


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


def frame_indices(total: int, n: int) -> list[int]:
    """``n`` indices spread over ``total`` frames (repeats when the video is shorter)."""
    if total <= 0:
        raise ValueError("video has no frames")
    return [int(i) for i in np.linspace(0, total - 1, n)]


def sample_frames(path: str | Path, n: int = 8) -> list[Image.Image]:
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataFileError(f"{path}: no video stream")
            stream = container.streams.video[0]
            total = stream.frames or sum(
                1 for p in container.demux(stream) if p.size and p.pts is not None
            )
        wanted = frame_indices(total, n)
        chosen: dict[int, Image.Image] = {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            last = max(wanted)
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    chosen[index] = frame.to_image().convert("RGB")
                if index >= last:
                    break
    except DataFileError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataFileError(f"cannot read video {path}: {exc}") from exc
    if not chosen:
        raise DataFileError(f"cannot read video {path}: no decodable frames")
    # Containers can over-count frames; fall back to the last decoded frame.
    last_seen = chosen[max(chosen)]
    return [chosen.get(i, last_seen) for i in wanted]
