"""The command line: one line and exit status 2 for every user mistake; the happy paths work."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import error_line
from dcgan.cli import main

TINY = ["--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "64", "--no-progress"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "celeba"], "unknown data source 'celeba'"),
        (["train", "--data", "no/such/folder"], "data path not found: no/such/folder"),
        (["train", "--data", "fake", "--image-size", "48"], "image size 48 is not supported: choose one of 16, 32, 64, 128, 256"),
        (["train", "--data", "fake", "--image-size", "512"], "choose one of 16, 32, 64, 128, 256"),
        (["train", "--data", "fake", "--channels", "4"], "channels must be 1"),
        (["train", "--data", "fake", "--batch-size", "9999", "--image-size", "16"], "larger than the data set"),
        (["train", "--data", "fake", "--epochs", "0"], "epochs must be at least 1"),
        (["sample", "--run", "nowhere", "--out", "x.png"], "run folder not found"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(capsys, argv, message):
    assert message in error_line(capsys, argv)


def test_empty_and_undecodable_folders(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no image files" in error_line(capsys, ["train", "--data", str(tmp_path / "empty")])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"garbage")
    assert "could be decoded" in error_line(capsys, ["train", "--data", str(tmp_path / "junk")])


def test_unwritable_output_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = error_line(capsys, ["train", "--data", "fake", "--out", str(tmp_path / "file" / "run")] + TINY)
    assert "cannot write to output folder" in err


def test_argparse_mistakes_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train", "--image-size", "big"])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid int value" in err


def test_train_then_sample_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "fake", "--max-steps", "3", "--out", str(run)] + TINY) == 0
    out = capsys.readouterr().out
    assert str(run) in out and "final.pt" in out
    assert main(["sample", "--run", str(run), "--n", "6", "--out", str(tmp_path / "a.npz"), "--seed", "3"]) == 0
    assert main(["sample", "--run", str(run), "--n", "6", "--out", str(tmp_path / "b.npz"), "--seed", "3"]) == 0
    a, b = np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"]
    assert a.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(a, b)


def test_python_dash_m_entry_point_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dcgan", "train", "--data", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"dcgan: error: data path not found: {tmp_path / 'missing'}"
