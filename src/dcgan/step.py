"""One DCGAN training iteration, as in the PyTorch DCGAN tutorial (Goodfellow et al., 2014).

    (1) Update D: maximise log D(x) + log(1 - D(G(z)))
    (2) Update G: maximise log D(G(z))   (the non-saturating loss)

`fake` is produced once. The D step sees `fake.detach()`, so its backward pass stops at the
generator's output: no G gradients are computed, and G's autograd graph is left intact. The G step
then runs the *updated* D on the very same `fake` and backpropagates through D into G, reusing that
graph instead of running G a second time. Without the detach, the D step's backward would free G's
graph and the G step would fail with "Trying to backward through the graph a second time".

D returns logits; `BCEWithLogitsLoss` is the tutorial's Sigmoid + BCELoss in one stable function.
The figures are returned as one detached tensor, so the caller decides when to pay for a host read.

With several processes, G and D arrive wrapped in DistributedDataParallel, whose backward passes
all-reduce (average) the gradients over the ranks. Two places need care, both handled by `no_sync`
(for a plain module it is a `nullcontext`, and the single-process step is the tutorial's exactly):
D's gradient has two halves, real and fake, and must be reduced once, after both; and the G step's
backward passes through D, whose gradient nobody uses, so reducing it would only cost time.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

FIGURE_NAMES = ("loss_d", "loss_g", "d_real", "d_fake_before", "d_fake_after")


@dataclass
class GanState:
    generator: nn.Module
    discriminator: nn.Module
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    real_label: float = 1.0
    fake_label: float = 0.0
    # mixed precision: forward passes run under `autocast()`; with fp16, each optimizer has a GradScaler
    # (losses are scaled before backward so small gradients do not underflow, and unscaled before the step)
    autocast: Callable[[], AbstractContextManager] = nullcontext
    scaler_d: Optional[torch.amp.GradScaler] = None
    scaler_g: Optional[torch.amp.GradScaler] = None


def _backward(loss: torch.Tensor, scaler: Optional[torch.amp.GradScaler]) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler]) -> None:
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    # mean over the batch of -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _no_sync(module: nn.Module) -> AbstractContextManager:
    """DDP: backward passes inside accumulate gradients locally, without the all-reduce. Plain: nothing."""
    return module.no_sync() if isinstance(module, DistributedDataParallel) else nullcontext()


@contextmanager
def _d_as_a_fixed_function(D: nn.Module) -> Iterator[None]:
    """The G step needs gradients *through* D, not D's own: skip computing (or sharing) them.

    One process: D's parameters stop requiring grad for the G step (as StyleGAN does), so backward
    computes only the input gradients that reach G; the update is the same, about 8% faster.
    DDP: no_sync instead, which changes only the communication; freezing would also change which
    parameters DDP sees receive gradients from one backward pass to the next.
    """
    if isinstance(D, DistributedDataParallel):
        with D.no_sync():
            yield
        return
    parameters = [p for p in D.parameters() if p.requires_grad]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in parameters:
            p.requires_grad_(True)


def discriminator_step(state: GanState, real: torch.Tensor, z: torch.Tensor):
    """Phase 1: update D on a real batch and a fake one. Returns (fake, figures); fake keeps G's graph."""
    D, G = state.discriminator, state.generator
    D.zero_grad(set_to_none=True)

    with _no_sync(D):  # DDP: the real half only accumulates; the fake half's backward reduces both at once
        with state.autocast():
            logits_real = D(real)  # (B,)
        loss_d_real = _bce(logits_real, state.real_label)
        _backward(loss_d_real, state.scaler_d)

    with state.autocast():
        fake = G(z)  # (B, C, H, W); its graph is needed again in phase 2
        # detach: the D loss must not reach G, and G's graph must survive for the G step
        logits_fake = D(fake.detach())
    loss_d_fake = _bce(logits_fake, state.fake_label)
    _backward(loss_d_fake, state.scaler_d)  # DDP: all-reduces the accumulated real + fake gradient, averaged over the ranks
    _optimizer_step(state.optimizer_d, state.scaler_d)

    figures = torch.stack(
        [loss_d_real + loss_d_fake, torch.sigmoid(logits_real.float()).mean(), torch.sigmoid(logits_fake.float()).mean()]
    ).detach()
    return fake, figures  # figures: loss_d, d_real, d_fake_before


def generator_step(state: GanState, fake: torch.Tensor) -> torch.Tensor:
    """Phase 2: update G so the just-updated D calls the same `fake` real. Returns [loss_g, d_fake_after]."""
    state.generator.zero_grad(set_to_none=True)
    with _d_as_a_fixed_function(state.discriminator):
        with state.autocast():
            logits_fake = state.discriminator(fake)  # no detach: gradients flow through D into G
        loss_g = _bce(logits_fake, state.real_label)  # log D(G(z)) rather than -log(1 - D(G(z))): no early saturation
        _backward(loss_g, state.scaler_g)
    _optimizer_step(state.optimizer_g, state.scaler_g)  # only G's parameters move
    return torch.stack([loss_g, torch.sigmoid(logits_fake.float()).mean()]).detach()


def train_step(state: GanState, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Both phases; returns the figures in FIGURE_NAMES order as one detached tensor (5,)."""
    fake, d_figures = discriminator_step(state, real, z)
    return combine_figures(d_figures, generator_step(state, fake))


def combine_figures(d_figures: torch.Tensor, g_figures: torch.Tensor) -> torch.Tensor:
    loss_d, d_real, d_fake_before = d_figures
    loss_g, d_fake_after = g_figures
    return torch.stack([loss_d, loss_g, d_real, d_fake_before, d_fake_after])
