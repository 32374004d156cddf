import pytest
import torch
from torch import nn

from dcgan.checkpoint import infer_discriminator_config, infer_generator_config, load_network_weights, load_weights
from dcgan.config import VALID_IMAGE_SIZES, ModelConfig
from dcgan.errors import DcganError
from dcgan.models import Discriminator, Generator, build_models


@pytest.mark.parametrize("size", VALID_IMAGE_SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_for_every_size_and_channel_count(size, channels):
    config = ModelConfig(image_size=size, channels=channels, nz=8, ngf=4, ndf=4)
    generator, discriminator = build_models(config)
    z = torch.randn(2, 8, 1, 1)
    images = generator(z)
    assert images.shape == (2, channels, size, size)
    assert images.abs().max() <= 1.0  # tanh output
    assert discriminator(images).shape == (2,)


@pytest.mark.parametrize("size", [8, 12, 48, 100, 512])
def test_other_sizes_are_refused_with_the_valid_list(size):
    with pytest.raises(DcganError, match="16, 32, 64, 128, 256"):
        ModelConfig(image_size=size)


def test_channels_other_than_1_or_3_are_refused():
    with pytest.raises(DcganError, match="1 .* or 3"):
        ModelConfig(channels=2)


def test_dcgan_init_statistics():
    generator, discriminator = build_models(ModelConfig(image_size=64, channels=3))
    conv = generator.main[3].weight
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    bn = discriminator.main[3]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and torch.all(bn.bias == 0)


# The PyTorch DCGAN tutorial's networks, written out as the tutorial does (64x64, 3 channels).
class TutorialGenerator(nn.Module):
    def __init__(self, nz=100, ngf=64, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )  # fmt: skip

    def forward(self, x):
        return self.main(x)


class TutorialDiscriminator(nn.Module):
    def __init__(self, ndf=64, nc=3):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x):
        return self.main(x)


def _randomise_batchnorm_stats(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)


def test_tutorial_state_dicts_have_our_keys_and_shapes():
    ours_g, ours_d = build_models(ModelConfig(image_size=64, channels=3))
    for ours, theirs in ((ours_g, TutorialGenerator()), (ours_d, TutorialDiscriminator())):
        expected = {k: v.shape for k, v in theirs.state_dict().items()}
        assert {k: v.shape for k, v in ours.state_dict().items()} == expected


@pytest.mark.parametrize("prefix", ["", "module."])  # "module." is what nn.DataParallel (ngpu > 1) saves
def test_tutorial_weights_files_load_and_compute_the_same(tmp_path, prefix):
    torch.manual_seed(1)
    netG, netD = TutorialGenerator().eval(), TutorialDiscriminator().eval()
    _randomise_batchnorm_stats(netG)
    _randomise_batchnorm_stats(netD)
    torch.save({prefix + k: v for k, v in netG.state_dict().items()}, tmp_path / "netG.pth")
    torch.save({prefix + k: v for k, v in netD.state_dict().items()}, tmp_path / "netD.pth")

    g_state, g_config = load_network_weights(tmp_path / "netG.pth", "generator")
    d_state, d_config = load_network_weights(tmp_path / "netD.pth", "discriminator")
    assert (g_config.image_size, g_config.channels, g_config.nz, g_config.ngf) == (64, 3, 100, 64)
    assert (d_config.image_size, d_config.channels, d_config.ndf) == (64, 3, 64)
    generator, discriminator = Generator(g_config).eval(), Discriminator(d_config).eval()
    load_weights(generator, g_state, "netG")
    load_weights(discriminator, d_state, "netD")

    z = torch.randn(3, 100, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(generator(z), netG(z), rtol=0, atol=0)
        images = netG(z)
        torch.testing.assert_close(torch.sigmoid(discriminator(images)), netD(images).view(-1), rtol=1e-6, atol=1e-6)


def test_architecture_is_inferred_from_a_grayscale_32px_state_dict():
    generator = Generator(ModelConfig(image_size=32, channels=1, nz=20, ngf=8))
    config = infer_generator_config(generator.state_dict())
    assert (config.image_size, config.channels, config.nz, config.ngf) == (32, 1, 20, 8)
    discriminator = Discriminator(ModelConfig(image_size=128, channels=1, ndf=4))
    config = infer_discriminator_config(discriminator.state_dict())
    assert (config.image_size, config.channels, config.ndf) == (128, 1, 4)


def test_weights_for_another_size_are_refused_with_one_line():
    small = Generator(ModelConfig(image_size=32, channels=3))
    big = Generator(ModelConfig(image_size=64, channels=3))
    with pytest.raises(DcganError, match="does not fit this model"):
        load_weights(big, small.state_dict(), "netG")


def test_tutorial_netg_samples_and_warm_starts_through_the_cli(tmp_path, capsys):
    from dcgan.cli import main
    from dcgan.checkpoint import read_file

    torch.manual_seed(2)
    netG, netD = TutorialGenerator(nz=100, ngf=8), TutorialDiscriminator(ndf=8)  # the tutorial's layout, narrow
    torch.save(netG.state_dict(), tmp_path / "netG.pth")
    torch.save(netD.state_dict(), tmp_path / "netD.pth")
    assert main(["sample", "--checkpoint", str(tmp_path / "netG.pth"), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0
    import numpy as np

    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 64, 64, 3)
    argv = ["train", "--data", "fake", "--image-size", "64", "--ngf", "8", "--ndf", "8", "--batch-size", "64", "--max-steps", "1",
            "--no-progress", "--init-g", str(tmp_path / "netG.pth"), "--init-d", str(tmp_path / "netD.pth"), "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    assert "generator initialised from" in capsys.readouterr().out
    trained = read_file(tmp_path / "run" / "checkpoints" / "step_00000000.pt")["generator"]  # saved before the first step
    assert all(torch.equal(trained[k], v) for k, v in netG.state_dict().items())
