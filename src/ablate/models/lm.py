"""The language model: the family's transformers *ForCausalLM, from `lm.arch` (random) or `lm.checkpoint`."""
from __future__ import annotations

import logging

import torch

from ablate.models.registry import lm_family, resolved_arch

log = logging.getLogger(__name__)


def build_lm(lm_cfg, *, arch_scale: str, weights: str, vocab_size: int, attn_implementation: str = "sdpa",
             dtype: torch.dtype = torch.float32):
    """A causal LM whose input embedding has at least `vocab_size` rows (the tokenizer's length).

    At scale.arch=tiny the vocabulary is exactly the tokenizer's; at full size the checkpoint's (Phi-2 pads its
    vocabulary to 51200 > its tokenizer's 50295), grown with mean-initialised rows only if the tokenizer is longer.
    """
    config_cls, model_cls = lm_family(lm_cfg)
    if weights == "pretrained":
        model = model_cls.from_pretrained(lm_cfg.checkpoint, dtype=dtype, attn_implementation=attn_implementation)
    else:
        arch = resolved_arch(lm_cfg, "lm", arch_scale, config_cls)
        if arch_scale == "tiny":
            arch["vocab_size"] = vocab_size
        config = config_cls(**arch)
        model = model_cls._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    n_rows = model.get_input_embeddings().weight.shape[0]
    if vocab_size > n_rows:
        log.info("lm %s: growing the vocabulary %d -> %d rows for the tokenizer's added tokens",
                 lm_cfg.name, n_rows, vocab_size)
        model.resize_token_embeddings(vocab_size)
    return model


def set_gradient_checkpointing(lm, enable: bool) -> None:
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    if enable:
        # Non-reentrant: works when the LM's own inputs (our inputs_embeds) need no grad and with frozen layers.
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_disable()
