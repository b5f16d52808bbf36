"""Builds the VLM of a composed config: `build_vlm(cfg, tokenizer)`, plus checkpoint and parameter-count checks."""
from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from pathlib import Path

import torch

from ablate.models.encoder import build_encoder, set_gradient_checkpointing, valid_resolution
from ablate.models.lm import build_lm
from ablate.models.lm import set_gradient_checkpointing as set_lm_checkpointing
from ablate.models.projector import Projector
from ablate.models.registry import ModelConfigError, scale_arch
from ablate.models.vlm import VLM

log = logging.getLogger(__name__)


def tokenizer_ids(tokenizer) -> dict[str, int]:
    """What build_vlm needs from a tokenizer: its length and the <image>, pad and eos ids."""
    image = tokenizer.convert_tokens_to_ids("<image>")
    if image is None or image == getattr(tokenizer, "unk_token_id", None):
        raise ModelConfigError("the tokenizer has no <image> token: add it as a special token before build_vlm "
                               "(ablate.data.tokenizer.build_tokenizer does)")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelConfigError("the tokenizer has no eos token: set tokenizer.eos_token before build_vlm")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return {"vocab": len(tokenizer), "image": int(image), "pad": int(pad), "eos": int(eos)}


def _modes(cfg) -> tuple[str, str]:
    weights, arch = cfg.scale.weights, scale_arch(cfg)
    if weights not in ("random", "pretrained"):
        raise ModelConfigError(f"scale.weights={weights!r}: valid: random, pretrained")
    if weights == "pretrained" and arch == "tiny":
        raise ModelConfigError("scale.arch='tiny' with scale.weights='pretrained': the tiny overrides only shape "
                               "random models; use scale.weights=random (scale=tiny) or scale.arch=full (scale=paper)")
    return weights, arch


def build_vlm(cfg, tokenizer=None, dtype: torch.dtype = torch.float32) -> VLM:
    """The VLM of `cfg` (encoder, resolution, lm, scale, trainer), every parameter trainable until configure_stage."""
    t0 = time.perf_counter()
    if tokenizer is None:
        from ablate.data.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(cfg)
    ids = tokenizer_ids(tokenizer)
    weights, arch = _modes(cfg)
    ok, msg = valid_resolution(cfg.encoder, cfg.resolution)
    if not ok:
        raise ModelConfigError(f"resolution={cfg.resolution!r}: {msg}")
    if weights == "pretrained":
        check_checkpoint("encoder", cfg.encoder.checkpoint)
        check_checkpoint("lm", cfg.lm.checkpoint)
    attn = cfg.trainer.get("attn_implementation", "sdpa")
    encoder = build_encoder(cfg.encoder, arch_scale=arch, weights=weights, resolution=int(cfg.resolution),
                            attn_implementation=attn, dtype=dtype)
    lm = build_lm(cfg.lm, arch_scale=arch, weights=weights, vocab_size=ids["vocab"], attn_implementation=attn,
                  dtype=dtype)
    projector = Projector(encoder.hidden_size, lm.config.hidden_size).to(dtype)
    vlm = VLM(encoder, projector, lm, image_token_id=ids["image"], pad_token_id=ids["pad"], eos_token_id=ids["eos"],
              padding_side=getattr(tokenizer, "padding_side", "right") or "right")
    if cfg.trainer.get("gradient_checkpointing", False):
        set_gradient_checkpointing(vlm.encoder, True)
        set_lm_checkpointing(vlm.lm, True)
    log.info("built %s + %s (%s, %s weights, %s) in %.1f s: %.1fM parameters", cfg.encoder.name, cfg.lm.name,
             arch, weights, dtype, time.perf_counter() - t0, sum(p.numel() for p in vlm.parameters()) / 1e6)
    return vlm


