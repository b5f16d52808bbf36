"""The vision encoder: a transformers or open_clip ViT cut at `encoder.feature_layer`, returning patch tokens.

Blocks above the feature layer and the final norm/pooling head are removed after building or loading: they
never reach the LM, and trainable parameters without gradients would break DDP and inflate parameter counts.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ablate.models.registry import (
    ENCODERS,
    OPEN_CLIP,
    ModelConfigError,
    encoder_family,
    get_path,
    resolved_arch,
    set_path,
    to_dict,
)


def kept_blocks(n_blocks: int, feature_layer: int) -> int:
    """How many blocks produce hidden state `feature_layer` (states are: embeddings, block 1, ..., block N)."""
    a = feature_layer if feature_layer >= 0 else n_blocks + 1 + feature_layer
    if not 1 <= a <= n_blocks:
        raise ModelConfigError(
            f"encoder.feature_layer={feature_layer}: the encoder has {n_blocks} blocks, so valid values are "
            f"1..{n_blocks} or -{n_blocks}..-1 (-1 = last block, -2 = penultimate as LLaVA)")
    return a


def _prefix_tokens(enc_cfg) -> int:
    fam = encoder_family(enc_cfg)
    if fam == OPEN_CLIP:
        return int(enc_cfg.get("prefix_tokens", 1))
    return ENCODERS[fam].prefix_tokens(to_dict(enc_cfg.get("arch")))


def num_image_tokens(enc_cfg, resolution: int) -> int:
    """Tokens one image becomes at `resolution`: (resolution // patch)^2, plus CLS/registers unless dropped."""
    grid = int(resolution) // int(enc_cfg.patch_size)
    return grid * grid + (0 if enc_cfg.drop_cls else _prefix_tokens(enc_cfg))


def valid_resolution(enc_cfg, resolution) -> tuple[bool, str]:
    """(ok, message): a resolution works if it is a multiple of the patch size or the encoder's native one."""
    p, native = int(enc_cfg.patch_size), int(enc_cfg.native_resolution)
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < p:
        return False, f"must be an integer number of pixels >= the patch size {p} of encoder={enc_cfg.name}"
    if resolution % p == 0 or resolution == native:
        return True, ""
    lo, hi = (resolution // p) * p, (resolution // p + 1) * p
    return False, (f"not usable with encoder={enc_cfg.name} (patch {p}): use a multiple of {p} "
                   f"(e.g. {lo} or {hi}) or its native resolution {native}")


class VisionEncoder(nn.Module):
    """(N, 3, H, W) images -> (N, L_img, D_v) hidden states of the feature layer, CLS dropped if asked."""

    def __init__(self, model: nn.Module, *, family: str, hidden_size: int, patch_size: int, prefix: int,
                 drop_cls: bool, open_clip_block: int | None = None):
        super().__init__()
        self.model = model           # may later be wrapped by peft (ablate.models.adapt)
        self.family = family
        self.hidden_size = hidden_size
        self.patch_size = patch_size
        self.prefix = prefix         # CLS/register tokens the model puts before the patches
        self.drop_cls = drop_cls
        self.open_clip_block = open_clip_block

    @property
    def backbone(self) -> nn.Module:
        """The underlying model (LoRA layers, if any, are injected into it in place)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        n, _, h, w = pixel_values.shape
        pixel_values = pixel_values.to(next(self.backbone.parameters()).dtype)
        if self.family == OPEN_CLIP:
            out = self.backbone.forward_intermediates(
                pixel_values, indices=[self.open_clip_block], intermediates_only=True, output_fmt="NLC",
                output_extra_tokens=not self.drop_cls and self.prefix > 0)
            x = out["image_intermediates"][0]                            # (N, P, D_v) patches only
            if not self.drop_cls and self.prefix:      # towers without a CLS token return no prefix
                x = torch.cat([out["image_intermediates_prefix"][0], x], dim=1)
        else:
            kw = {"interpolate_pos_encoding": True} if ENCODERS[self.family].interpolate_kwarg else {}
            # The final norm was replaced by Identity, so last_hidden_state is the raw feature-layer output.
            x = self.backbone(pixel_values=pixel_values, **kw).last_hidden_state  # (N, prefix + P, D_v)
            if self.drop_cls:
                x = x[:, self.prefix:]
        expected = (h // self.patch_size) * (w // self.patch_size) + (0 if self.drop_cls else self.prefix)
        if x.shape[1] != expected:
            raise RuntimeError(f"encoder returned {x.shape[1]} tokens for {h}x{w} images, expected {expected}: "
                               "check encoder.patch_size / encoder.prefix_tokens against the model")
        return x


def build_encoder(enc_cfg, *, arch_scale: str, weights: str, resolution: int, attn_implementation: str = "sdpa",
                  dtype: torch.dtype = torch.float32) -> VisionEncoder:
    """Build `cfg.encoder` with random weights (from `arch`, + `tiny` at arch_scale=tiny) or from its checkpoint."""
    fam = encoder_family(enc_cfg)
    if fam == OPEN_CLIP:
        return _build_open_clip(enc_cfg, arch_scale, weights, resolution, dtype)
    spec = ENCODERS[fam]
    if weights == "pretrained":
        config = spec.config_cls.from_pretrained(enc_cfg.checkpoint)
        config.update(spec.config_overrides)
        model = spec.model_cls.from_pretrained(enc_cfg.checkpoint, config=config, dtype=dtype,
                                               attn_implementation=attn_implementation, **spec.model_kwargs)
    else:
        config = spec.config_cls(**resolved_arch(enc_cfg, "encoder", arch_scale, spec.config_cls),
                                 **spec.config_overrides)
        model = spec.model_cls._from_config(config, attn_implementation=attn_implementation, dtype=dtype,
                                            **spec.model_kwargs)
    blocks = get_path(model, spec.layers)
    keep = kept_blocks(len(blocks), int(enc_cfg.feature_layer))
    set_path(model, spec.layers, blocks[:keep])
    model.config.num_hidden_layers = keep
    for path in spec.unused:
        set_path(model, path, nn.Identity())
    if int(model.config.patch_size) != int(enc_cfg.patch_size):
        raise ModelConfigError(f"encoder.patch_size={enc_cfg.patch_size}: the model's patch size is "
                               f"{model.config.patch_size}; set them equal")
    return VisionEncoder(model, family=fam, hidden_size=int(model.config.hidden_size),
                         patch_size=int(model.config.patch_size), prefix=spec.prefix_tokens(model.config.to_dict()),
                         drop_cls=bool(enc_cfg.drop_cls))


def _build_open_clip(enc_cfg, arch_scale: str, weights: str, resolution: int, dtype) -> VisionEncoder:
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    name = enc_cfg.model_name
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ModelConfigError(f"encoder.model_name={name!r}: not an open_clip model; see open_clip.list_models()")
    if weights == "pretrained":
        # force_image_size makes open_clip resize the position embeddings of the checkpoint to `resolution`.
        visual = open_clip.create_model(name, pretrained=enc_cfg.pretrained, force_image_size=resolution).visual
    else:
        vcfg = dict(model_cfg["vision_cfg"])
        vcfg.update(to_dict(enc_cfg.get("arch")))
        if arch_scale == "tiny":   # a small open_clip-native ViT whatever the named tower is (timm or not)
            vcfg = {k: v for k, v in vcfg.items() if not k.startswith("timm_")}
            vcfg.update(to_dict(enc_cfg.get("tiny")))
        fields = {f.name for f in dataclasses.fields(CLIPVisionCfg)}
        bad = sorted(set(vcfg) - fields)
        if bad:
            raise ModelConfigError(f"encoder.arch / encoder.tiny key(s) {bad}: not open_clip CLIPVisionCfg "
                                   f"fields; valid: {', '.join(sorted(fields))}")
        vcfg["image_size"] = resolution   # random weights: build the position embeddings at this size
        visual = _build_vision_tower(model_cfg["embed_dim"], CLIPVisionCfg(**vcfg),
                                     quick_gelu=bool(model_cfg.get("quick_gelu", False)))
    visual = visual.to(dtype)
    timm_tower = hasattr(visual, "trunk")
    n_blocks = len(visual.trunk.blocks) if timm_tower else len(visual.transformer.resblocks)
    block = kept_blocks(n_blocks, int(enc_cfg.feature_layer)) - 1
    if timm_tower:
        visual.trunk.prune_intermediate_layers([block], prune_norm=True, prune_head=True)
        visual.head = nn.Identity()
        prefix, width = int(visual.trunk.num_prefix_tokens), int(visual.trunk.embed_dim)
        patch = int(visual.trunk.patch_embed.patch_size[0])
    else:
        visual.prune_intermediate_layers([block], prune_norm=True, prune_head=True)
        if getattr(visual, "attn_pool", None) is not None:
            visual.attn_pool = None
        prefix, width, patch = 1, int(visual.class_embedding.shape[0]), int(visual.patch_size[0])
    if patch != int(enc_cfg.patch_size):
        raise ModelConfigError(f"encoder.patch_size={enc_cfg.patch_size}: open_clip model {name} "
                               f"({arch_scale}) has patch size {patch}; set them equal")
    return VisionEncoder(visual, family=OPEN_CLIP, hidden_size=width, patch_size=patch, prefix=prefix,
                         drop_cls=bool(enc_cfg.drop_cls), open_clip_block=block)


def set_gradient_checkpointing(encoder: VisionEncoder, enable: bool) -> None:
    m = encoder.backbone
    if encoder.family == OPEN_CLIP:
        m.set_grad_checkpointing(enable)
    elif enable:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        m.gradient_checkpointing_disable()
