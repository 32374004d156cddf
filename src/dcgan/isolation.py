"""`--check-isolation N`: every N steps, prove the step keeps the tutorial's gradient discipline.

The D step must leave G's parameters and gradients exactly as they were (the detached fake stops
the D loss at G's output), and the G step must leave D's parameters exactly as they were (only
optimizer_g steps). A checked step snapshots the watched tensors, runs the same two phases as
`step.train_step`, and compares bit for bit; the cost is one copy of the weights, every N steps.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .errors import DcganError
from .step import GanState, codes_of, combine_figures, discriminator_step, generator_step


class IsolationBroken(DcganError):
    """A phase of the step touched the other network: a bug in the step, never a user mistake."""


def _snapshot(module: nn.Module, with_grads: bool) -> list[tuple[str, torch.Tensor, Optional[torch.Tensor]]]:
    return [
        (name, p.detach().clone(), p.grad.detach().clone() if with_grads and p.grad is not None else None)
        for name, p in module.named_parameters()
    ]


def _first_change(module: nn.Module, snapshot, with_grads: bool) -> Optional[str]:
    for (name, value, grad), p in zip(snapshot, module.parameters()):
        if not torch.equal(p.detach(), value):
            return f"parameter {name}"
        if with_grads and (grad is None) != (p.grad is None):
            return f"gradient of {name} ({'created' if grad is None else 'cleared'})"
        if with_grads and grad is not None and not torch.equal(p.grad, grad):
            return f"gradient of {name}"
    return None


def checked_train_step(state: GanState, real: torch.Tensor, z: torch.Tensor, step: int, r1_gamma: float = 0.0) -> torch.Tensor:
    """`train_step`, verified; raises IsolationBroken naming the first tensor that moved."""
    G, D = state.generator, state.discriminator
    before_g = _snapshot(G, with_grads=True)
    fake, d_figures = discriminator_step(state, real, z, r1_gamma)
    changed = _first_change(G, before_g, with_grads=True)
    if changed:
        raise IsolationBroken(f"isolation check failed at step {step}: the D step changed G's {changed} (is fake detached?)")
    before_d = _snapshot(D, with_grads=False)
    g_figures = generator_step(state, fake, codes_of(state, z))
    changed = _first_change(D, before_d, with_grads=False)
    if changed:
        raise IsolationBroken(f"isolation check failed at step {step}: the G step changed D's {changed}")
    return combine_figures(d_figures, g_figures)
