"""DiffAugment (Zhao et al. 2020): differentiable augmentations of every image D sees.

    augment = make_augment("color,translation,cutout")
    logits = D(augment(images))   # real and fake alike, in the D step and in the G step

D never sees an unaugmented image, so it cannot learn the augmentations as a sign of fakes; and
since each operation is differentiable, the G step's gradient flows back through the augmentation
of `fake` into G. Each call draws new parameters per image.

The draws come from torch's default generator on the images' device (torch.rand / torch.randint
with device=), so `--seed` fixes them and the checkpoint's captured RNG state (CPU and CUDA) makes
a resumed run draw the same ones.

Policies, comma-separated, applied in the order given:
    color        brightness + U(-0.5, 0.5); saturation x U(0, 2); contrast x U(0.5, 1.5)
    translation  shift by up to 1/8 of the side in each direction, zeros shifted in
    cutout       zero a square of half the side, centred anywhere in the image (parts may fall outside)
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import parse_diffaug


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One U(low, high) draw per image, shaped (B, 1, 1, 1) to broadcast over C, H, W."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) * (high - low) + low


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W): the grey level of each pixel
    x = (x - mean) * _uniform(x, 0.0, 2.0) + mean  # saturation (nothing to change in grayscale)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = 1 / 8) -> torch.Tensor:
    B, C, H, W = x.shape
    max_dy, max_dx = int(H * ratio), int(W * ratio)
    dy = torch.randint(-max_dy, max_dy + 1, (B, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (B, 1, 1), device=x.device)
    rows = torch.arange(H, device=x.device).view(1, H, 1) - dy  # (B, H, 1): the source row of each output row
    cols = torch.arange(W, device=x.device).view(1, 1, W) - dx  # (B, 1, W)
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)  # (B, H, W); outside: zeros
    source = (rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)).view(B, 1, H * W).expand(B, C, H * W)
    shifted = x.reshape(B, C, H * W).gather(2, source).view(B, C, H, W)  # gather: differentiable in x
    return shifted * inside.unsqueeze(1).to(x.dtype)


def cutout(x: torch.Tensor, ratio: float = 1 / 2) -> torch.Tensor:
    B, _, H, W = x.shape
    h, w = int(H * ratio), int(W * ratio)
    top = torch.randint(0, H + 1 - h % 2, (B, 1, 1), device=x.device) - h // 2  # centre anywhere in the image
    left = torch.randint(0, W + 1 - w % 2, (B, 1, 1), device=x.device) - w // 2
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    hole = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)  # (B, H, W)
    return x * (~hole).unsqueeze(1).to(x.dtype)


_OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


def make_augment(policy: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The augmentation for a policy string; for None or "" the identity (no draws, no copy)."""
    if not policy:
        return identity
    operations = [_OPERATIONS[name] for name in parse_diffaug(policy)]  # a DcganError for a bad policy

    def augment(images: torch.Tensor) -> torch.Tensor:
        for operation in operations:
            images = operation(images)
        return images

    return augment


def identity(images: torch.Tensor) -> torch.Tensor:
    """No augmentation: the images themselves."""
    return images
