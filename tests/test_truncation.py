"""--truncation: grids, samples and evaluations drawn from scaled z; training itself untouched."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import error_line

from dcgan.checkpoint import read_file, save_atomic
from dcgan.classifier import CLASSIFIER_VERSION, load_classifier, predict, train_classifier
from dcgan.cli import main
from dcgan.config import TrainConfig
from dcgan.errors import DcganError
from dcgan.models import code_targets
from dcgan.presets import preset_options
from dcgan.sample import generate, latent, load_generator, truncate
from dcgan.sources import load_mnist_digits
from dcgan.train import Trainer

TINY = dict(image_size=16, nz=8, ngf=4, ndf=4, batch_size=64, max_steps=3, n_fixed=8, progress=False)


def _train(out: Path, **changes) -> Path:
    return Trainer(TrainConfig(**{"data": "fake", **TINY, "out": str(out), **changes}), log=lambda m: None).fit()


def test_truncation_scales_z_and_keeps_every_code_category():
    z = latent(500, 20, seed=3)
    assert truncate(z, 1.0) is z  # no truncation: bit for bit the draws of before
    torch.testing.assert_close(truncate(z, 0.5), z * 0.5, rtol=0, atol=0)
    assert torch.equal(code_targets(truncate(z, 0.3), [4, 6]), code_targets(z, [4, 6]))


def test_training_does_not_depend_on_the_truncation_but_the_grids_do(tmp_path):
    plain, truncated = _train(tmp_path / "a"), _train(tmp_path / "b", truncation=0.3)
    a, b = read_file(plain / "checkpoints" / "final.pt"), read_file(truncated / "checkpoints" / "final.pt")
    for network in ("generator", "discriminator"):
        assert all(torch.equal(v, b[network][k]) for k, v in a[network].items())
    rows = [(run / "stats.jsonl").read_text().splitlines() for run in (plain, truncated)]
    losses = [[json.loads(line).get("loss_d") for line in lines] for lines in rows]
    assert losses[0] == losses[1] and any(value is not None for value in losses[0])
    grids = [(run / "samples" / sorted(os.listdir(run / "samples"))[-1]).read_bytes() for run in (plain, truncated)]
    assert grids[0] != grids[1]
    figures = [(run / "real_vs_fake.png").read_bytes() for run in (plain, truncated)]
    assert figures[0] != figures[1]
    assert json.loads((truncated / "config.json").read_text())["truncation"] == 0.3


def test_sample_draws_with_the_runs_truncation_unless_told(tmp_path):
    run = _train(tmp_path / "run", truncation=0.5)
    generator = load_generator(run)
    z = latent(6, 8, seed=0)
    as_run, untruncated = generate(generator, z * 0.5), generate(generator, z)
    assert not np.array_equal(as_run, untruncated)
    for argv, expected in (
        (["--run", str(run)], as_run),
        (["--checkpoint", str(run / "checkpoints" / "final.pt")], as_run),  # a checkpoint carries its run's setting
        (["--run", str(run), "--truncation", "1"], untruncated),
    ):
        out = tmp_path / f"{len(argv)}-{argv[0]}.npz"
        assert main(["sample", *argv, "--n", "6", "--out", str(out)]) == 0
        np.testing.assert_array_equal(np.load(out)["images"], expected)
    walk = tmp_path / "walk.png"
    assert main(["sample", "--run", str(run), "--n", "1", "--interpolate", "2", "--out", str(walk)]) == 0
    walk_all = tmp_path / "all.png"
    assert main(["sample", "--run", str(run), "--n", "1", "--interpolate", "2", "--truncation", "1", "--out", str(walk_all)]) == 0
    assert walk.read_bytes() != walk_all.read_bytes()


def test_runs_without_the_setting_draw_from_all_of_g_and_a_bad_one_is_one_line(tmp_path, capsys):
    run = _train(tmp_path / "run", truncation=0.5)
    final = run / "checkpoints" / "final.pt"
    payload = read_file(final)
    del payload["config"]["truncation"]  # a checkpoint of a run made before the option existed
    save_atomic(payload, final)
    out = tmp_path / "old.npz"
    assert main(["sample", "--run", str(run), "--n", "4", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["images"], generate(load_generator(run), latent(4, 8, 0)))
    payload["config"]["truncation"] = "high"
    save_atomic(payload, final)
    assert "truncation" in error_line(capsys, ["sample", "--run", str(run), "--out", str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()


def test_evaluation_during_training_draws_with_the_runs_truncation(tmp_path, monkeypatch):
    import dcgan.training_eval

    images, labels = load_mnist_digits()
    cache = Path(os.environ["DCGAN_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    quick = train_classifier(images[:300], labels[:300], epochs=1)  # stands in for the cached one: wiring, not accuracy
    save_atomic(quick.state_dict(), cache / f"digit-classifier-v{CLASSIFIER_VERSION}.pt")
    asked = []
    score_generator = dcgan.training_eval.score_generator

    def recording(*args, **kwargs):
        asked.append(kwargs["truncation"])
        return score_generator(*args, **kwargs)

    monkeypatch.setattr(dcgan.training_eval, "score_generator", recording)
    run = _train(tmp_path / "run", data="digits", channels=1, truncation=0.3, eval_every=1, eval_n=20)
    rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert asked and set(asked) == {0.3} and [row["truncation"] for row in rows] == asked


def test_eval_scores_with_the_runs_truncation_and_the_row_says_which(tmp_path, capsys, monkeypatch):
    import dcgan.evaluate

    scored = []  # the images each evaluation hands to the classifier
    score_images = dcgan.evaluate.score_images
    def recording(images, *rest):
        scored.append(images)
        return score_images(images, *rest)

    monkeypatch.setattr(dcgan.evaluate, "score_images", recording)
    images, labels = load_mnist_digits()
    quick = train_classifier(images[:300], labels[:300], epochs=1)  # stands in for the cached one: wiring, not accuracy
    cache = Path(os.environ["DCGAN_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    save_atomic(quick.state_dict(), cache / f"digit-classifier-v{CLASSIFIER_VERSION}.pt")
    run = _train(tmp_path / "run", data="digits", channels=1, truncation=0.4)
    assert main(["eval", "--run", str(run), "--n", "300"]) == 0
    assert main(["eval", "--run", str(run), "--n", "300", "--truncation", "1"]) == 0
    assert "truncation 0.4" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [row["truncation"] for row in rows] == [0.4, 1.0]
    generator, classifier = load_generator(run), load_classifier()
    drawn = [generate(generator, latent(300, 8, 0) * scale) for scale in (0.4, 1.0)]
    assert not np.array_equal(*drawn)
    assert len(scored) == len(rows) == len(drawn)
    for row, images, seen in zip(rows, drawn, scored):
        np.testing.assert_array_equal(seen, images)
        classes, confidences = predict(classifier, images[..., 0])
        assert row["class_histogram"] == np.bincount(classes, minlength=10).tolist()
        assert row["confident"] == float((confidences > 0.9).mean())


@pytest.mark.parametrize("value", ["0", "1.5", "-0.5", "nan"])
def test_a_truncation_outside_0_to_1_is_one_line(tmp_path, capsys, value):
    run = _train(tmp_path / "run")
    for argv in (
        ["train", "--data", "fake", "--max-steps", "1", "--truncation", value, "--out", str(tmp_path / "new")],
        ["sample", "--run", str(run), "--out", str(tmp_path / "x.png"), "--truncation", value],
        ["eval", "--run", str(run), "--truncation", value],
    ):
        assert "truncation" in error_line(capsys, argv)
    assert not (tmp_path / "new").exists() and not (tmp_path / "x.png").exists()
    with pytest.raises(DcganError, match="truncation"):
        TrainConfig(truncation=0)


def test_stable_draws_truncated_and_the_tutorial_does_not():
    assert preset_options("stable", "mnist")["truncation"] == 0.8
    assert preset_options("tutorial")["truncation"] == 1.0 and TrainConfig().truncation == 1.0
