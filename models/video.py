"""Uniform frame sampling from video files with PyAV.

``sample_frames(path, n)`` returns ``n`` RGB frames at ``linspace(0, total-1, n)``
(integer truncation, as Video-LLaVA's loader does). Frames are counted by
demuxing packets (no decoding) when the container does not say, and only the
chosen frames are converted to images, so long videos cost little memory.
A file that cannot be opened or decoded raises :class:`DataFileError`,
which adapters turn into a per-sample error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from harness.errors import DataFileError
from harness.requests import VIDEO_SUFFIXES, is_video

__all__ = ["VIDEO_SUFFIXES", "frame_indices", "is_video", "sample_frames"]


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
