"""The adversarial objectives, on D's raw outputs (logits): each D loss in its real and fake halves, and G's.

    bce    the tutorial's (Goodfellow et al. 2014, non-saturating G loss):
           D: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))      G: -log sigmoid(D(G(z)))
    hinge  Lim & Ye 2017, as in SAGAN and BigGAN:
           D: mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))      G: -mean(D(G(z)))
    ls     least squares (LSGAN, Mao et al. 2017) with 0/1 targets on D's raw output:
           D: 0.5 mean((D(x) - 1)^2) + 0.5 mean(D(G(z))^2)         G: 0.5 mean((D(G(z)) - 1)^2)

With InfoGAN codes (models.py), `code_loss` is added to both steps' fake halves: D's code head learns
to recover the categories, and G to make them recoverable (Chen et al. 2016's L_I, up to a constant).

The D step backpropagates its two halves separately (step.py), so each is a function of its own.
The labels (smoothing) apply to bce only; hinge and ls have their margins and targets built in.
The names of the losses live in config.py (LOSSES), so that validating a config needs no torch.
hinge and ls compute in float32, so a bf16/fp16 D output does not round the loss.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    # mean over the batch of -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss_real(loss: str, logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """D's loss on real images (to minimise): it pushes D(x) up."""
    if loss == "hinge":
        return F.relu(1.0 - logits.float()).mean()  # zero once D(x) >= 1: no reward for more confidence
    if loss == "ls":
        return 0.5 * (logits.float() - 1.0).square().mean()
    return _bce(logits, real_label)  # -log sigmoid(D(x)) with real_label 1


def d_loss_fake(loss: str, logits: torch.Tensor, fake_label: float = 0.0) -> torch.Tensor:
    """D's loss on generated images (to minimise): it pushes D(G(z)) down."""
    if loss == "hinge":
        return F.relu(1.0 + logits.float()).mean()  # zero once D(G(z)) <= -1
    if loss == "ls":
        return 0.5 * logits.float().square().mean()
    return _bce(logits, fake_label)  # softplus(x) = -log(1 - sigmoid(x)) with fake_label 0


def g_loss(loss: str, logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """G's loss on D's output for its images (to minimise): it pushes D(G(z)) up."""
    if loss == "hinge":
        return -logits.float().mean()  # unbounded: G keeps a gradient however D scores it
    if loss == "ls":
        return 0.5 * (logits.float() - 1.0).square().mean()
    return _bce(logits, real_label)  # log D(G(z)) rather than -log(1 - D(G(z))): no early saturation


def code_loss(code_logits: torch.Tensor, targets: torch.Tensor, info_codes: tuple[int, ...]) -> torch.Tensor:
    """Sum over the codes of the cross-entropy of D's guess (B, sum(info_codes)) at the categories (B, codes).

    Minimising it maximises InfoGAN's variational lower bound on the mutual information I(c; G(z, c)).
    """
    guesses = code_logits.float().split(info_codes, 1)
    return sum(F.cross_entropy(guess, targets[:, i]) for i, guess in enumerate(guesses))


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor, loss_scale: float = 1.0) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over the real batch (R1, Mescheder et al. 2018), differentiable in D's weights.

    `real` (B, C, H, W) requires grad and `logits_real` is D's output on it (B / pack,): with pack,
    x is a group of images and its gradient norm counts the whole group. The sum of the logits is
    differentiated, one backward pass for the batch; with BatchNorm in D (training mode) an image's
    logit also depends a little on the others, which that sum includes, as every R1 implementation does.
    loss_scale (fp16): the output is scaled before differentiating, so small gradients do not flush to
    zero in fp16, and the gradient is unscaled after (the GradScaler recipe for gradient penalties).
    """
    (grad,) = torch.autograd.grad(logits_real.float().sum() * loss_scale, real, create_graph=True)  # (B, C, H, W)
    return (grad.float() / loss_scale).square().sum() / logits_real.numel()

