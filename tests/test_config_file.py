"""`dcgan train --config FILE.toml` and `--print-config`: file < flags, one line for every mistake."""

import json

import pytest

from conftest import error_line
from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.config_file import format_config, load_config_file
from dcgan.errors import DcganError


def _write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_keys_with_dashes_or_underscores_and_types(tmp_path):
    path = _write(tmp_path, 'data = "digits"\nimage-size = 16\nbatch_size = 32\nlr = 1\nprogress = false\n')
    values = load_config_file(path)
    assert values == {"data": "digits", "image_size": 16, "batch_size": 32, "lr": 1.0, "progress": False}
    assert isinstance(values["lr"], float)  # TOML's integer 1 where a float is meant
    assert TrainConfig(**values).lr == 1.0


@pytest.mark.parametrize("text", ["info-codes = 10", "info-codes = [10, 3]", 'info-codes = "10,3"', "info_codes = 0"])
def test_info_codes_as_a_number_a_list_or_the_flags_text(tmp_path, text):
    value = load_config_file(_write(tmp_path, text))["info_codes"]
    expected = text.split("=")[1].strip().strip('"[]').replace(", ", ",")
    assert value == expected and TrainConfig(info_codes=value, nz=16, image_size=16, channels=1, ngf=4, ndf=4).model().info_codes == tuple(int(k) for k in expected.split(",") if k != "0")


@pytest.mark.parametrize(
    "text, message",
    [
        ("batch_sise = 3", "unknown key 'batch_sise'; did you mean batch_size?"),
        ("zzz = 3", "unknown key 'zzz'; valid keys are the options of dcgan train: data, image_size"),
        ('batch_size = "64"', "batch_size must be an integer, not str '64'"),
        ("keep = true", "keep must be an integer, not bool True"),
        ("progress = 1", "progress must be true or false, not int 1"),
        ("lr = 'fast'", "lr must be a number, not str 'fast'"),
        ("data = 3", "data must be a string, not int 3"),
        ("image_size = 16\nimage-size = 32", "image_size is given twice"),
        ("[train]\nlr = 0.1", "unknown key 'train'"),
        ("lr = ", "is not valid TOML"),
        ("info-codes = [10, 'a']", "info-codes must be categories per code, as 10, [10, 10] or \"10,10\", not [10, 'a']"),
        ("info-codes = 1.5", "info-codes must be a string, not float 1.5"),
    ],
)
def test_mistakes_in_the_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(DcganError) as caught:
        load_config_file(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_missing_file_and_bad_values_are_one_line_at_the_cli(tmp_path, capsys):
    assert "config file not found" in error_line(capsys, ["train", "--config", str(tmp_path / "none.toml")])
    path = _write(tmp_path, "epochs = 0\n")
    assert "epochs must be at least 1" in error_line(capsys, ["train", "--config", str(path), "--print-config"])
    path = _write(tmp_path, "nz = 8.5\n")
    assert "nz must be an integer" in error_line(capsys, ["train", "--config", str(path)])


def test_flags_override_the_file_and_defaults_do_not(tmp_path, capsys):
    path = _write(tmp_path, 'data = "digits"\nbatch-size = 32\nlr = 0.001\nbeta2 = 0.99\n')
    assert main(["train", "--config", str(path), "--batch-size", "16", "--print-config", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["batch_size"] == 16  # the flag
    assert printed["lr"] == 0.001 and printed["beta2"] == 0.99 and printed["data"] == "digits"  # the file, not argparse's None
    assert printed["seed"] == TrainConfig().seed  # neither: the default


def test_printed_toml_loads_back_to_the_same_config(tmp_path, capsys):
    assert main(["train", "--data", "fake", "--image-size", "16", "--lr", "1e-5", "--out", 'a "quoted" \\ path', "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "lr = 1e-05" in text and "# epochs is unset" in text
    expected = TrainConfig(data="fake", image_size=16, lr=1e-5, out='a "quoted" \\ path')
    assert TrainConfig(**load_config_file(_write(tmp_path, text))) == expected
    assert format_config(expected) == text.rstrip("\n")


def test_print_config_with_resume_is_refused(tmp_path, capsys):
    assert "a resumed run's is" in error_line(capsys, ["train", "--resume", str(tmp_path), "--print-config"])


def test_a_run_from_a_config_file(tmp_path):
    run = tmp_path / "run"
    path = _write(tmp_path, f'data = "fake"\nimage-size = 16\nnz = 8\nngf = 4\nndf = 4\nbatch-size = 64\nprogress = false\nout = "{run}"\n')
    assert main(["train", "--config", str(path), "--max-steps", "2"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["image_size"] == 16 and saved["ngf"] == 4 and saved["max_steps"] == 2


def test_whole_numbers_for_float_fields_are_stored_as_floats():
    # TrainConfig(beta1=0) from Python: Adam refuses betas of mixed types (0, 0.99) with a traceback
    import torch

    from dcgan.precision import adam

    config = TrainConfig(beta1=0, beta2=0.99, lr=1, r1=2)
    assert (type(config.beta1), type(config.lr), type(config.r1)) == (float, float, float)
    assert config.beta1 == 0.0 and config.lr == 1.0 and config.r1 == 2.0
    assert type(config.batch_size) is int and config.ema_decay is None  # ints and None stay as they are
    optimizer = adam([torch.nn.Parameter(torch.zeros(2))], config.lr, (config.beta1, config.beta2))
    assert optimizer.defaults["betas"] == (0.0, 0.99)
