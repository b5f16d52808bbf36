"""Stage configuration: what trains in stage 1 (align) and stage 2 (instruct), fully or through LoRA adapters.

align:    the projector only (LLaVA stage 1).
instruct: the projector, plus the encoder and/or LM that `cfg.freeze` trains; with `tuning.mode=lora` the modules
          named by `tuning.targets` train through LoRA adapters (peft) instead of fully. LoRA on a module the freeze
          pattern keeps frozen is a config error.
"""
from __future__ import annotations

import logging

from omegaconf import OmegaConf
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from ablate.models.registry import ModelConfigError

log = logging.getLogger(__name__)

MODULES = ("encoder", "projector", "lm")
STAGES = ("align", "instruct")
LORA_TARGETS = {"lm": ("lm",), "encoder": ("encoder",), "both": ("encoder", "lm")}


def _valid_targets(freeze) -> str:
    trained = [m for m in ("encoder", "lm") if freeze.get(f"train_{m}") is True]
    valid = [t for t, mods in LORA_TARGETS.items() if set(mods) <= set(trained)]
    return (f"valid tuning.targets with freeze={freeze.get('name')}: {', '.join(valid)}" if valid else
            f"freeze={freeze.get('name')} trains neither encoder nor LM, so use tuning=full (projector only)")


def tuning_errors(cfg) -> list[str]:
    """Every problem of cfg.tuning / cfg.freeze (and the lora keys they use), as 'key=value: what is valid'."""
    errors: list[str] = []
    freeze, t = cfg.freeze, cfg.tuning
    for key in ("train_encoder", "train_lm"):
        if not isinstance(freeze.get(key), bool):
            errors.append(f"freeze.{key}={freeze.get(key)!r}: must be true or false")
    mode = t.get("mode")
    if mode not in ("full", "lora"):
        return errors + [f"tuning.mode={mode!r}: valid: full, lora"]
    if mode == "full":
        return errors
    r, alpha, dropout, targets = t.get("r"), t.get("alpha"), t.get("dropout"), t.get("targets")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        errors.append(f"tuning.r={r!r}: must be a positive integer (the paper uses 128)")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        errors.append(f"tuning.alpha={alpha!r}: must be a positive number (the paper uses 256)")
    if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        errors.append(f"tuning.dropout={dropout!r}: must be null (use each module's lora_dropout) or in [0, 1)")
    if targets not in LORA_TARGETS:
        return errors + [f"tuning.targets={targets!r}: valid: {', '.join(LORA_TARGETS)}"]
    for m in LORA_TARGETS[targets]:
        if freeze.get(f"train_{m}") is False:
            errors.append(f"tuning.targets={targets!r} puts LoRA on the {m}, but freeze={freeze.get('name')} keeps "
                          f"it frozen (freeze.train_{m}=false); {_valid_targets(freeze)}")
        names = cfg[m].get("lora_targets")
        if not names or not all(isinstance(n, str) for n in names):
            errors.append(f"{m}.lora_targets={names!r}: must be a non-empty list of nn.Linear name suffixes")
        d = cfg[m].get("lora_dropout", 0.0) if dropout is None else dropout
        if not (isinstance(d, (int, float)) and 0 <= d < 1):
            errors.append(f"{m}.lora_dropout={d!r}: must be in [0, 1)")
    return errors


def validate_tuning(cfg) -> None:
    """Raise ModelConfigError listing every tuning/freeze problem; called by config validation before any build."""
    errors = tuning_errors(cfg)
    if errors:
        raise ModelConfigError("\n  - ".join(errors))


def _slot(vlm, which: str) -> tuple[nn.Module, str]:
    """(owner, attribute) holding the module LoRA wraps: the encoder's inner model, or the LM."""
    return (vlm.encoder, "model") if which == "encoder" else (vlm, "lm")


def _add_lora(vlm, which: str, cfg) -> None:
    owner, attr = _slot(vlm, which)
    module = getattr(owner, attr)
    if isinstance(module, PeftModel):    # configure_stage called again: adapters exist, re-mark them trainable
        for name, p in module.named_parameters():
            p.requires_grad = "lora_" in name
        return
    section, targets = cfg[which], list(cfg[which].lora_targets)
    hits = [m for n, m in module.named_modules()
            if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)]
    if not hits:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)})
        raise ModelConfigError(f"{which}.lora_targets={targets}: matches no nn.Linear of the {which}; its Linear "
                               f"layers are named: {', '.join(suffixes)}")
    r, alpha = int(cfg.tuning.r), float(cfg.tuning.alpha)
    limit = min(min(m.in_features, m.out_features) for m in hits)
    if r > limit and cfg.scale.arch == "tiny":
        # A rank above min(in, out) adds parameters but no capacity; keep alpha/r so the update scale is the same.
        log.info("LoRA on the %s: r=%d exceeds the smallest targeted layer (%d) at scale.arch=tiny: using r=%d, "
                 "alpha=%g (alpha/r kept)", which, r, limit, limit, alpha * limit / r)
        alpha, r = alpha * limit / r, limit
    dropout = cfg.tuning.dropout if cfg.tuning.get("dropout") is not None else section.get("lora_dropout", 0.0)
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=float(dropout), target_modules=targets, bias="none")
    setattr(owner, attr, get_peft_model(module, lora))   # freezes the base weights, adapters trainable


def configure_stage(vlm, stage: str, cfg):
    """Set requires_grad (and add LoRA adapters) for `stage`; log and return the VLM (the same object)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: valid: {', '.join(STAGES)}")
    vlm.requires_grad_(False)
    if stage == "instruct":
        validate_tuning(cfg)
        lora = LORA_TARGETS[cfg.tuning.targets] if cfg.tuning.mode == "lora" else ()
        for which in ("encoder", "lm"):
            if not cfg.freeze[f"train_{which}"]:
                continue
            if which in lora:
                _add_lora(vlm, which, cfg)
            elif isinstance(getattr(*_slot(vlm, which)), PeftModel):
                raise ModelConfigError(f"tuning.mode={cfg.tuning.mode!r}: the {which} of this VLM already carries "
                                       "LoRA adapters; build a fresh VLM to train it fully")
            else:
                getattr(vlm, which).requires_grad_(True)
    vlm.projector.requires_grad_(True)
    log.info("stage %s (%s, freeze=%s, tuning=%s):\n%s", stage, "projector only" if stage == "align" else
             "projector + freeze pattern", OmegaConf.select(cfg, "freeze.name"), OmegaConf.select(cfg, "tuning.name"),
             format_param_table(param_table(vlm)))
    return vlm


def param_table(vlm) -> dict[str, dict[str, int]]:
    """{module: {"trainable": n, "frozen": n}} for encoder, projector and lm (LoRA adapters count in their module)."""
    table = {}
    for name in MODULES:
        params = list(getattr(vlm, name).parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        table[name] = {"trainable": trainable, "frozen": sum(p.numel() for p in params) - trainable}
    return table


def format_param_table(table: dict[str, dict[str, int]]) -> str:
    rows = [(m, v["trainable"], v["frozen"]) for m, v in table.items()]
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    lines = [f"{'module':<10} {'trainable':>15} {'frozen':>15} {'% trained':>10}"]
    for m, tr, fr in rows:
        lines.append(f"{m:<10} {tr:>15,} {fr:>15,} {100.0 * tr / max(tr + fr, 1):>9.2f}%")
    return "\n".join(lines)
