"""An estimate of training FLOPs from parameter counts and positions (the 2N forward / 4N backward rule)."""
from __future__ import annotations


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
