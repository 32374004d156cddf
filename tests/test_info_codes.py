"""InfoGAN codes (--info-codes): G reads categories from z, D's code head learns them, no labels used."""

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import error_line
from dcgan.config import ModelConfig, TrainConfig
from dcgan.losses import code_loss
from dcgan.models import build_models, code_targets, with_one_hot_codes
from dcgan.step import GanState, codes_of, discriminator_step, generator_step, shuffle_channels, train_step
from dcgan.train import Trainer

CODES = (3, 2)  # two codes: the last 5 of z's 8 numbers
MODEL = dict(image_size=16, channels=1, nz=8, ngf=4, ndf=4)


def _state(info_weight=1.0, seed=0, lr=2e-4):
    torch.manual_seed(seed)
    generator, discriminator = build_models(ModelConfig(**MODEL, info_codes=CODES))
    optimizers = [torch.optim.Adam(m.parameters(), lr, betas=(0.5, 0.999)) for m in (generator, discriminator)]
    return GanState(generator, discriminator, *optimizers, info_codes=CODES, info_weight=info_weight)


def _batch(seed=1, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, torch.randn(n, 8, 1, 1, generator=g)


def test_the_last_numbers_of_z_pick_each_codes_category_and_become_one_hots():
    z = torch.tensor([[0.5, -1.0, 0.25, 2.0, -0.5, 0.75, 0.25, 1.5]]).view(1, 8, 1, 1)  # exact in float32
    assert code_targets(z, list(CODES)).tolist() == [[0, 1]]  # the argmax of (2.0, -0.5, 0.75), of (0.25, 1.5)
    assert with_one_hot_codes(z, list(CODES)).flatten().tolist() == [0.5, -1.0, 0.25, 1, 0, 0, 0, 1]


def test_categories_of_normal_noise_are_uniform():
    counts = torch.bincount(code_targets(torch.randn(30000, 12, 1, 1, generator=torch.Generator().manual_seed(0)), [10])[:, 0])
    assert counts.min() > 2700 and counts.max() < 3300  # 3,000 each; binomial sd 52


def test_g_sees_only_the_category_of_a_code_not_its_numbers():
    generator = build_models(ModelConfig(**MODEL, info_codes=CODES))[0].eval()
    z = torch.randn(4, 8, 1, 1)
    moved = z.clone()
    moved[:, 3:] = moved[:, 3:] * 3 + 1  # other numbers, the same argmax
    other = z.clone()
    other[:, 3:6] = -other[:, 3:6]  # another category for the first code, mostly
    with torch.no_grad():
        assert torch.equal(generator(z), generator(moved))
        changed = code_targets(other, list(CODES))[:, 0] != code_targets(z, list(CODES))[:, 0]
        assert changed.any() and not torch.equal(generator(z)[changed], generator(other)[changed])


def test_the_code_loss_is_the_sum_of_each_codes_cross_entropy():
    logits, targets = torch.randn(6, 5), torch.tensor([[0, 1], [2, 0], [1, 1], [0, 0], [2, 1], [1, 0]])
    expected = F.cross_entropy(logits[:, :3], targets[:, 0]) + F.cross_entropy(logits[:, 3:], targets[:, 1])
    assert torch.allclose(code_loss(logits, targets, CODES), expected)


def test_the_d_step_trains_the_code_head_and_the_g_step_passes_the_code_loss_to_g():
    real, z = _batch()
    state = _state()
    head = state.discriminator.code_head.weight.detach().clone()
    fake, _ = discriminator_step(state, real, z)
    assert not torch.equal(state.discriminator.code_head.weight, head)  # the D step's code loss reached the head
    g_grads = {}
    for weight in (1.0, 3.0):  # same weights and batch, only the code loss's weight differs
        state = _state(info_weight=weight)
        fake, _ = discriminator_step(state, real, z)
        generator_step(state, fake, codes_of(state, z))
        g_grads[weight] = [p.grad.clone() for p in state.generator.parameters()]
    assert any(not torch.allclose(a, b) for a, b in zip(g_grads[1.0], g_grads[3.0]))


def test_the_g_step_refuses_to_run_without_the_categories():
    real, z = _batch()
    state = _state()
    fake, _ = discriminator_step(state, real, z)
    with pytest.raises(ValueError, match="needs the categories of `fake`"):
        generator_step(state, fake)


def test_training_makes_the_codes_readable_from_the_images():
    """The code loss (D's guess at the categories of fresh fakes) falls well below chance, ln 3 + ln 2."""
    state = _state(seed=3, lr=1e-3)
    real = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    noise = torch.Generator().manual_seed(4)

    def loss_on_fresh_fakes():
        z = torch.randn(256, 8, 1, 1, generator=noise)
        with torch.no_grad():
            _, code_logits = state.discriminator(state.generator(z), with_codes=True)
        return code_loss(code_logits, codes_of(state, z), CODES).item()

    chance = torch.log(torch.tensor(6.0)).item()
    before = loss_on_fresh_fakes()
    for _ in range(60):
        train_step(state, real, torch.randn(16, 8, 1, 1, generator=noise))
    after = loss_on_fresh_fakes()
    assert before > 0.8 * chance and after < 0.5 * chance, (before, after, chance)


def test_a_discriminator_without_the_code_head_is_one_clear_line(tmp_path, capsys):
    tiny = ["--data", "fake", "--image-size", "16", "--ngf", "4", "--ndf", "4", "--batch-size", "8", "--max-steps", "1"]
    run = tmp_path / "plain"
    Trainer(TrainConfig(data="fake", image_size=16, ngf=4, ndf=4, batch_size=8, max_steps=1, out=str(run), progress=False), log=lambda m: None).fit()
    line = error_line(capsys, ["train", *tiny, "--info-codes", "3", "--init-d", str(run / "checkpoints" / "final.pt"), "--out", str(tmp_path / "b")])
    assert "guess 0 InfoGAN code categories in all, and this discriminator 3 (--info-codes)" in line


@pytest.fixture(scope="module")
def coded_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("coded") / "run"
    config = TrainConfig(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=8, max_steps=2, info_codes="3,2", out=str(run), progress=False)
    return Trainer(config, log=lambda m: None).fit()


def test_sample_code_draws_the_seeds_noise_in_the_given_categories(coded_run, tmp_path, capsys):
    from dcgan.cli import main
    from dcgan.sample import generate, latent, load_generator, with_categories

    generator = load_generator(coded_run)
    z = with_categories(latent(6, 8, seed=5), (3, 2), [2, 0])
    assert code_targets(z, list(CODES)).tolist() == [[2, 0]] * 6
    assert torch.equal(z[:, :3], latent(6, 8, seed=5)[:, :3])  # the continuous numbers as the seed drew them
    for code, out in (("2,0", "a.npz"), ("1,1", "b.npz")):
        assert main(["sample", "--run", str(coded_run), "--n", "6", "--seed", "5", "--code", code, "--out", str(tmp_path / out)]) == 0
    a, b = (np.load(tmp_path / name)["images"] for name in ("a.npz", "b.npz"))
    assert np.array_equal(a, generate(generator, z)) and not np.array_equal(a, b)


@pytest.mark.parametrize(
    "code, message",
    [
        ("2", "--code gives 1 categories, and this generator has 2 codes (3,2)"),
        ("3,0", "--code category 3 is outside 0..2, the categories of a code with 3"),
        ("a,b", "--code 'a,b' must be categories counted from 0, comma-separated"),
    ],
)
def test_a_bad_code_is_one_line_and_status_2(coded_run, tmp_path, capsys, code, message):
    assert message in error_line(capsys, ["sample", "--run", str(coded_run), "--code", code, "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_code_on_a_generator_without_codes_is_one_line(tmp_path, capsys):
    run = tmp_path / "plain"
    Trainer(TrainConfig(data="fake", image_size=16, ngf=4, ndf=4, batch_size=8, max_steps=1, out=str(run), progress=False), log=lambda m: None).fit()
    line = error_line(capsys, ["sample", "--run", str(run), "--code", "1", "--out", str(tmp_path / "x.png")])
    assert "this generator has none (train with --info-codes)" in line


def test_info_codes_0_means_none_so_a_presets_codes_can_be_dropped():
    config = TrainConfig(info_codes="0", nz=4, image_size=16, channels=1, ngf=4, ndf=4)  # nz 4 would be too small for codes
    assert config.model().info_codes == ()
    assert build_models(config.model())[1].code_head is None


def test_stats_log_the_code_loss_beside_the_adversarial_figures(coded_run, tmp_path):
    from dcgan.report import TRAINING_KEYS

    rows = [json.loads(line) for line in (coded_run / "stats.jsonl").read_text().splitlines()]
    chance = np.log(3) + np.log(2)  # two codes of 3 and 2 categories, their cross-entropies summed
    assert rows and all(0 < row["loss_codes"] < 2 * chance for row in rows)
    assert "loss_codes" in TRAINING_KEYS  # a training figure, not an evaluation metric, for the HTML report
    plain = tmp_path / "plain"
    Trainer(TrainConfig(data="fake", image_size=16, ngf=4, ndf=4, batch_size=8, max_steps=1, out=str(plain), progress=False), log=lambda m: None).fit()
    assert "loss_codes" not in json.loads((plain / "stats.jsonl").read_text().splitlines()[0])


def test_channel_codes_shuffle_each_fakes_channels_and_its_codes_together():
    torch.manual_seed(0)
    codes = torch.randint(0, 10, (64, 3))
    fake = codes.float().view(64, 3, 1, 1).expand(64, 3, 4, 4).contiguous()  # channel c shows code c
    shuffled, shuffled_codes = shuffle_channels(fake, codes)
    assert torch.equal(shuffled, shuffled_codes.float().view(64, 3, 1, 1).expand(64, 3, 4, 4))  # still together
    assert torch.equal(shuffled_codes.sort(1).values, codes.sort(1).values)  # each fake's own codes, reordered
    assert 0.6 < (shuffled_codes != codes).any(1).float().mean() < 0.95  # 5 of the 6 orders move something


def test_the_shuffle_sends_the_gradient_back_to_the_channel_it_took():
    fake = torch.arange(3.0).view(1, 3, 1, 1).repeat(32, 1, 4, 4).requires_grad_(True)  # channel c is all c
    shuffled, places = shuffle_channels(fake, torch.arange(3).repeat(32, 1))  # places[b, j]: the channel at place j
    (shuffled[:, 0].sum() + 2 * shuffled[:, 1].sum()).backward()  # place j weighs (1, 2, 0)[j]
    for b in range(32):
        assert [fake.grad[b, places[b, j], 0, 0].item() for j in range(3)] == [1.0, 2.0, 0.0]


def test_with_channel_codes_d_judges_the_fakes_as_drawn_and_reads_the_codes_from_a_shuffled_pass():
    from dcgan.step import _judge_fake

    torch.manual_seed(0)
    generator, discriminator = build_models(ModelConfig(image_size=16, channels=3, nz=12, ngf=4, ndf=4, info_codes=(3, 3, 3)))
    discriminator.eval()  # BatchNorm from running statistics: each pass the same whatever else is in it
    optimizers = [torch.optim.Adam(m.parameters()) for m in (generator, discriminator)]
    state = GanState(generator, discriminator, *optimizers, info_codes=(3, 3, 3), channel_codes=True)
    z = torch.randn(16, 12, 1, 1, generator=torch.Generator().manual_seed(1))
    fake, codes = generator(z).detach(), codes_of(state, z)
    torch.manual_seed(5)
    logits, loss = _judge_fake(state, fake, codes)
    torch.manual_seed(5)
    shuffled, shuffled_codes = shuffle_channels(fake, codes)
    assert torch.equal(logits, discriminator(fake))
    assert torch.allclose(loss, code_loss(discriminator(shuffled, with_codes=True)[1], shuffled_codes, (3, 3, 3)))
    assert not torch.allclose(loss, code_loss(discriminator(fake, with_codes=True)[1], codes, (3, 3, 3)))


def test_channel_codes_train_with_the_shuffled_targets(tmp_path):
    config = TrainConfig(data="fake", image_size=16, nz=12, ngf=4, ndf=4, batch_size=8, max_steps=2, info_codes="3,3,3",
                         channel_codes=True, out=str(tmp_path / "run"), progress=False)  # fmt: skip
    trainer = Trainer(config, log=lambda m: None)
    assert trainer.state.channel_codes and trainer.state.info_codes == (3, 3, 3)
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert rows and all(0 < row["loss_codes"] < 3 * 2 * np.log(3) for row in rows)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "stacked-mnist", "--info-codes", "10,10"], "channel_codes gives each of the 3 image channel(s) one code"),
        (["--data", "stacked-mnist", "--info-codes", "10,10,5"], "needs 3 code(s) of one category count (10,10,10), not 10,10,5"),
        (["--data", "fake", "--channels", "1", "--info-codes", "3,3"], "drop --channel-codes (--no-channel-codes)"),
    ],
)
def test_channel_codes_that_do_not_match_the_channels_are_one_line_and_make_no_folder(tmp_path, capsys, argv, message):
    tiny = ["--image-size", "16", "--nz", "40", "--ngf", "4", "--ndf", "4", "--batch-size", "8", "--max-steps", "1", "--no-progress"]
    assert message in error_line(capsys, ["train", *tiny, *argv, "--channel-codes", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
