"""A request as the model's tokenizer gets it, from the eval profile alone (no weights).

``harness prompts`` renders with these functions, and every adapter's
``rendered_prompt`` gives the same string (tests check it on each family's
tiny model): the chat template of the profile around the user text, with one
media placeholder per image and, per video, what the family's eval code puts
for it (``frames``: one image placeholder per sampled frame; ``video``: one
video placeholder; ``pooled``: one image placeholder that the pooled frame
features replace).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.api.profile import EvalProfile
from harness.api.requests import Request, is_video
from harness.errors import HarnessError
from harness.models.chat import ChatTemplate, get_template

DEFAULT_FRAMES = 8


def profile_template(profile: EvalProfile, task: str = "") -> ChatTemplate:
    """The chat template the profile uses for ``task`` (some authors changed it per benchmark)."""
    return get_template(str(profile.template_for(task)["template"]))


def num_frames(profile: EvalProfile, override: int | None = None) -> int:
    """Frames per video: the override (``--num-frames`` / registry option), else the profile's."""
    if override is not None:
        return int(override)
    video = profile.video.settings if profile.video is not None else {}
    return int(video.get("num_frames", DEFAULT_FRAMES))


def media_placeholders(
    profile: EvalProfile, visuals: Sequence[Any], frames: int | None = None
) -> list[str]:
    """The placeholder texts the prompt holds for ``visuals``, in order."""
    image = str(profile.template.settings.get("image_token", "<image>"))
    video_token = str(profile.template.settings.get("video_token", "<video>"))
    video = profile.video.settings if profile.video is not None else {}
    mode = video.get("placeholder", "frames")
    out: list[str] = []
    for item in visuals:
        if not is_video(item):
            out.append(image)
        elif mode == "frames":
            out.extend([image] * num_frames(profile, frames))
        elif mode == "video":
            out.append(video_token)
        elif mode == "pooled":
            out.append(image)
        else:
            raise HarnessError(f"profile {profile.name}: video placeholder {mode!r} unknown")
    return out


def render_prompt(profile: EvalProfile, request: Request, frames: int | None = None) -> str:
    """The full prompt text before media tokens are expanded."""
    template = profile_template(profile, request.task)
    return template.prompt(request.prompt, media_placeholders(profile, request.visuals, frames))


def media_summary(profile: EvalProfile, visuals: Sequence[Any], frames: int | None = None) -> list:
    """What each visual becomes: its path, kind, and the profile's preprocessing of it."""
    out = []
    for item in visuals:
        if is_video(item):
            video = dict(profile.video.settings) if profile.video is not None else {}
            video["num_frames"] = num_frames(profile, frames)
            out.append({"path": str(item), "kind": "video", "preprocessing": video})
        else:
            shown = str(item) if not isinstance(item, bytes | bytearray) else "<bytes>"
            out.append(
                {"path": shown, "kind": "image", "preprocessing": dict(profile.image.settings)}
            )
    return out
