"""The adversarial losses and the R1 penalty, against hand computations."""

import math

import pytest
import torch

from dcgan.config import ModelConfig
from dcgan.losses import d_loss_fake, d_loss_real, g_loss, r1_penalty
from dcgan.models import build_models

LOGITS = [-2.0, 0.0, 0.5, 3.0]


def _mean(values):
    return sum(values) / len(values)


def _softplus(x):
    return math.log1p(math.exp(x))  # -log(1 - sigmoid(x)) = softplus(x); -log sigmoid(x) = softplus(-x)


EXPECTED = {  # loss: (D on real, D on fake, G), each the mean over LOGITS
    "bce": tuple(_mean([_softplus(sign * x) for x in LOGITS]) for sign in (-1, 1, -1)),
    "hinge": ((3 + 1 + 0.5 + 0) / 4, (0 + 1 + 1.5 + 4) / 4, -(-2 + 0 + 0.5 + 3) / 4),
    "ls": (0.5 * (9 + 1 + 0.25 + 4) / 4, 0.5 * (4 + 0 + 0.25 + 9) / 4, 0.5 * (9 + 1 + 0.25 + 4) / 4),
}


@pytest.mark.parametrize("loss", sorted(EXPECTED))
def test_each_loss_matches_its_formula(loss):
    logits = torch.tensor(LOGITS)
    got = (d_loss_real(loss, logits).item(), d_loss_fake(loss, logits).item(), g_loss(loss, logits).item())
    assert got == pytest.approx(EXPECTED[loss], rel=1e-6)


def test_labels_smooth_bce_only():
    logits = torch.tensor(LOGITS)
    smoothed = _mean([-(0.9 * math.log(1 / (1 + math.exp(-x))) + 0.1 * math.log(1 - 1 / (1 + math.exp(-x)))) for x in LOGITS])
    assert d_loss_real("bce", logits, 0.9).item() == pytest.approx(smoothed, rel=1e-6)
    for loss in ("hinge", "ls"):
        assert torch.equal(d_loss_real(loss, logits, 0.9), d_loss_real(loss, logits, 1.0))
        assert torch.equal(d_loss_fake(loss, logits, 0.1), d_loss_fake(loss, logits, 0.0))


def test_hinge_and_ls_compute_in_float32_from_bf16_logits():
    logits = torch.tensor(LOGITS, dtype=torch.bfloat16)
    assert g_loss("hinge", logits).dtype == torch.float32 and d_loss_real("ls", logits).dtype == torch.float32


def test_r1_penalty_is_the_mean_squared_input_gradient_and_trains_d():
    torch.manual_seed(0)
    _, D = build_models(ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4, spectral_norm=True))
    D.eval()  # no power iteration: every call sees the same weights
    real = torch.randn(3, 1, 16, 16, requires_grad=True)
    penalty = r1_penalty(D(real), real)
    by_hand = []
    for image in real.detach():
        x = image.unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x)
        by_hand.append(grad.square().sum().item())
    assert penalty.item() == pytest.approx(_mean(by_hand), rel=1e-5)
    penalty.backward()  # create_graph: the penalty has a gradient in D's weights
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())
    scaled = r1_penalty(D(real), real, loss_scale=1024.0)  # the fp16 recipe: scale, differentiate, unscale
    assert scaled.item() == pytest.approx(penalty.item(), rel=1e-5)
