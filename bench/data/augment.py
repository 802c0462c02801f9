"""Batched augmentation on the training device, as source 000's fastai transforms."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Random rotation (reflection padding) and brightness/contrast in logit space (fastai style).

    ``rotate`` is the maximum angle in degrees, applied with probability ``p_rotate``;
    ``brightness`` and ``contrast`` are fastai's ``max_lighting``, each applied with probability
    ``p_lighting``. Zero disables a transform.
    """

    rotate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    p_rotate: float = 0.5
    p_lighting: float = 0.8

    @property
    def enabled(self) -> bool:
        return bool(self.rotate or self.brightness or self.contrast)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x``: float ``(N, C, H, W)`` in [0, 1], on any device; returns the same shape."""
        n = x.shape[0]

        def uniform(lo: float, hi: float) -> torch.Tensor:
            u = torch.rand(n, device=x.device, generator=generator)
            return lo + (hi - lo) * u

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, device=x.device, generator=generator) < p

        if self.rotate:
            angle = uniform(-self.rotate, self.rotate) * math.pi / 180 * coin(self.p_rotate)
            x = rotate(x, angle)
        if self.brightness or self.contrast:
            eps = 1e-7  # fastai's clamp
            logits = torch.logit(x.clamp(eps, 1 - eps))
            scale = torch.ones(n, device=x.device)
            shift = torch.zeros(n, device=x.device)
            if self.contrast:
                lim = -math.log(1 - self.contrast)
                scale = torch.where(coin(self.p_lighting), uniform(-lim, lim).exp(), scale)
            if self.brightness:
                change = uniform(0.5 * (1 - self.brightness), 0.5 * (1 + self.brightness))
                shift = torch.where(coin(self.p_lighting), torch.logit(change), shift)
            # fastai: brightness adds in logit space, contrast then scales: sigmoid(c * (l + b))
            x = torch.sigmoid(scale.view(-1, 1, 1, 1) * (logits + shift.view(-1, 1, 1, 1)))
        return x


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle`` radians about its centre, rigidly for non-square images."""
    _, _, h, w = x.shape
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([cos, -sin * h / w, torch.zeros_like(cos)], -1),
            torch.stack([sin * w / h, cos, torch.zeros_like(cos)], -1),
        ],
        1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)  # as fastai's affine warp
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
