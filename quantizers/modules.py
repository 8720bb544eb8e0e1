"""Find a VLM's parts from its module tree and decide which Linear layers to quantize.

The language model is found from the text input embedding
(``get_input_embeddings()``, or the first module that offers it): its owner that
also holds an ``nn.ModuleList`` of decoder layers (children with Linear layers)
is the language model, and that list is the decoder layer list. lm_head is
``get_output_embeddings()``. Everything outside the language model and lm_head is
on the vision side: modules reached by the tower attributes (``vision_tower``,
``visual``, ``image_tower``, ``video_tower``, ...) are vision towers, those reached
by projector attributes (``multi_modal_projector``, ``mm_projector``, Qwen's
``visual.merger``, ...) are projectors. A Linear is classified by the part that
contains it, never by a regex over its name, so a vision block can never be taken
for a decoder layer. Vision-side Linear layers in neither part are ``other`` and
always kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from harness.errors import QuantizationError

TOWER_ATTRS = (
    "vision_tower",
    "visual",
    "vision_model",
    "image_tower",
    "video_tower",
    "vision_encoder",
    "audio_tower",
)
PROJECTOR_ATTRS = (
    "multi_modal_projector",
    "mm_projector",
    "merger",
    "projector",
    "connector",
    "mlp1",
)
CATEGORIES = ("decoder", "vision", "projector", "lm_head", "other")


class ModelStructureError(QuantizationError):
    """The module tree has no recognisable language model / decoder layer list."""


@dataclass
class ModelParts:
    language_model: str  # full module name ("" for the root)
    layers: str  # the decoder nn.ModuleList
    layer_names: list[str]
    lm_head: str | None
    vision_towers: list[str] = field(default_factory=list)
    projectors: list[str] = field(default_factory=list)


@dataclass
class LinearSelection:
    quantize: list[str]
    keep: list[str]
    category: dict[str, str]  # every Linear's part


def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules(remove_duplicate=False)}


def _is_decoder_list(mod: nn.Module) -> bool:
    if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
        return False
    return all(any(isinstance(s, nn.Linear) for s in child.modules()) for child in mod)


def _input_embedding(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(module offering get_input_embeddings, the embedding) -- searching top-down."""
    for _, mod in model.named_modules():
        getter = getattr(mod, "get_input_embeddings", None)
        if getter is None:
            continue
        try:
            emb = getter()
        except (NotImplementedError, AttributeError):
            continue
        if isinstance(emb, nn.Embedding):
            return mod, emb
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if not embeddings:
        raise ModelStructureError(f"{type(model).__name__}: no input embedding found")
    return model, max(embeddings, key=lambda e: e.num_embeddings)


