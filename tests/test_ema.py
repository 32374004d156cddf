"""--ema-decay: an exponential moving average of G's weights draws the samples; the steps are unchanged."""

import json

import pytest
import torch

from dcgan import checkpoint as ckpt
from dcgan.config import TrainConfig
from dcgan.errors import DcganError
from dcgan.sample import load_generator
from dcgan.train import Trainer, ema_decay_at

TINY = dict(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=32, n_fixed=8, log_every=2, progress=False, device="cpu")
QUIET = dict(log=lambda message: None)


def _rows(run):
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (run / "stats.jsonl").read_text().splitlines()]


def test_the_average_follows_the_formula_and_leaves_training_alone(tmp_path):
    decay = 0.9
    ema_run = Trainer(TrainConfig(**TINY, out=str(tmp_path / "ema"), max_steps=2, ema_decay=decay), **QUIET).fit()
    plain_run = Trainer(TrainConfig(**TINY, out=str(tmp_path / "plain"), max_steps=2), **QUIET).fit()
    assert _rows(ema_run) == _rows(plain_run)  # the D and G steps never read the average
    start = ckpt.read_file(ema_run / "checkpoints" / "step_00000000.pt")["generator"]
    final = ckpt.read_file(ema_run / "checkpoints" / "final.pt")
    after_one = Trainer(TrainConfig(**TINY, out=str(tmp_path / "one"), max_steps=1), **QUIET).fit()
    g1 = ckpt.read_file(after_one / "checkpoints" / "final.pt")["generator"]
    g2 = final["generator"]
    name = "main.0.weight"
    # ema_1 = d start + (1-d) g1; ema_2 = d ema_1 + (1-d) g2
    expected = decay * (decay * start[name] + (1 - decay) * g1[name]) + (1 - decay) * g2[name]
    torch.testing.assert_close(final["generator_ema"][name], expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(final["generator_ema"]["main.1.running_mean"], g2["main.1.running_mean"])  # statistics copied


def test_samples_come_from_the_average_and_resume_keeps_it(tmp_path):
    whole = Trainer(TrainConfig(**TINY, out=str(tmp_path / "whole"), max_steps=6, ema_decay=0.5), **QUIET).fit()
    part = Trainer(TrainConfig(**TINY, out=str(tmp_path / "part"), max_steps=3, ema_decay=0.5), **QUIET).fit()
    Trainer.resume(part, max_steps=6, **QUIET).fit()
    a, b = ckpt.read_file(whole / "checkpoints" / "final.pt"), ckpt.read_file(part / "checkpoints" / "final.pt")
    assert all(torch.equal(a["generator_ema"][k], b["generator_ema"][k]) for k in a["generator_ema"])
    sampler = load_generator(whole)
    assert all(torch.equal(v, a["generator_ema"][k]) for k, v in sampler.state_dict().items())
    assert not torch.equal(a["generator_ema"]["main.0.weight"], a["generator"]["main.0.weight"])


def test_the_ramp_up_caps_the_half_life_early_and_resume_keeps_it(tmp_path):
    config = TrainConfig(ema_decay=0.99, ema_rampup=0.1)
    assert ema_decay_at(config, 1) == 0.5  # half-life of one step: the average mostly forgets the untrained weights
    assert ema_decay_at(config, 300) == pytest.approx(0.5 ** (1 / 30))  # half-life 10% of the steps so far
    assert ema_decay_at(config, 100_000) == 0.99  # then the decay asked for (half-life 69 steps)
    assert ema_decay_at(TrainConfig(ema_decay=0.99), 1) == 0.99  # without the ramp-up, from the first step
    ramp = dict(TINY, ema_decay=0.9, ema_rampup=0.5)
    whole = Trainer(TrainConfig(**ramp, out=str(tmp_path / "whole"), max_steps=4), **QUIET).fit()
    part = Trainer(TrainConfig(**ramp, out=str(tmp_path / "part"), max_steps=2), **QUIET).fit()
    Trainer.resume(part, max_steps=4, **QUIET).fit()
    a, b = ckpt.read_file(whole / "checkpoints" / "final.pt"), ckpt.read_file(part / "checkpoints" / "final.pt")
    assert all(torch.equal(a["generator_ema"][k], b["generator_ema"][k]) for k in a["generator_ema"])
    # decays 0.5, 0.5, 0.5 ** (1 / 1.5), 0.5 ** (1 / 2): the first steps weigh far more than with 0.9 throughout
    plain = Trainer(TrainConfig(**TINY, out=str(tmp_path / "plain"), max_steps=4, ema_decay=0.9), **QUIET).fit()
    start = ckpt.read_file(whole / "checkpoints" / "step_00000000.pt")["generator"]["main.0.weight"]
    moved = lambda run: (ckpt.read_file(run / "checkpoints" / "final.pt")["generator_ema"]["main.0.weight"] - start).norm()
    assert moved(whole) > 2 * moved(plain)


def test_a_decay_of_zero_drops_the_ema_a_preset_sets(tmp_path, capsys):
    from dcgan.cli import main

    tiny = ["--data", "fake", "--image-size", "16", "--nz", "40", "--ngf", "4", "--ndf", "4", "--batch-size", "16", "--no-progress"]
    assert main(["train", "--preset", "stable", *tiny, "--max-steps", "1", "--ema-decay", "0", "--out", str(tmp_path / "run")]) == 0
    assert "EMA" not in capsys.readouterr().out
    assert "generator_ema" not in ckpt.read_file(tmp_path / "run" / "checkpoints" / "final.pt")


def test_a_decay_outside_zero_one_is_refused():
    with pytest.raises(DcganError, match=r"ema_decay must lie between 0 \(no EMA\) and 1, not 1.0"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(DcganError, match="ema_decay must lie between 0"):
        TrainConfig(ema_decay=-0.5)
    with pytest.raises(DcganError, match="ema_rampup must be a positive number"):
        TrainConfig(ema_decay=0.9, ema_rampup=0.0)
    with pytest.raises(DcganError, match="ema_rampup shapes the EMA of G: it needs ema_decay too"):
        TrainConfig(ema_rampup=0.1)
