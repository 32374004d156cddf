"""The stabiliser flags end to end: each trains, passes --check-isolation, resumes bitwise; bad values are one line."""

import json

import pytest
import torch

from conftest import error_line
from dcgan import checkpoint as ckpt
from dcgan.config import TrainConfig
from dcgan.config_file import load_config_file
from dcgan.errors import DcganError
from dcgan.train import Trainer

# fake data: 512 images, batch 8; widths 8 at 16x16
TINY = dict(data="fake", image_size=16, nz=8, ngf=8, ndf=8, batch_size=8, n_fixed=8, log_every=1, progress=False, device="cpu")
QUIET = dict(log=lambda message: None)
FLAGS = {
    "hinge": {"loss": "hinge"},
    "ls": {"loss": "ls"},
    "spectral_norm": {"spectral_norm": True},
    "pack": {"pack": 2},
    "diffaug": {"diffaug": "color,translation,cutout"},
    "r1": {"r1": 1.0, "r1_every": 2},  # R1 on steps 2 and 4: one before the stop, one after the resume
    "info_codes": {"info_codes": "3,2", "info_weight": 0.5},  # the last 5 of z's 8 numbers pick the categories
    "channel_codes": {"info_codes": "2,2,2", "channel_codes": True, "nz": 10},  # fake images have 3 channels: a code each
}


def _fit(tmp_path, name, **changes):
    return Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / name), "check_isolation": 1, **changes}), **QUIET).fit()


def _rows(run):
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in (run / "stats.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_each_flag_trains_checked_and_resumes_bitwise(tmp_path, flag):
    whole = _fit(tmp_path, "whole", max_steps=4, **FLAGS[flag])  # --check-isolation 1: every step verified
    part = _fit(tmp_path, "part", max_steps=2, **FLAGS[flag])
    resumed = Trainer.resume(part, max_steps=4, **QUIET).fit()
    assert _rows(resumed) == _rows(whole) and len(_rows(whole)) == 4
    a, b = ckpt.read_file(whole / "checkpoints" / "final.pt"), ckpt.read_file(resumed / "checkpoints" / "final.pt")
    for key in ("generator", "discriminator"):  # spectral norm's u, v buffers included
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    for key in ("optimizer_g", "optimizer_d"):
        for slot_a, slot_b in zip(a[key]["state"].values(), b[key]["state"].values()):
            assert all(torch.equal(slot_a[k], slot_b[k]) for k in slot_a)


def test_r1_trains_with_fp16_loss_scaling(tmp_path):
    config = TrainConfig(**{**TINY, "out": str(tmp_path / "run"), "max_steps": 2, "r1": 1.0, "r1_every": 1, "precision": "fp16"})
    run = Trainer(config, **QUIET).fit()
    assert all(all(v == v for v in row.values()) for row in _rows(run))  # finite figures, no NaN


def test_a_checkpoint_from_before_the_stabilisers_resumes(tmp_path):
    trainer = Trainer(TrainConfig(**{**TINY, "out": str(tmp_path / "run")}), **QUIET)
    payload = trainer.state_dict()
    for key in ("spectral_norm", "pack", "info_codes"):  # what a checkpoint written before these options holds
        del payload["model"][key]
    trainer.load_state(payload)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pack", "0"], "pack must be at least 1, not 0"),
        (["--pack", "3", "--batch-size", "8"], "batch_size 8 is not a multiple of pack 3"),
        (["--diffaug", "color,blur"], "unknown DiffAugment policy 'blur'"),
        (["--r1", "-1"], "r1 (gamma) must be 0 (off) or a positive number, not -1.0"),
        (["--r1-every", "0"], "r1_every must be at least 1, not 0"),
        (["--r1", "1", "--compile"], "r1 needs the gradient of a gradient, which torch.compile does not support"),
        (["--info-codes", "10,1"], "info_codes '10,1' must be category counts of at least 2"),
        (["--info-codes", "ten"], "info_codes 'ten' must be category counts of at least 2"),
        (["--info-codes", "10", "--nz", "10"], "info codes 10 take the last 10 numbers of z, so nz (10) must be larger"),
        (["--info-codes", "10", "--pack", "2"], "info codes need one D output per image, and pack gives one per group"),
        (["--info-codes", "10", "--info-weight", "0"], "info_weight must be a positive number, not 0.0"),
        (["--info-codes", "10", "--nz", "10"], "(no codes: --info-codes 0; --preset stable, the default on mnist and stacked-mnist, sets 30 and 20,20,20)"),
    ],
)
def test_bad_values_are_one_line_and_status_2(capsys, tmp_path, flags, message):
    assert message in error_line(capsys, ["train", "--data", "fake", "--out", str(tmp_path / "run"), *flags])
    assert not (tmp_path / "run").exists()


def test_an_unknown_loss_is_an_argparse_line_and_status_2(capsys):
    from dcgan.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["train", "--loss", "wgan"])
    err = capsys.readouterr().err.strip()
    assert caught.value.code == 2 and len(err.splitlines()) == 1 and "argument --loss: invalid choice: 'wgan'" in err
    with pytest.raises(DcganError, match="unknown loss 'wgan': use bce, hinge, ls"):  # the same word from a config file
        TrainConfig(loss="wgan")


def test_the_flags_come_from_a_config_file_too(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('loss = "hinge"\nspectral-norm = true\npack = 2\ndiffaug = "translation"\nr1 = 1\nr1-every = 4\n')
    config = TrainConfig(**load_config_file(path))
    got = (config.loss, config.spectral_norm, config.pack, config.diffaug, config.r1, config.r1_every)
    assert got == ("hinge", True, 2, "translation", 1.0, 4)
    path.write_text('info-codes = "10,10"\ninfo-weight = 2\n')
    config = TrainConfig(**load_config_file(path))
    assert (config.info_codes, config.info_weight) == ("10,10", 2.0)


def test_r1_through_synchronised_batchnorm_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    from dcgan import distributed

    # as rank 0 of 2 under torchrun: the refusal comes before any collective, so no process group is needed
    monkeypatch.setattr(distributed, "current", lambda: distributed.Processes(rank=0, world_size=2, local_rank=0))
    with pytest.raises(DcganError, match=r"--r1 cannot pass through D's BatchNorm.*--r1 0; --preset stable, the default on mnist and stacked-mnist, sets 1"):
        Trainer(TrainConfig(data="fake", r1=1.0, sync_bn=True, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()
