"""`dcgan train --eval-every K --eval-fid`: FID and KID during training, best.pt by them, training left as it was.

A random stand-in for pytorch-fid's weights file (test_inception's fixture) has the real layout. Inception
runs at 299x299 whatever the image size (a quarter of a second an image on one CPU thread), so every run
here scores 2 samples against 2 training images.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import error_line, random_images, write_png_folder
from dcgan import checkpoint as ckpt
from dcgan.classifier import CLASSIFIER_VERSION
from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.inception import WEIGHTS_NAME
from dcgan.run_files import read_config
from dcgan.train import Trainer
from test_eval_training import quick_classifier  # noqa: F401  (a fixture: a classifier trained in seconds)
from test_inception import weights_file  # noqa: F401  (a fixture: the random stand-in weights file)

SMALL = ["--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--no-progress", "--device", "cpu"]
COLOUR = ["--batch-size", "4", *SMALL]  # with `photos`: 12 images, 3 steps an epoch
FID_KEYS = {"eval_fid", "eval_kid", "eval_kid_std", "eval_n_real"}


@pytest.fixture(autouse=True)
def _one_thread(_isolated_cache):
    torch.set_num_threads(1)  # networks this small, and Inception on 2 images, run several times faster without threads waiting


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of 12 colour PNGs: a source with a fingerprint, so its images and features are cached like a real set's."""
    folder = tmp_path_factory.mktemp("data") / "photos"
    write_png_folder(folder, random_images(12, 16, 16, 3, seed=5))
    return folder


@pytest.fixture(scope="module")
def fid_run(tmp_path_factory, photos, weights_file) -> tuple[Path, str]:  # noqa: F811
    """A 9-step colour run through the CLI, evaluated with FID after each of its 3 epochs; and what it printed."""
    root = tmp_path_factory.mktemp("fid-run")
    run = root / "run"
    argv = ["train", "--data", str(photos), *COLOUR, "--max-steps", "9", "--out", str(run),
            "--eval-every", "1", "--eval-fid", "--eval-n", "2", "--inception-weights", str(weights_file)]  # fmt: skip
    printed = io.StringIO()
    # a module fixture is made before conftest's per-test cache and thread count: set both here
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("DCGAN_CACHE", str(root / "cache"))
        torch.set_num_threads(1)  # as _one_thread: the runs compared bit for bit with this one use the same
        assert main(argv) == 0
    return run, printed.getvalue()