def find_parts(model: nn.Module) -> ModelParts:
    names = _names(model)
    owner, emb = _input_embedding(model)
    emb_name = names[id(emb)]
    # The decoder layers live next to the input embedding, in the module that holds both
    # (LLaVA/Qwen2-VL language_model.{embed_tokens, layers}, Qwen-VL transformer.{wte, h},
    # VILA llm.model.{embed_tokens, layers}). No search further up: there the first layer
    # list could be the vision tower's, which would then be quantized as the LM.
    path = emb_name.split(".")
    lm_name = ".".join(path[:-1])
    lm = model.get_submodule(lm_name) if lm_name else model
    layers_name = next(
        (n for n, child in lm.named_modules(prefix=lm_name) if _is_decoder_list(child)), None
    )
    if layers_name is None:
        where = f"{lm_name!r}" if lm_name else "the model's top level"
        raise ModelStructureError(
            f"{type(model).__name__}: no nn.ModuleList of decoder layers in {where}, the "
            f"module that holds the input embedding {emb_name!r}; this model's layout is not "
            "supported by the quantizers"
        )
    layers = model.get_submodule(layers_name)
    layer_names = [f"{layers_name}.{i}" for i in range(len(layers))]

    lm_head = None
    out_getter = getattr(owner, "get_output_embeddings", None)
    if out_getter is not None:
        try:
            head = out_getter()
        except (NotImplementedError, AttributeError):
            head = None
        if isinstance(head, nn.Linear):
            lm_head = names.get(id(head))

    towers: list[str] = []
    projectors: list[str] = []
    lm_prefix = lm_name + "." if lm_name else ""

    def inside_lm(name: str) -> bool:
        return bool(lm_name) and (name == lm_name or name.startswith(lm_prefix))

    if lm_name:  # the root is the language model itself for text-only models
        for name, mod in model.named_modules():
            if not name or inside_lm(name) or name == lm_head:
                continue
            attr = name.rsplit(".", 1)[-1]
            if any(_under(name, p) for p in projectors):
                continue
            if attr in PROJECTOR_ATTRS:
                projectors.append(name)
            elif attr in TOWER_ATTRS and not any(_under(name, t) for t in towers):
                if any(isinstance(s, nn.Linear) for s in mod.modules()):
                    towers.append(name)
    return ModelParts(
        language_model=lm_name or "",
        layers=layers_name,
        layer_names=layer_names,
        lm_head=lm_head,
        vision_towers=towers,
        projectors=projectors,
    )


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def classify_linears(model: nn.Module, parts: ModelParts | None = None) -> dict[str, str]:
    """Full name of every ``nn.Linear`` -> its part (see ``CATEGORIES``)."""
    parts = parts or find_parts(model)
    out: dict[str, str] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        if name == parts.lm_head:
            out[name] = "lm_head"
        elif any(_under(name, layer) for layer in parts.layer_names):
            out[name] = "decoder"
        elif any(_under(name, p) for p in parts.projectors):
            out[name] = "projector"
        elif any(_under(name, t) for t in parts.vision_towers):
            out[name] = "vision"
        else:
            out[name] = "other"
    return out


def select_linears(
    model: nn.Module,
    *,
    vision: bool = False,
    projector: bool = False,
    lm_head: bool = False,
    parts: ModelParts | None = None,
) -> LinearSelection:
    """Which Linear layers a recipe quantizes (default: decoder layers only) and which stay."""
    category = classify_linears(model, parts)
    wanted = {"decoder"}
    if vision:
        wanted.add("vision")
    if projector:
        wanted.add("projector")
    if lm_head:
        wanted.add("lm_head")
    quantize = [n for n, c in category.items() if c in wanted]
    keep = [n for n, c in category.items() if c not in wanted]
    return LinearSelection(quantize=quantize, keep=keep, category=category)


def select_for_recipe(model: nn.Module, recipe, parts: ModelParts | None = None) -> LinearSelection:
    return select_linears(
        model,
        vision=recipe.quantize_vision,
        projector=recipe.quantize_projector,
        lm_head=recipe.quantize_lm_head,
        parts=parts,
    )


# -- the Llama-like decoder layer pattern used by AWQ ------------------------------------------


@dataclass
class ScaleGroup:
    """Linear layers sharing one input, the op before them, and the module to inspect."""

    prev: str  # relative name in the decoder layer (norm or Linear)
    linears: list[str]  # relative names
    inspect: str  # relative name of the module whose output gives the loss
    kind: str  # "attn_in", "v_o", "mlp_in", "up_down"


def llama_scale_groups(layer: nn.Module) -> list[ScaleGroup] | None:
    """AWQ's four scaling groups for a Llama-like decoder layer, or None when it is not one."""
    need = [
        "input_layernorm",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "post_attention_layernorm",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ]
    try:
        mods = {n: layer.get_submodule(n) for n in need}
    except AttributeError:
        return None
    if not all(isinstance(mods[n], nn.Linear) for n in need if "proj" in n):
        return None
    groups = [
        ScaleGroup(
            "input_layernorm",
            ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            "self_attn",
            "attn_in",
        )
    ]
    v, o = mods["self_attn.v_proj"], mods["self_attn.o_proj"]
    if v.weight.shape[0] == o.weight.shape[1]:  # skipped with grouped-query attention
        groups.append(
            ScaleGroup("self_attn.v_proj", ["self_attn.o_proj"], "self_attn.o_proj", "v_o")
        )
    groups.append(
        ScaleGroup("post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"], "mlp", "mlp_in")
    )
    groups.append(ScaleGroup("mlp.up_proj", ["mlp.down_proj"], "mlp.down_proj", "up_down"))
    return groups
