import pytest
import torch
from torch import nn

from dcgan.checkpoint import infer_discriminator_config, infer_generator_config, load_network_weights, load_weights
from dcgan.config import VALID_IMAGE_SIZES, ModelConfig, TrainConfig
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


# ---------------------------------------------------------------- stabilisers that change D: spectral norm, pack


def _conv_layout(state_dict):
    """main.N of every conv weight, whether spectral norm parametrises it (main.N.parametrizations.weight.original) or not."""
    return sorted(k.split(".weight")[0].split(".parametrizations")[0] for k, v in state_dict.items() if v.ndim == 4)


def test_spectral_norm_keeps_the_layout_and_holds_each_conv_at_unit_singular_value():
    from dcgan.step import GanState, train_step

    torch.manual_seed(0)
    config = ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8, spectral_norm=True)
    generator, discriminator = build_models(config)
    plain = Discriminator(ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8))
    assert isinstance(discriminator.main[3], nn.Identity) and isinstance(plain.main[3], nn.BatchNorm2d)  # BN's index kept
    assert _conv_layout(discriminator.state_dict()) == _conv_layout(plain.state_dict())
    assert "main.0.parametrizations.weight.0._u" in discriminator.state_dict()  # power-iteration vectors: saved buffers
    assert abs(discriminator.main[2].parametrizations.weight.original.std().item() - 0.02) < 0.005  # DCGAN init, drawn raw
    optimizer_g, optimizer_d = (torch.optim.Adam(m.parameters(), 1e-2) for m in (generator, discriminator))
    state = GanState(generator, discriminator, optimizer_g, optimizer_d)
    for seed in range(8):  # a large lr, so that the power iteration has moving weights to follow
        g = torch.Generator().manual_seed(seed)
        train_step(state, torch.rand(8, 1, 16, 16, generator=g) * 2 - 1, torch.randn(8, 8, 1, 1, generator=g))
    discriminator.eval()  # reads the weight with the stored u, v, without a further iteration
    for conv in (m for m in discriminator.modules() if isinstance(m, nn.Conv2d)):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05)


def test_pack_groups_consecutive_images_and_refuses_a_batch_it_cannot_split():
    torch.manual_seed(0)
    _, discriminator = build_models(ModelConfig(image_size=16, channels=3, nz=8, ngf=4, ndf=4, pack=2))
    assert discriminator.main[0].in_channels == 6
    discriminator.eval()  # BatchNorm's running statistics: no coupling across the batch
    images = torch.randn(8, 3, 16, 16)
    logits = discriminator(images)
    assert logits.shape == (4,)
    changed = images.clone()
    changed[3] += 1  # image 3 is in group 1 (images 2 and 3)
    assert (discriminator(changed) != logits).tolist() == [False, True, False, False]
    with pytest.raises(DcganError, match="a batch of 7 images cannot be packed in groups of 2"):
        discriminator(images[:7])
    with pytest.raises(DcganError, match="batch_size 9 is not a multiple of pack 2"):
        TrainConfig(batch_size=9, pack=2)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"spectral_norm": True}, "netD come from a discriminator without spectral norm, and this one has it \\(--spectral-norm"),
        ({"pack": 2}, "netD take 3 input channels, and this discriminator 6: 2 packed image\\(s\\) of 3 \\(--pack\\)"),
    ],
)
def test_a_tutorial_netd_does_not_fit_a_spectral_norm_or_packed_d_and_says_why(change, message):
    netD = TutorialDiscriminator(ndf=8)
    discriminator = Discriminator(ModelConfig(image_size=64, channels=3, ndf=8, **change))
    with pytest.raises(DcganError, match=message):
        load_weights(discriminator, netD.state_dict(), "netD")
    load_weights(Discriminator(ModelConfig(image_size=64, channels=3, ndf=8)), netD.state_dict(), "netD")  # the default D fits


def test_model_configs_saved_before_the_stabilisers_still_load():
    old = {k: v for k, v in vars(ModelConfig(image_size=32, channels=1)).items() if k not in ("spectral_norm", "pack")}
    assert ModelConfig(**old) == ModelConfig(image_size=32, channels=1)