def _rows(run: Path, name: str = "stats.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def test_a_colour_run_logs_fid_and_kid_and_keeps_the_lowest_fid_as_best(fid_run, weights_file):  # noqa: F811
    run, printed = fid_run
    evaluations = [r for r in _rows(run) if "eval_n" in r]
    assert [(r["step"], r["epoch"]) for r in evaluations] == [(3, 1), (6, 2), (9, 3)]
    for row in evaluations:
        assert set(row) == {"step", "epoch", "eval_n"} | FID_KEYS  # no classifier metric on colour data
        assert row["eval_n"] == 2 and row["eval_n_real"] == 2 and row["eval_fid"] > 0
    logged = _rows(run, "eval.jsonl")
    assert [r["fid"] for r in logged] == [r["eval_fid"] for r in evaluations]
    assert [r["kid"] for r in logged] == [r["eval_kid"] for r in evaluations]

    fids = [r["fid"] for r in logged]
    lowest = logged[fids.index(min(fids))]  # the first of equal ones
    best = ckpt.read_file(run / "checkpoints" / "best.pt")
    assert best["step"] == lowest["step"]
    assert best["best"] == {"metric": "fid", "value": min(fids), "step": lowest["step"], "epoch": lowest["epoch"], "n": 2}

    lines = [line for line in printed.splitlines() if line.startswith("evaluation at step")]
    assert len(lines) == 3 and all(" fid " in line and " kid " in line for line in lines)
    assert "new best fid" in lines[0]
    config = read_config(run)  # what --resume reads back
    assert (config.eval_fid, config.best_metric, config.eval_n) == (True, "fid", 2)
    assert config.inception_weights == str(weights_file.resolve())


def test_training_is_bitwise_the_same_with_or_without_fid(fid_run, photos, tmp_path):
    evaluated, _ = fid_run
    plain = tmp_path / "plain"
    assert main(["train", "--data", str(photos), *COLOUR, "--max-steps", "9", "--out", str(plain)]) == 0

    def training_rows(run):
        return [{k: v for k, v in r.items() if k != "time"} for r in _rows(run) if "loss_d" in r]

    assert len(training_rows(plain)) == 9 and training_rows(plain) == training_rows(evaluated)
    a, b = (ckpt.read_file(run / "checkpoints" / "final.pt") for run in (plain, evaluated))
    for key in ("generator", "discriminator"):  # BatchNorm's running statistics included
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # nor was torch's global stream drawn from
    assert torch.equal(a["rng"]["generators"]["noise"], b["rng"]["generators"]["noise"])


def test_a_missing_or_wrong_weights_file_stops_before_anything_is_made(photos, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(photos), *COLOUR, "--out", str(out), "--eval-every", "1", "--eval-fid"]
    missing = error_line(capsys, argv)  # nothing in $DCGAN_CACHE/inception/
    assert WEIGHTS_NAME in missing and str(Path(os.environ["DCGAN_CACHE"]) / "inception") in missing
    assert "--inception-weights" in missing
    assert "not found" in error_line(capsys, argv + ["--inception-weights", str(tmp_path / "nowhere.pth")])
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    assert "is not pytorch-fid's Inception weights" in error_line(capsys, argv + ["--inception-weights", str(wrong)])
    assert not out.exists() and not (Path(os.environ["DCGAN_CACHE"]) / "inception").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eval-fid"], "add eval_every (--eval-every K)"),
        (["--inception-weights", "weights.pth"], "add eval_every (--eval-every K)"),
        (["--eval-every", "1"], "colour data"),
        (["--eval-every", "1", "--eval-fid", "--best-metric", "confident"], "choose one of fid, kid"),
    ],
)
def test_bad_fid_options_are_one_line_before_anything_is_made(photos, tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    line = error_line(capsys, ["train", "--data", str(photos), *COLOUR, "--out", str(out), *argv])
    assert message in line and not out.exists()
    if argv == ["--eval-every", "1"]:
        assert "add --eval-fid" in line  # the flag of dcgan train, not dcgan eval's --fid


def test_best_metric_kid_and_resume_from_another_folder(photos, weights_file, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(weights_file.parent)  # the weights named by a relative path
    run = tmp_path / "run"
    config = TrainConfig(data=str(photos), image_size=16, nz=8, ngf=4, ndf=4, batch_size=4, progress=False, device="cpu",
                         max_steps=3, out=str(run), eval_every=1, eval_n=2, best_metric="kid", inception_weights=WEIGHTS_NAME)  # fmt: skip
    Trainer(config, log=lambda message: None).fit()
    assert read_config(run).eval_fid  # implied by the weights file
    (first,) = _rows(run, "eval.jsonl")
    assert ckpt.read_file(run / "checkpoints" / "best.pt")["best"] == {"metric": "kid", "value": first["kid"], "step": 3, "epoch": 1, "n": 2}

    monkeypatch.chdir(tmp_path)  # config.json holds the weights' absolute path
    messages = []
    Trainer.resume(run, log=messages.append, max_steps=6).fit()
    assert not any("computing Inception features of 2 training" in m for m in messages)  # cached by the first run
    assert [(r["step"], "fid" in r, "kid" in r) for r in _rows(run, "eval.jsonl")] == [(3, True, True), (6, True, True)]
    assert ckpt.read_file(run / "checkpoints" / "best.pt")["best"]["metric"] == "kid"


def test_a_digit_run_with_eval_fid_gets_the_classifier_metrics_and_fid(quick_classifier, weights_file, tmp_path):  # noqa: F811
    cache = Path(os.environ["DCGAN_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    ckpt.save_atomic(quick_classifier.state_dict(), cache / f"digit-classifier-v{CLASSIFIER_VERSION}.pt")
    run = tmp_path / "run"  # digits: 1,797 images in batches of 256, 7 steps an epoch
    argv = ["train", "--data", "digits", "--batch-size", "256", *SMALL, "--max-steps", "7", "--out", str(run),
            "--eval-every", "1", "--eval-fid", "--eval-n", "2", "--inception-weights", str(weights_file)]  # fmt: skip
    assert main(argv) == 0
    (row,) = [r for r in _rows(run) if "eval_n" in r]
    assert {"eval_classes_present", "eval_confident", "eval_kl_uniform"} | FID_KEYS <= set(row)
    assert ckpt.read_file(run / "checkpoints" / "best.pt")["best"]["metric"] == "confident"  # digits keep their default
