"""Model families: the transformers classes behind each `encoder.family` and `lm.family`, and config checks.

Adding an encoder or LM of a known family is one YAML file; a new family is that plus one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
    StableLmConfig,
    StableLmForCausalLM,
    ViTConfig,
    ViTModel,
)


@dataclass(frozen=True)
class EncoderFamily:
    """How to build one family of transformers vision towers and cut it down to the LLaVA feature path."""

    config_cls: type
    model_cls: type
    layers: str                      # dotted path of the nn.ModuleList of transformer blocks
    unused: tuple[str, ...]          # dotted paths of final norms/heads the feature path never reaches
    prefix_tokens: Callable[[Mapping], int]   # CLS (+ register) tokens before the patch tokens
    interpolate_kwarg: bool          # forward takes `interpolate_pos_encoding` (DINOv2 always interpolates)
    # Config values that drop parameters the feature path never uses (unused trainable parameters break DDP).
    config_overrides: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)


ENCODERS: dict[str, EncoderFamily] = {
    "clip": EncoderFamily(CLIPVisionConfig, CLIPVisionModel, "vision_model.encoder.layers",
                          ("vision_model.post_layernorm",), lambda a: 1, True),
    "siglip": EncoderFamily(SiglipVisionConfig, SiglipVisionModel, "vision_model.encoder.layers",
                            ("vision_model.post_layernorm",), lambda a: 0, True,
                            config_overrides={"vision_use_head": False}),
    "dinov2": EncoderFamily(Dinov2Config, Dinov2Model, "encoder.layer", ("layernorm",),
                            lambda a: 1 + int(a.get("num_register_tokens", 0)), False,
                            config_overrides={"use_mask_token": False}),
    "vit": EncoderFamily(ViTConfig, ViTModel, "encoder.layer", ("layernorm",), lambda a: 1, True,
                         model_kwargs={"add_pooling_layer": False}),
}
OPEN_CLIP = "open_clip"              # built by ablate.models.encoder through open_clip, not transformers
ENCODER_FAMILIES = sorted([*ENCODERS, OPEN_CLIP])

# lm.family -> (config class, *ForCausalLM class)
LMS: dict[str, tuple[type, type]] = {
    "phi": (PhiConfig, PhiForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "gpt_neox": (GPTNeoXConfig, GPTNeoXForCausalLM),
    "stablelm": (StableLmConfig, StableLmForCausalLM),
}


class ModelConfigError(ValueError):
    """A model config value that cannot work; the message names the key, the value and what is valid."""


def encoder_family(enc_cfg) -> str:
    fam = enc_cfg.get("family")
    if fam not in ENCODER_FAMILIES:
        raise ModelConfigError(f"encoder.family={fam!r}: unknown encoder family; valid: {', '.join(ENCODER_FAMILIES)}")
    return fam


def lm_family(lm_cfg) -> tuple[type, type]:
    fam = lm_cfg.get("family")
    if fam not in LMS:
        raise ModelConfigError(f"lm.family={fam!r}: unknown LM family; valid: {', '.join(sorted(LMS))}")
    return LMS[fam]


def to_dict(node) -> dict:
    """A plain dict of a config node (DictConfig, dict or None)."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def scale_arch(cfg) -> str:
    arch = cfg.scale.arch
    if arch not in ("tiny", "full"):
        raise ModelConfigError(f"scale.arch={arch!r}: valid: tiny, full")
    return arch


def resolved_arch(section, kind: str, arch_scale: str, config_cls: type | None = None) -> dict[str, Any]:
    """`<kind>.arch` with `<kind>.tiny` merged over it at scale.arch=tiny; keys checked against config_cls.

    PretrainedConfig silently accepts any keyword, so a typo (`num_layers` for `num_hidden_layers`) would build
    a model of the default size; checking the keys against a default instance catches it here.
    """
    arch = to_dict(section.get("arch"))
    if arch_scale == "tiny":
        arch.update(to_dict(section.get("tiny")))
    if config_cls is not None:
        default = config_cls()
        known = default.to_dict()
        bad = sorted(k for k in arch if k not in known and not hasattr(default, k))
        if bad:
            raise ModelConfigError(
                f"{kind}.arch / {kind}.tiny key(s) {bad}: not fields of {config_cls.__name__}; "
                f"valid keys include: {', '.join(sorted(k for k in known if not k.startswith('_'))[:40])}")
    return arch


def get_path(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def set_path(module, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, value)
