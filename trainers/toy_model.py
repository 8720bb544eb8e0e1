"""A tiny LLaVA built from config classes: word-level tokenizer, processor, model.

Everything here is constructed offline (no hub downloads) and saves as a
standard Hugging Face folder that ``LlavaForConditionalGeneration`` and
``AutoProcessor`` load directly.

Layout of the model (LLaVA-1.5 architecture at toy scale):

* vision tower: ``CLIPVisionModel`` (ViT, CLS token + patches),
* projector: LLaVA's 2-layer MLP (``linear_1 -> GELU -> linear_2``),
* language model: a Llama decoder with its own ``lm_head``.

The tokenizer is a ``tokenizers`` WordLevel model over the words of a text
corpus (punctuation split off), wrapped in ``PreTrainedTokenizerFast``. Its
decoder glues punctuation back (``"red ."`` -> ``"red."``), so short answers
round-trip exactly through encode/decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

UNK, PAD, BOS, EOS, IMAGE = "<unk>", "<pad>", "<s>", "</s>", "<image>"
SPECIAL_TOKENS = (UNK, PAD, BOS, EOS, IMAGE)
# CLIP's normalisation constants: the adapter pads non-square images with this mean colour.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# A LLaVA-style chat template (``USER: <image>\n{text} ASSISTANT: {answer}</s>``), saved with
# the processor so ``processor.apply_chat_template`` reproduces the "llava_hf" prompt format.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% endif %}{% endfor %}{% for item in message['content'] %}{% if item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% elif message['role'] == 'assistant' %} ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


@dataclass(frozen=True)
class TinyLlavaSpec:
    """Sizes of a tiny LLaVA (the defaults are the toy-llava model)."""

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 96
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 256
    # -1: the last vision layer (LLaVA-1.5 uses -2 of a 24-layer tower; with 2 layers
    # the penultimate one would leave the last layer untrained and unused).
    vision_feature_layer: int = -1
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 384  # multiple of 128: every Linear quantizes at G128
    max_positions: int = 1024
    rope_theta: float = 10000.0
    # lm_head shares the input embedding matrix (as in many small LMs;
    # not LLaVA-1.5's Vicuna). Tried for toy-llava's multiple choice, not adopted
    # (docs/research/toy-llava-multiple-choice.md).
    tie_word_embeddings: bool = False

    @property
    def image_seq_length(self) -> int:
        """Image tokens per image in the language model (patches; CLS dropped)."""
        return (self.image_size // self.patch_size) ** 2


def build_tokenizer(texts: Iterable[str], *, min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over every word (and punctuation mark) in ``texts``."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # WordPiece's decoder joins with spaces and removes them before punctuation/contractions.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordLevelTrainer(
        special_tokens=list(SPECIAL_TOKENS), min_frequency=min_frequency, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def build_processor(tokenizer: PreTrainedTokenizerFast, spec: TinyLlavaSpec) -> LlavaProcessor:
    """LlavaProcessor: CLIP preprocessing at ``spec.image_size`` px, one token per patch."""
    size = spec.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_center_crop=True,
        do_resize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        # CLS is counted by the processor and dropped by the "default" select strategy.
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE,
    )


def build_config(tokenizer: PreTrainedTokenizerFast, spec: TinyLlavaSpec) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=spec.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=spec.image_seq_length,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=spec.vision_feature_layer,
    )
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    # transformers' Llava ties lm_head to the embeddings by the top-level flag
    config.tie_word_embeddings = spec.tie_word_embeddings
    return config


def build_model(
    tokenizer: PreTrainedTokenizerFast, spec: TinyLlavaSpec, *, seed: int = 0
) -> LlavaForConditionalGeneration:
    """A freshly initialised tiny LLaVA (deterministic for a given seed)."""
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(tokenizer, spec))
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.do_sample = False
    return model


def spec_dict(spec: TinyLlavaSpec) -> dict[str, object]:
    return asdict(spec)
