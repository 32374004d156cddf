"""DCGAN Generator and Discriminator for any power-of-two image size.

Both keep the tutorial's `self.main = nn.Sequential(...)` layout, so at 64x64 with 3 channels the
state_dict keys and shapes are exactly those of the PyTorch DCGAN tutorial and the pytorch/examples
script (`main.0.weight`, `main.1.running_mean`, ...): their `netG.pth`/`netD.pth` files load as they are.

Feature maps at resolution r are `width * min(max_mult, image_size // (2 r))`: at 64x64 that is the
tutorial's 8, 4, 2, 1 (generator) and 1, 2, 4, 8 (discriminator).

The discriminator returns logits (one per image); the tutorial's final nn.Sigmoid is folded into the
loss (`BCEWithLogitsLoss`), which is the same loss in exact arithmetic but stays finite when D is
confident. The sigmoid has no parameters, so the state_dict layout is unchanged.

Two options change D (both off by default, giving the tutorial's D):
- spectral_norm (SN-GAN, Miyato et al. 2018): every conv's weight is divided by its largest singular
  value, estimated by one power iteration per training-mode forward pass (torch's parametrization;
  its vectors u, v are buffers, so they travel in the state_dict). SN-GAN's D has no BatchNorm:
  each BatchNorm becomes an nn.Identity at the same index, so the keys keep their `main.N` numbers
  (`main.0.parametrizations.weight.original`, `main.0.parametrizations.weight.0._u`, ...).
- pack (PacGAN, Lin et al. 2018): D judges `pack` images at once, stacked along the channels, so it
  can see a lack of variety within a group; it returns one logit per group.

info_codes (InfoGAN, Chen et al. 2016; off by default) changes both, without labels: the last
sum(info_codes) numbers of z pick one category per code (the argmax of each code's numbers, uniform
since they are i.i.d. normal) and reach G as one-hot vectors, and D gains `code_head`, a second output
layer beside its last conv that guesses the categories from the same 4x4 features. Trained to make its
codes recoverable, G gives each category a distinct kind of image (on digits, mostly one digit per
category) and no longer spends latent space on blends between them. G's weights are unchanged in
layout; D's state_dict gains `code_head.*`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from .config import ModelConfig
from .errors import DcganError


def _mult(config: ModelConfig, resolution: int) -> int:
    return min(config.max_mult, config.image_size // (2 * resolution))


def _hidden_resolutions(config: ModelConfig) -> list[int]:
    """4, 8, ..., image_size/2: the sizes of the hidden feature maps."""
    sizes, r = [], 4
    while r < config.image_size:
        sizes.append(r)
        r *= 2
    return sizes


def code_targets(z: torch.Tensor, info_codes: list[int]) -> torch.Tensor:
    """(B, len(info_codes)) long: the category z picks for each code, the argmax of the code's numbers.

    The codes take the last sum(info_codes) numbers of z (B, nz, 1, 1), in order.
    """
    tail = z.flatten(1)[:, z.shape[1] - sum(info_codes) :]
    return torch.stack([numbers.argmax(1) for numbers in tail.split(info_codes, 1)], 1)  # (TorchScript-able, for export)


def with_one_hot_codes(z: torch.Tensor, info_codes: list[int]) -> torch.Tensor:
    """z with each code's numbers replaced by the one-hot vector of its category: G's input."""
    categories = code_targets(z, info_codes)
    parts = [z.flatten(1)[:, : z.shape[1] - sum(info_codes)]]  # the continuous numbers
    for i, k in enumerate(info_codes):
        parts.append(F.one_hot(categories[:, i], k).to(z.dtype))
    return torch.cat(parts, 1).view_as(z)


class OneHotCodes(nn.Module):
    """G's first operation with info codes: `with_one_hot_codes` as a module, so that TorchScript exports it."""

    def __init__(self, info_codes: tuple[int, ...]):
        super().__init__()
        self.info_codes = list(info_codes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return with_one_hot_codes(z, self.info_codes)


class Generator(nn.Module):
    """z (B, nz, 1, 1) -> image (B, C, S, S) in [-1, 1]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.codes = OneHotCodes(config.info_codes) if config.info_codes else None  # no weights: the state_dict is unchanged
        resolutions = _hidden_resolutions(config)
        widths = [config.ngf * _mult(config, r) for r in resolutions]
        layers: list[nn.Module] = [
            # (B, nz, 1, 1) -> (B, widths[0], 4, 4)
            nn.ConvTranspose2d(config.nz, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            # (B, w_in, r, r) -> (B, w_out, 2r, 2r)
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        # (B, widths[-1], S/2, S/2) -> (B, C, S, S)
        layers += [nn.ConvTranspose2d(widths[-1], config.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.codes is not None:
            z = self.codes(z)
        return self.main(z)


class Discriminator(nn.Module):
    """image (B, C, S, S) -> logits (B / pack,): log-odds that each image (each group of `pack`) is real."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        resolutions = list(reversed(_hidden_resolutions(config)))  # S/2, ..., 4
        widths = [config.ndf * _mult(config, r) for r in resolutions]
        # SN-GAN's D normalises weights instead of activations: no BatchNorm, an Identity keeps the index
        norm = (lambda width: nn.Identity()) if config.spectral_norm else nn.BatchNorm2d
        layers: list[nn.Module] = [
            # (B/pack, pack*C, S, S) -> (B/pack, widths[0], S/2, S/2); no BatchNorm on the input layer (DCGAN paper)
            nn.Conv2d(config.channels * config.pack, widths[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            # (B/pack, w_in, r, r) -> (B/pack, w_out, r/2, r/2)
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), norm(w_out), nn.LeakyReLU(0.2, inplace=True)]
        # (B/pack, widths[-1], 4, 4) -> (B/pack, 1, 1, 1)
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]
        # InfoGAN's Q: the same 4x4 features -> one logit per category of every code (B/pack, sum(info_codes))
        self.code_head = nn.Conv2d(widths[-1], sum(config.info_codes), 4, 1, 0) if config.info_codes else None
        if config.spectral_norm:
            for layer in [*layers, self.code_head]:
                if isinstance(layer, nn.Conv2d):
                    spectral_norm(layer)  # weight = original / sigma(original)
        self.main = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor, with_codes: bool = False):
        """Logits (B / pack,); with_codes (info_codes only): (logits, code logits (B, sum(info_codes)))."""
        k = self.config.pack
        if k > 1:
            B, C, H, W = images.shape
            if B % k:
                raise DcganError(f"a batch of {B} images cannot be packed in groups of {k} (pack): use a multiple of {k}")
            # (B, C, H, W) -> (B/k, k*C, H, W): images k*i .. k*i+k-1 become group i's channels
            images = images.reshape(B // k, k * C, H, W)
        if not with_codes:
            return self.main(images).view(-1)
        features = self.main[:-1](images)
        return self.main[-1](features).view(-1), self.code_head(features).flatten(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al.): conv weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and parametrize.is_parametrized(module, "weight"):
        # spectral norm: draw the raw weight, then register again so that u, v are fitted (15 power
        # iterations) to the drawn weight rather than to the one it replaces
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        nn.init.normal_(module.weight, 0.0, 0.02)
        spectral_norm(module)
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_models(config: ModelConfig) -> tuple[Generator, Discriminator]:
    # Same order as the tutorial (build G, init G, build D, init D) so a seed draws the same weights.
    generator = Generator(config)
    generator.apply(init_weights)
    discriminator = Discriminator(config)
    discriminator.apply(init_weights)
    return generator, discriminator


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
