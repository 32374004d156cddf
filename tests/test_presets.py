"""`dcgan train --preset NAME`: preset < --config file < flags; the tutorial preset is the tutorial."""

import json

import pytest

from conftest import error_line
from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.presets import PRESETS


def _resolved(capsys, argv) -> dict:
    assert main(["train", *argv, "--print-config", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_tutorial_preset_is_the_tutorial(capsys):
    config = _resolved(capsys, ["--preset", "tutorial"])
    tutorial = {
        "image_size": 64, "ngf": 64, "ndf": 64, "nz": 100, "batch_size": 128, "epochs": 5, "lr": 2e-4, "beta1": 0.5,
        "beta2": 0.999, "loss": "bce", "spectral_norm": False, "pack": 1, "diffaug": None, "r1": 0.0, "ema_decay": None,
        "precision": "fp32", "preset": "tutorial",
    }  # fmt: skip
    assert {key: config[key] for key in tutorial} == tutorial


def test_every_preset_names_real_fields_and_builds_a_config():
    fields = set(TrainConfig().to_dict())
    for name, values in PRESETS.items():
        assert set(values) <= fields, name
        TrainConfig(**values)  # valid on its own


def test_flags_override_the_config_file_which_overrides_the_preset(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("ngf = 16\nndf = 16\n")
    config = _resolved(capsys, ["--preset", "tutorial", "--config", str(path), "--ndf", "8"])
    assert (config["ngf"], config["ndf"], config["batch_size"]) == (16, 8, 128)


def test_a_preset_named_in_the_config_file_applies(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('preset = "stable"\n')
    config = _resolved(capsys, ["--config", str(path)])
    assert {key: config[key] for key in PRESETS["stable"]} == PRESETS["stable"]


def test_unknown_preset_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line usage error
        main(["train", "--preset", "fast"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err
    path = tmp_path / "run.toml"
    path.write_text('preset = "fast"\n')
    assert "unknown preset 'fast'" in error_line(capsys, ["train", "--config", str(path)])


def test_a_run_says_which_preset_and_stabilisers_it_trains_with(tmp_path, capsys):
    tiny = ["--data", "fake", "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--no-progress"]
    argv = ["train", "--preset", "stable", *tiny, "--batch-size", "16", "--max-steps", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert "training: preset stable, lr 0.0004, loss bce, DiffAugment translation, R1 1 every 16 steps\n" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["preset"], config["batch_size"], config["diffaug"], config["r1"]) == ("stable", 16, "translation", 1.0)
