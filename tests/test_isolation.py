"""--check-isolation: the check passes on the real step, changes nothing, and catches a broken one."""

import json

import pytest
import torch

import dcgan.isolation
from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.isolation import IsolationBroken
from dcgan.losses import _bce
from dcgan.train import Trainer

TINY = dict(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=32, n_fixed=8, log_every=2, progress=False, device="cpu")


def _rows(run):
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (run / "stats.jsonl").read_text().splitlines()]


def test_checking_every_step_passes_and_changes_nothing(tmp_path):
    checked = Trainer(TrainConfig(**TINY, out=str(tmp_path / "checked"), max_steps=5, check_isolation=1), log=lambda m: None).fit()
    plain = Trainer(TrainConfig(**TINY, out=str(tmp_path / "plain"), max_steps=5), log=lambda m: None).fit()
    assert _rows(checked) == _rows(plain)


def _undetached_d_step(state, real, z, r1_gamma=0.0):
    """The tutorial's D step with the detach forgotten: its backward reaches G."""
    D = state.discriminator
    D.zero_grad(set_to_none=True)
    _bce(D(real), 1.0).backward()
    fake = state.generator(z)
    loss_fake = _bce(D(fake), 0.0)
    loss_fake.backward(retain_graph=True)
    state.optimizer_d.step()
    return fake, torch.zeros(3)


def _g_step_that_moves_d(state, fake, codes=None):
    figures = dcgan.step.generator_step(state, fake, codes)
    state.optimizer_d.step()  # a bug: D's stale gradients move D during the G step
    return figures


@pytest.mark.parametrize(
    "target, broken, message",
    [
        ("discriminator_step", _undetached_d_step, "the D step changed G's gradient of main.0.weight \\(is fake detached\\?\\)"),
        ("generator_step", _g_step_that_moves_d, "the G step changed D's parameter main.0.weight"),
    ],
)
def test_a_broken_step_is_stopped_loudly(tmp_path, monkeypatch, capsys, target, broken, message):
    monkeypatch.setattr(dcgan.isolation, target, broken)
    config = TrainConfig(**TINY, out=str(tmp_path / "run"), max_steps=6, check_isolation=3)
    with pytest.raises(IsolationBroken, match="isolation check failed at step 3: " + message):
        Trainer(config, log=lambda m: None).fit()
    argv = ["train", "--data", "fake", "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--device", "cpu",
            "--no-progress", "--max-steps", "4", "--check-isolation", "2", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert main(argv) == 2
    assert "isolation check failed at step 2" in capsys.readouterr().err
