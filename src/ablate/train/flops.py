"""An estimate of training FLOPs from parameter counts and positions (the 2N forward / 4N backward rule)."""
from __future__ import annotations

import torch


def train_flops(vlm, lm_tokens: int, images: int, cfg) -> float:
    """FLOPs of one stage: forward 2*N per position; backward 2*N for activation grads through every module
    above the lowest trainable one, plus 2*N_trainable for weight grads. Attention's L^2 term is left out.

    Encoder and projector positions are images x image tokens; LM positions are the tokens the LM saw.
    """
    from ablate.models.encoder import num_image_tokens

    l_img = num_image_tokens(cfg.encoder, int(cfg.resolution))
    positions = {"encoder": images * l_img, "projector": images * l_img, "lm": lm_tokens}
    order = ["encoder", "projector", "lm"]
    n = {m: sum(p.numel() for p in getattr(vlm, m).parameters()) for m in order}
    n_train = {m: sum(p.numel() for p in getattr(vlm, m).parameters() if p.requires_grad) for m in order}
    lowest = next((i for i, m in enumerate(order) if n_train[m] > 0), len(order))
    total = 0.0
    for i, m in enumerate(order):
        total += 2 * n[m] * positions[m]
        if i > lowest:
            total += 2 * n[m] * positions[m]
        total += 2 * n_train[m] * positions[m]
    return float(total)


# ---- exact model FLOPs of one step, for MFU (benchmarks/gpu_mfu.py) ---------------------------------------------
def _attention_layers(module) -> int:
    model = getattr(module, "backbone", module)
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "num_hidden_layers", None):
        return int(cfg.num_hidden_layers)
    return sum(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())   # open_clip towers


def step_flops(vlm, *, batch: int, images: int, lm_seq: int, encoder_seq: int, image_tokens: int,
               logit_positions: int | None = None) -> dict:
    """Model FLOPs of one training step (forward + backward) of `vlm` with its current requires_grad flags.

    Matmuls: forward 2*P per position; backward 2*P per position for the gradient of a layer's input when any
    trainable parameter lies before it, plus 2*P for its weight gradient when it trains. Attention (QK^T and
    AV): 4*T^2*d per layer and sequence forward, counted in full (not halved for causal masks, as PaLM's MFU
    and torch's FlopCounterMode count it), twice that backward when gradients flow through it. Positions:
    encoder `images * encoder_seq`; projector `images * image_tokens`; LM `batch * lm_seq`, its output head
    `logit_positions` (default all). Embedding lookups, norms and elementwise ops are not counted.
    """
    logit_positions = batch * lm_seq if logit_positions is None else logit_positions
    enc, proj, lm = vlm.encoder, vlm.projector, vlm.lm_model
    head = lm.get_output_embeddings()
    parts = [("encoder", enc, images * encoder_seq), ("projector", proj, images * image_tokens),
             ("lm", lm, batch * lm_seq)]
    out = {"forward": 0.0, "backward": 0.0}
    upstream = False          # has a trainable parameter been seen before this point of the forward?
    for name, module, pos in parts:
        fwd = bwd = 0.0
        first_param_trains = upstream or any(p.requires_grad for p in module.parameters())
        for m in module.modules():
            # open_clip's nn.MultiheadAttention keeps its q/k/v projection as a bare parameter
            w = m.in_proj_weight if isinstance(m, torch.nn.MultiheadAttention) else getattr(m, "weight", None)
            if w is not None and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.MultiheadAttention)):
                n = w.numel()
                p = logit_positions if m is head else pos
                fwd += 2 * n * p
                # a Conv2d is the patch embedding: its input is the image, which never needs a gradient
                needs_input_grad = upstream and not isinstance(m, torch.nn.Conv2d)
                bwd += (2 * n * p if needs_input_grad else 0) + (2 * n * p if w.requires_grad else 0)
            if any(q.requires_grad for q in m.parameters(recurse=False)):
                upstream = True
        if name != "projector":
            seq, d = (encoder_seq, enc.hidden_size) if name == "encoder" else (lm_seq, lm.config.hidden_size)
            n_seq = images if name == "encoder" else batch
            attn = 4 * seq * seq * d * _attention_layers(module) * n_seq
            fwd += attn
            bwd += 2 * attn if first_param_trains else 0
        out[f"{name}_forward"], out[f"{name}_backward"] = fwd, bwd
        out["forward"] += fwd
        out["backward"] += bwd
    out["total"] = out["forward"] + out["backward"]
    return out