def param_counts(cfg, vocab_size: int) -> dict[str, int]:
    """Parameters per module of cfg's VLM at random weights, counted on the meta device (no memory, no time)."""
    _, arch = _modes(cfg)
    with torch.device("meta"):
        enc = build_encoder(cfg.encoder, arch_scale=arch, weights="random", resolution=int(cfg.resolution))
        lm = build_lm(cfg.lm, arch_scale=arch, weights="random", vocab_size=vocab_size)
        proj = Projector(enc.hidden_size, lm.config.hidden_size)
    return {name: sum(p.numel() for p in m.parameters()) for name, m in
            (("encoder", enc), ("projector", proj), ("lm", lm))}


# ---- checkpoints ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _hub_unreachable() -> str | None:
    """Why the hub cannot be used ('HF_HUB_OFFLINE=1', 'no network'), or None when it can."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE=1"
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    result: list[str | None] = ["no network (timed out)"]

    def probe():   # in a thread: a hanging DNS lookup is not covered by the socket timeout
        try:
            socket.create_connection((host, 443), timeout=3).close()
            result[0] = None
        except OSError as e:
            result[0] = f"no network ({host}: {e})"

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(4)
    return result[0]


def _advice(key: str, value: str) -> str:
    return (f"Fix: download it where there is network (`huggingface-cli download {value}`) and copy the Hugging Face "
            f"cache here (or point HF_HOME at it), set {key} to a local checkpoint directory, or use random weights "
            "(scale=tiny or scale=full_random)")


def check_checkpoint(kind: str, value) -> None:
    """Raise ModelConfigError unless `<kind>.checkpoint` can be loaded: a local dir, cached, or the hub reachable."""
    key = f"{kind}.checkpoint"
    if value is None or str(value).strip() == "":
        raise ModelConfigError(f"{key}={value!r}: no checkpoint is set for this {kind}; set {key}=<hub id or local "
                               "directory>, or use random weights (scale=tiny or scale=full_random)")
    value = str(value)
    if value.startswith("open_clip:"):
        return _check_open_clip(key, value)
    path = Path(value).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelConfigError(f"{key}={value!r}: the directory has no config.json; point {key} at a "
                                   "transformers checkpoint directory (what save_pretrained writes)")
        return
    if value.startswith(("/", "./", "../", "~")) or value.count("/") > 1:
        raise ModelConfigError(f"{key}={value!r}: no such directory; give an existing checkpoint directory or a "
                               "hub id like 'org/name'")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(value, "config.json"), str):
        return
    why = _hub_unreachable()
    if why:
        raise ModelConfigError(f"{key}={value!r}: not a local directory and not in the Hugging Face cache, and the "
                               f"hub cannot be reached ({why}). {_advice(key, value)}")


def _check_open_clip(key: str, value: str) -> None:
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    parts = value.split(":", 2)                 # "open_clip:<model_name>:<pretrained>"
    name, tag = (parts + ["", ""])[1:3]
    if name not in open_clip.list_models():
        raise ModelConfigError(f"encoder.model_name={name!r}: not an open_clip model; see open_clip.list_models()")
    if tag and Path(tag).expanduser().is_file():
        return
    pcfg = open_clip.get_pretrained_cfg(name, tag)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ModelConfigError(f"encoder.pretrained={tag!r}: not a pretrained tag of open_clip model {name} nor a "
                               f"local file; valid tags: {', '.join(tags) or '(none: use a local file)'}")
    if pcfg.get("hf_hub"):
        repo = pcfg["hf_hub"].rstrip("/")
        files: tuple[str, ...] = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        if repo.count("/") >= 2:                # 'org/name/file'
            repo, f = repo.rsplit("/", 1)
            files = (f,)
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
            return
        where = f"hf-hub:{repo}"
    else:
        url = pcfg.get("url", "")
        if (Path.home() / ".cache" / "clip" / os.path.basename(url)).is_file():
            return
        where = url
    why = _hub_unreachable()
    if why:
        raise ModelConfigError(f"{key}={value!r}: open_clip weights ({where}) are not cached and cannot be "
                               f"downloaded ({why}). Fix: run open_clip.create_model({name!r}, pretrained={tag!r}) "
                               "where there is network and copy the cache, set encoder.pretrained to a local "
                               "file, or use random weights (scale=tiny or scale=full_random)")
