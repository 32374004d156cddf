"""DiffAugment: seeded, differentiable, and each operation does what it says."""

import pytest
import torch

from dcgan.augment import color, cutout, identity, make_augment, translation
from dcgan.config import parse_diffaug
from dcgan.errors import DcganError

ALL = "color,translation,cutout"


def _images(channels=3, seed=0):
    return torch.rand(4, channels, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_same_seed_draws_the_same_augmentation():
    augment, x = make_augment(ALL), _images()
    torch.manual_seed(0)
    a, b = augment(x), augment(x)
    torch.manual_seed(0)
    assert torch.equal(augment(x), a) and not torch.equal(a, b)  # the global stream: fixed by the seed, new per call


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", ALL])
def test_gradients_reach_the_input(policy):
    x = _images().requires_grad_(True)
    out = make_augment(policy)(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_shifts_each_image_by_at_most_an_eighth_with_zeros():
    torch.manual_seed(1)
    x = _images(channels=1)
    out = translation(x)
    assert out.shape == x.shape
    for image, shifted in zip(x, out):
        padded = torch.nn.functional.pad(image, (2, 2, 2, 2))  # 16 / 8 = 2 pixels each way
        candidates = [padded[:, 2 - dy : 18 - dy, 2 - dx : 18 - dx] for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(torch.equal(shifted, c) for c in candidates)


def test_cutout_zeros_one_square_of_half_the_side_at_most():
    torch.manual_seed(2)
    out = cutout(torch.ones(64, 1, 16, 16))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert zeros.min() >= 4 * 4 and zeros.max() <= 8 * 8  # a corner-centred square keeps a quarter inside


def test_color_keeps_shapes_and_works_in_grayscale_and_channels_last():
    x = _images(channels=1).contiguous(memory_format=torch.channels_last)
    assert color(x).shape == x.shape and translation(x).shape == x.shape


def test_policies_are_checked_and_none_is_the_identity():
    assert parse_diffaug("color, cutout") == ("color", "cutout")
    with pytest.raises(DcganError, match="unknown DiffAugment policy 'blur': use a comma-separated list of color, translation"):
        parse_diffaug("color,blur")
    with pytest.raises(DcganError, match="twice"):
        parse_diffaug("color,color")
    assert make_augment(None) is identity and make_augment("") is identity
