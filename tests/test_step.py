"""The tutorial's gradient discipline, checked exactly."""

import math

import pytest
import torch

from dcgan.augment import make_augment
from dcgan.config import ModelConfig
from dcgan.models import build_models
from dcgan.step import FIGURE_NAMES, GanState, codes_of, discriminator_step, generator_step, train_step


def _state(seed=0):
    torch.manual_seed(seed)
    generator, discriminator = build_models(ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4))
    return GanState(
        generator,
        discriminator,
        torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999)),
        torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999)),
    )


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def _same(a, b):
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b))


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(6, 1, 16, 16, generator=g) * 2 - 1, torch.randn(6, 8, 1, 1, generator=g)


def test_d_step_leaves_g_parameters_and_gradients_exactly_untouched():
    state = _state()
    train_step(state, *_batch(1))  # leaves real G gradients behind, as in a running loop
    g_params, g_grads = _params(state.generator), _grads(state.generator)
    assert all(g is not None and g.abs().sum() > 0 for g in g_grads)
    d_params = _params(state.discriminator)

    fake, _ = discriminator_step(state, *_batch(2))

    assert _same(_params(state.generator), g_params)
    assert _same(_grads(state.generator), g_grads)  # the detached fake sent nothing into G
    assert not _same(_params(state.discriminator), d_params)  # and D did learn
    assert fake.requires_grad and fake.grad_fn is not None  # G's graph survived for the G step


def test_d_step_computes_no_g_gradient_from_scratch():
    state = _state()
    discriminator_step(state, *_batch(1))
    assert all(p.grad is None for p in state.generator.parameters())


def test_g_step_leaves_d_parameters_exactly_untouched_and_reuses_fake():
    state = _state()
    real, z = _batch(1)
    fake, _ = discriminator_step(state, real, z)
    d_params, g_params = _params(state.discriminator), _params(state.generator)
    generator_step(state, fake)  # would raise "backward through the graph a second time" without detach
    assert _same(_params(state.discriminator), d_params)
    assert not _same(_params(state.generator), g_params)


def test_without_detach_the_g_step_fails_as_the_tutorial_warns():
    state = _state()
    real, z = _batch(1)
    fake = state.generator(z)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(state.discriminator(fake), torch.zeros(6))
    loss.backward()  # D step without detach: frees G's graph
    again = torch.nn.functional.binary_cross_entropy_with_logits(state.discriminator(fake), torch.ones(6))
    try:
        again.backward()
    except RuntimeError as error:
        assert "backward through the graph a second time" in str(error)
    else:
        raise AssertionError("reusing fake after a non-detached backward should fail")


def test_figures_are_the_tutorials():
    state = _state()
    real, z = _batch(3)
    figures = dict(zip(FIGURE_NAMES, train_step(state, real, z).tolist()))
    assert set(figures) == {"loss_d", "loss_g", "d_real", "d_fake_before", "d_fake_after"}
    for name in ("d_real", "d_fake_before", "d_fake_after"):
        assert 0.0 < figures[name] < 1.0
    # Jensen: mean(-log p) >= -log(mean p), so each loss bounds its probabilities from above
    bound_d = -math.log(figures["d_real"]) - math.log(1 - figures["d_fake_before"])
    assert bound_d <= figures["loss_d"] < bound_d + 0.05
    bound_g = -math.log(figures["d_fake_after"])
    assert bound_g <= figures["loss_g"] < bound_g + 0.05


def test_same_seed_same_step():
    a, b = _state(5), _state(5)
    batch = _batch(7)
    assert torch.equal(train_step(a, *batch), train_step(b, *batch))
    assert _same(_params(a.generator), _params(b.generator))


# ---------------------------------------------------------------- the stabilisers keep the discipline

STABILISERS = {
    "hinge": ({}, {"loss": "hinge"}, 0.0),
    "ls": ({}, {"loss": "ls"}, 0.0),
    "spectral_norm": ({"spectral_norm": True}, {}, 0.0),
    "pack": ({"pack": 2}, {}, 0.0),
    "diffaug": ({}, {"augment": make_augment("color,translation,cutout")}, 0.0),
    "r1": ({}, {}, 10.0),
    "info_codes": ({"info_codes": (3, 2)}, {"info_codes": (3, 2)}, 0.0),  # the last 5 of z's 8 numbers
}


@pytest.mark.parametrize("name", sorted(STABILISERS))
def test_each_stabiliser_keeps_the_detach_discipline(name):
    model_changes, state_changes, r1_gamma = STABILISERS[name]
    torch.manual_seed(0)
    generator, discriminator = build_models(ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4, **model_changes))
    optimizer_g, optimizer_d = (torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999)) for m in (generator, discriminator))
    state = GanState(generator, discriminator, optimizer_g, optimizer_d, **state_changes)
    real, z = _batch(1)
    g_params = _params(generator)

    fake, _ = discriminator_step(state, real, z, r1_gamma)
    assert _same(_params(generator), g_params) and all(p.grad is None for p in generator.parameters())
    assert fake.grad_fn is not None  # G's graph survived
    d_params = _params(discriminator)
    generator_step(state, fake, codes_of(state, z))  # reuses fake: a second pass through G's graph
    assert _same(_params(discriminator), d_params)
    assert not _same(_params(generator), g_params)
    if not model_changes:  # from the same weights and batch, the default step updates D otherwise
        plain = _state()
        discriminator_step(plain, real, z)
        assert not _same(_params(plain.discriminator), d_params)
