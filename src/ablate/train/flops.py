"""Model FLOPs of training: exact per step (`step_flops`), and summed over a stage's real batches (`StepFlops`).

The same accounting serves a cell's row (`compute.train_flops`) and the GPU MFU benchmark (benchmarks/gpu_mfu.py).
"""
from __future__ import annotations

import torch


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


class StepFlops:
    """`step_flops` for any batch of one stage, cheaply: the FLOPs are a fixed polynomial in the batch's shape
    once the stage's requires_grad flags are set, so its coefficients are taken from `step_flops` once.

    A batch costs, per image, the encoder over its sequence (not when the batch carries cached `image_features`)
    plus the projector; per row, the LM over the padded merged length T' (linear and attention's T'^2 terms);
    and the LM head at the labelled positions (training runs it only where some row predicts a label).
    """

    def __init__(self, vlm, cfg):
        from ablate.models.encoder import num_image_tokens

        self.image_token_id = vlm.image_token_id
        self.l_img = num_image_tokens(cfg.encoder, int(cfg.resolution))
        self.enc_seq = enc_seq = (int(cfg.resolution) // vlm.encoder.patch_size) ** 2 + vlm.encoder.prefix

        def f(**kw) -> float:
            shape = {"batch": 0, "images": 0, "lm_seq": 0, "encoder_seq": 0, "image_tokens": 0,
                     "logit_positions": 0, **kw}
            return step_flops(vlm, **shape)["total"]

        self.per_image = f(images=1, encoder_seq=enc_seq, image_tokens=self.l_img)
        self.per_cached_image = f(images=1, image_tokens=self.l_img)
        one, two = f(batch=1, lm_seq=1), f(batch=1, lm_seq=2)
        self.lm_quadratic = (two - 2 * one) / 2
        self.lm_linear = one - self.lm_quadratic
        self.per_logit = f(logit_positions=1)

    def shape(self, batch: dict) -> dict:
        """`step_flops` arguments of a training batch from the collator: images, rows, the padded merged length
        T' and the head's positions (columns where any row predicts a label: VLM.forward(labelled_logits_only))."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        per_row = (ids == self.image_token_id).sum(1)                                  # (B,)
        merged = int((mask.sum(1) + per_row * (self.l_img - 1)).max())                 # T' after the merge
        rows = ids.shape[0]
        keep = int((batch["labels"][:, 1:] != -100).any(0).sum()) if "labels" in batch else merged
        cached = batch.get("image_features") is not None
        return {"batch": rows, "images": int(per_row.sum()), "lm_seq": merged,
                "encoder_seq": 0 if cached else self.enc_seq, "image_tokens": self.l_img,
                "logit_positions": rows * keep}

    def __call__(self, batch: dict) -> float:
        """FLOPs of one forward + backward of the VLM on a (CPU) training batch: step_flops at `shape(batch)`."""
        s = self.shape(batch)
        image = self.per_image if s["encoder_seq"] else self.per_cached_image
        return (s["images"] * image + s["batch"] * (self.lm_linear * s["lm_seq"] + self.lm_quadratic * s["lm_seq"] ** 2)
                + self.per_logit * s["logit_positions"])
