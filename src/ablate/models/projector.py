"""The vision-language projector: LLaVA-1.5's two-layer MLP from encoder width to LM width."""
from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Linear(D_v, D_lm) -> GELU -> Linear(D_lm, D_lm), applied to every image token."""

    def __init__(self, d_vision: int, d_lm: int):
        super().__init__()
        self.fc1 = nn.Linear(d_vision, d_lm)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(d_lm, d_lm)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # (N, L_img, D_v) -> (N, L_img, D_lm)
        return self.fc2(self.act(self.fc1(features)))
