"""Conversation templates: how a family wraps the user's text and media placeholders.

The evaluation prompt must be the one the model was trained with (and the one
the official evaluation scripts used), so the template is part of the model's
registry entry, and the trainer formats its data with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError

VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclass(frozen=True)
class ChatTemplate:
    """``{system}{sep}{user_role}{media}\\n{text}{sep}{assistant_role}`` (LLaVA's conv_*)."""

    name: str
    system: str
    user_role: str
    assistant_role: str
    sep: str = " "

    def prompt(self, text: str, media: list[str] | tuple[str, ...] = ()) -> str:
        """The generation prompt: everything up to and including the assistant role."""
        body = "".join(f"{m}\n" for m in media) + text
        head = f"{self.system}{self.sep}" if self.system else ""
        return f"{head}{self.user_role}{body}{self.sep}{self.assistant_role}"

    def training_pair(
        self, text: str, answer: str, eos: str, media: list[str] | tuple[str, ...] = ()
    ) -> tuple[str, str]:
        """(prompt, completion): the loss is taken on the completion only."""
        return self.prompt(text, media), f" {answer}{eos}"


TEMPLATES: dict[str, ChatTemplate] = {
    # LLaVA-1.5 / Video-LLaVA / VILA1.5 (vicuna) evaluation scripts: conv_vicuna_v1.
    "vicuna_v1": ChatTemplate("vicuna_v1", VICUNA_SYSTEM, "USER: ", "ASSISTANT:"),
    # llava-hf model cards: no system text.
    "llava_hf": ChatTemplate("llava_hf", "", "USER: ", "ASSISTANT:"),
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise HarnessError(
            f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}"
        ) from None
