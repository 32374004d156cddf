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

Stabilisers, each off by default (the tutorial's step), none of which changes the above:
- `state.loss` (losses.py): bce (the tutorial's), hinge or ls; only the formulas on D's logits change.
- `state.augment` (augment.py, DiffAugment): applied to every image D sees, real and fake, in both
  phases. It acts on D's input, after G: the D step augments `fake.detach()`, the G step augments
  the same `fake`, and G's gradient flows back through the (differentiable) augmentation.
- R1 (`r1_gamma`): on the real half of the D step, r1_gamma/2 * E||grad_x D(x)||^2 is added to D's
  loss; x is the real batch, which carries no graph to G.
- InfoGAN codes (`state.info_codes`, models.py): G turns z's last numbers into categories itself; the
  D step adds `info_weight` x the code loss of D's guess at the categories of `fake.detach()` (D's
  code head learns to read them), and the G step adds the same loss on the same `fake`, through the
  fixed D, so that G learns to make them readable. The targets come from z, so no labels are used.
  With `state.channel_codes` (one code per channel, for data whose channels are exchangeable, as
  stacked-mnist's), D's head reads the codes from a second pass over the same fakes with each one's
  channels shuffled, and the targets shuffled alike, in both steps: it can only read the code of the
  channel at each place, so code i comes to set channel i's image. D's real-or-fake logits still
  come from the fakes as drawn: shuffled, the channels' digits mix at every place, and D would not
  see a channel that lacks a digit. The shuffle draws from torch's default generator, as DiffAugment does.
- spectral norm and pack live inside D (models.py): the step calls D as before. Spectral norm's
  power iteration advances at every training-mode pass through D, so its u, v buffers move in the
  G step too, as BatchNorm's running statistics do in the tutorial; D's parameters do not.

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
from torch.nn.parallel import DistributedDataParallel

from .augment import identity
from .losses import code_loss, d_loss_fake, d_loss_real, g_loss, r1_penalty
from .models import code_targets

FIGURE_NAMES = ("loss_d", "loss_g", "d_real", "d_fake_before", "d_fake_after")
CODE_FIGURE = "loss_codes"  # with info codes, a sixth figure: the G step's code loss, before its weight (chance: ln K)


@dataclass
class GanState:
    generator: nn.Module
    discriminator: nn.Module
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer
    real_label: float = 1.0  # bce only
    fake_label: float = 0.0  # bce only
    loss: str = "bce"  # the adversarial loss (losses.py): bce, hinge or ls
    augment: Callable[[torch.Tensor], torch.Tensor] = identity  # DiffAugment of every image D sees (augment.py)
    # mixed precision: forward passes run under `autocast()`; with fp16, each optimizer has a GradScaler
    # (losses are scaled before backward so small gradients do not underflow, and unscaled before the step)
    autocast: Callable[[], AbstractContextManager] = nullcontext
    scaler_d: Optional[torch.amp.GradScaler] = None
    scaler_g: Optional[torch.amp.GradScaler] = None
    info_codes: tuple[int, ...] = ()  # InfoGAN: the categories of each code G reads from z (models.py); (): none
    info_weight: float = 1.0  # the code loss's weight in both steps
    channel_codes: bool = False  # code i belongs to channel i: D's head reads them from the fakes shuffled (see above)


def codes_of(state: GanState, z: torch.Tensor) -> Optional[torch.Tensor]:
    """The categories z picks for G (B, codes), the code loss's targets; None without info codes."""
    return code_targets(z, list(state.info_codes)) if state.info_codes else None


def shuffle_channels(fake: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each fake's channels in a random order of its own, and its codes (one per channel) in the same order."""
    B, C = codes.shape
    order = torch.argsort(torch.rand(B, C, device=codes.device), dim=1)  # place j shows channel order[b, j]
    return torch.gather(fake, 1, order.view(B, C, 1, 1).expand_as(fake)), torch.gather(codes, 1, order)


def _judge_fake(state: GanState, fake: torch.Tensor, codes: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """D's logits on (augmented) fakes and, with info codes, the code loss of its guess at their categories."""
    with state.autocast():
        if codes is None:
            return state.discriminator(state.augment(fake)), None
        if state.channel_codes:
            logits = state.discriminator(state.augment(fake))
            shuffled, codes = shuffle_channels(fake, codes)  # differentiable: G's gradient comes back to the right channel
            code_logits = state.discriminator(state.augment(shuffled), with_codes=True)[1]
        else:
            logits, code_logits = state.discriminator(state.augment(fake), with_codes=True)
    return logits, state.info_weight * code_loss(code_logits, codes, state.info_codes)


def _backward(loss: torch.Tensor, scaler: Optional[torch.amp.GradScaler]) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler]) -> None:
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()


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


def discriminator_step(state: GanState, real: torch.Tensor, z: torch.Tensor, r1_gamma: float = 0.0):
    """Phase 1: update D on a real batch and a fake one. Returns (fake, figures); fake keeps G's graph.

    r1_gamma > 0: add the R1 penalty r1_gamma/2 * E||grad_x D(x)||^2 over the real batch (the caller
    picks the steps and scales gamma for lazy regularisation).
    """
    D, G = state.discriminator, state.generator
    D.zero_grad(set_to_none=True)

    with _no_sync(D):  # DDP: the real half only accumulates; the fake half's backward reduces both at once
        if r1_gamma:
            real = real.detach().requires_grad_(True)  # R1 differentiates D(x) with respect to x itself, before augmentation
        with state.autocast():
            logits_real = D(state.augment(real))  # (B / pack,)
        loss_d_real = d_loss_real(state.loss, logits_real, state.real_label)
        loss = loss_d_real
        if r1_gamma:
            loss_scale = state.scaler_d.get_scale() if state.scaler_d is not None else 1.0
            loss = loss + r1_gamma / 2 * r1_penalty(logits_real, real, loss_scale)
        _backward(loss, state.scaler_d)

    with state.autocast():
        fake = G(z)  # (B, C, H, W); its graph is needed again in phase 2
    # detach: the D loss must not reach G, and G's graph must survive for the G step;
    # the augmentation acts on D's input, so it is applied after the detach and `fake` stays G's output
    logits_fake, loss_codes = _judge_fake(state, fake.detach(), codes_of(state, z))
    loss_d_fake = d_loss_fake(state.loss, logits_fake, state.fake_label)
    loss = loss_d_fake if loss_codes is None else loss_d_fake + loss_codes
    _backward(loss, state.scaler_d)  # DDP: all-reduces the accumulated real + fake gradient, averaged over the ranks
    _optimizer_step(state.optimizer_d, state.scaler_d)

    # D(x) is reported as sigmoid(logit) whatever the loss, so the figures compare across losses
    # (for hinge and ls the logit is a score, not a log-odds); loss_d and loss_g are the adversarial
    # losses alone: loss_d leaves the R1 penalty out, and both leave the code loss out
    figures = torch.stack(
        [loss_d_real + loss_d_fake, torch.sigmoid(logits_real.float()).mean(), torch.sigmoid(logits_fake.float()).mean()]
    ).detach()
    return fake, figures  # figures: loss_d, d_real, d_fake_before


def generator_step(state: GanState, fake: torch.Tensor, codes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Phase 2: update G so the just-updated D calls the same `fake` real. Returns [loss_g, d_fake_after(, loss_codes)].

    codes: with info codes, the categories `fake` was drawn with (`codes_of(state, z)`).
    """
    if state.info_codes and codes is None:
        raise ValueError("with info codes, the G step needs the categories of `fake`: codes_of(state, z)")
    state.generator.zero_grad(set_to_none=True)
    with _d_as_a_fixed_function(state.discriminator):
        # no detach: gradients flow through D (and the augmentation, drawn anew) into G
        logits_fake, loss_codes = _judge_fake(state, fake, codes)
        loss_g = g_loss(state.loss, logits_fake, state.real_label)  # bce: log D(G(z)), the non-saturating loss
        _backward(loss_g if loss_codes is None else loss_g + loss_codes, state.scaler_g)
    _optimizer_step(state.optimizer_g, state.scaler_g)  # only G's parameters move
    figures = [loss_g, torch.sigmoid(logits_fake.float()).mean()]
    if loss_codes is not None:
        figures.append(loss_codes / state.info_weight)  # how well the updated D reads the codes: falls as G draws them apart
    return torch.stack(figures).detach()


def train_step(state: GanState, real: torch.Tensor, z: torch.Tensor, r1_gamma: float = 0.0) -> torch.Tensor:
    """Both phases; returns the figures in `figure_names(state)` order as one detached tensor (5,) or (6,)."""
    fake, d_figures = discriminator_step(state, real, z, r1_gamma)
    return combine_figures(d_figures, generator_step(state, fake, codes_of(state, z)))


def combine_figures(d_figures: torch.Tensor, g_figures: torch.Tensor) -> torch.Tensor:
    loss_d, d_real, d_fake_before = d_figures
    loss_g, d_fake_after, *code_figure = g_figures
    return torch.stack([loss_d, loss_g, d_real, d_fake_before, d_fake_after, *code_figure])


def figure_names(state: GanState) -> tuple[str, ...]:
    """The names of train_step's figures, in order: FIGURE_NAMES, and CODE_FIGURE with info codes."""
    return FIGURE_NAMES + ((CODE_FIGURE,) if state.info_codes else ())
