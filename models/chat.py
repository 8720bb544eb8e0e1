"""Conversation templates: how a family wraps the user's text and media placeholders.

The evaluation prompt must be the one the model was trained with (and the one
the official evaluation scripts used), so the template is part of the model's
eval profile, and the trainer formats its data with the same function.

Each template is a transcription of one ``Conversation`` of the family's
``conversation.py`` (system text, roles, separator style, separators); the
rendering below is that file's ``get_prompt`` for one user turn followed by the
empty assistant turn that ``model_vqa*.py`` appends (``conv.append_message(
conv.roles[1], None)``). Media placeholders go before the text, each followed
by ``media_sep``, as the eval scripts prepend ``DEFAULT_IMAGE_TOKEN + '\\n'``.
Golden tests (tests/test_prompt_golden.py) pin the rendered strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError

# haotian-liu/LLaVA llava/conversation.py: conv_vicuna_v1 ("user") vs conv_llava_v1 /
# conv_llava_v0 / conv_vicuna_v0 ("human"): the two texts differ in these words only.
SYSTEM_USER = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SYSTEM_HUMAN = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

STYLES = ("single", "two", "mpt")


@dataclass(frozen=True)
class ChatTemplate:
    """One ``Conversation`` of a family's conversation.py, rendered for generation.

    Styles (``SeparatorStyle``), for a user message ``m`` and the empty assistant turn:

    - ``single``: ``{system}{sep}{user}: {m}{sep}{assistant}:``
    - ``two``:    ``{system}{sep}{user}: {m}{sep}{assistant}:`` (``sep2`` ends assistant turns)
    - ``mpt``:    ``{system}{sep}{user}{m}{sep}{assistant}`` (roles carry their own markup:
      ChatML, and VILA's ``LLAMA_3`` style, which renders a generation prompt the same way)

    An empty ``system`` renders no system part at all (llava-hf's chat template).
    """

    name: str
    system: str
    user_role: str
    assistant_role: str
    style: str = "two"
    sep: str = " "
    sep2: str = "</s>"
    media_sep: str = "\n"
    source: str = ""

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"template {self.name}: style {self.style!r}: expected {STYLES}")

    def _role(self, role: str) -> str:
        return f"{role}: " if self.style in {"single", "two"} else role

    def _open(self, role: str) -> str:
        return f"{role}:" if self.style in {"single", "two"} else role

    def prompt(self, text: str, media: list[str] | tuple[str, ...] = ()) -> str:
        """The generation prompt: everything up to and including the assistant role."""
        body = "".join(f"{m}{self.media_sep}" for m in media) + text
        head = f"{self.system}{self.sep}" if self.system else ""
        return (
            f"{head}{self._role(self.user_role)}{body}{self.sep}{self._open(self.assistant_role)}"
        )

    def training_pair(
        self, text: str, answer: str, eos: str, media: list[str] | tuple[str, ...] = ()
    ) -> tuple[str, str]:
        """(prompt, completion): the loss is taken on the completion only."""
        if self.style != "two":
            raise HarnessError(f"template {self.name}: training pairs are built for 'two' only")
        return self.prompt(text, media), f" {answer}{eos}"

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "style": self.style,
            "system": self.system,
            "roles": f"{self.user_role!r}, {self.assistant_role!r}",
            "sep": self.sep,
            "sep2": self.sep2,
            "media_sep": self.media_sep,
        }


LLAVA_CONV = "haotian-liu/LLaVA llava/conversation.py"

TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        # LLaVA-1.5's eval scripts (scripts/v1_5/eval/*.sh --conv-mode vicuna_v1): conv_vicuna_v1.
        ChatTemplate(
            "vicuna_v1", SYSTEM_USER, "USER", "ASSISTANT", source=f"{LLAVA_CONV}:conv_vicuna_v1"
        ),
        # conv_llava_v1: the "human" text with vicuna_v1's roles and separators.
        ChatTemplate(
            "llava_v1", SYSTEM_HUMAN, "USER", "ASSISTANT", source=f"{LLAVA_CONV}:conv_llava_v1"
        ),
        # conv_llava_v0: "###Human: ... ###Assistant:" (SeparatorStyle.SINGLE, sep "###").
        ChatTemplate(
            "llava_v0",
            SYSTEM_HUMAN,
            "Human",
            "Assistant",
            style="single",
            sep="###",
            sep2="",
            source=f"{LLAVA_CONV}:conv_llava_v0",
        ),
        # NVlabs/VILA (vila1.5 branch, 6b941da) llava/conversation.py:hermes_2 (VILA1.5-40b).
        ChatTemplate(
            "hermes_2",
            "<|im_start|>system\nAnswer the questions.",
            "<|im_start|>user\n",
            "<|im_start|>assistant\n",
            style="mpt",
            sep="<|im_end|>",
            sep2="<|im_end|>",
            source="NVlabs/VILA@6b941da llava/conversation.py:hermes_2",
        ),
        # NVlabs/VILA (vila1.5 branch, 6b941da) llava/conversation.py:llama_3_chat, as
        # Llama-3-VILA1.5-8b was trained with it: the assistant turn opens with a *system*
        # header and turns end with <|end_of_text|> (changed only in 54c9706, LongVILA).
        ChatTemplate(
            "llama_3",
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "You are a helpful language and vision assistant. "
            "You are able to understand the visual content that the user provides, "
            "and assist the user with a variety of tasks using natural language.",
            "<|start_header_id|>user<|end_header_id|>\n\n",
            "<|start_header_id|>system<|end_header_id|>\n\n",
            style="mpt",
            sep="<|end_of_text|>",
            sep2="<|end_of_text|>",
            source="NVlabs/VILA@6b941da llava/conversation.py:llama_3_chat",
        ),
        # llava-hf model cards: "USER: <image>\n{prompt} ASSISTANT:" without a system text.
        ChatTemplate(
            "llava_hf",
            "",
            "USER",
            "ASSISTANT",
            source="llava-hf/llava-1.5-7b-hf chat_template.json (model card prompt format)",
        ),
        # Qwen2-VL / Qwen2.5-VL chat_template (ChatML; default system text; vision tokens
        # inline, no newline after them). The checkpoint's own template is used at run time
        # and checked against this one when the model loads.
        ChatTemplate(
            "qwen2_vl",
            "<|im_start|>system\nYou are a helpful assistant.",
            "<|im_start|>user\n",
            "<|im_start|>assistant\n",
            style="mpt",
            sep="<|im_end|>\n",
            sep2="<|im_end|>\n",
            media_sep="",
            source="Qwen/Qwen2-VL-7B-Instruct chat_template.json",
        ),
    )
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise HarnessError(
            f"unknown chat template {name!r}; known: {', '.join(sorted(TEMPLATES))}"
        ) from None
