import itertools
import math

import numpy as np
import pytest

from dcgan.classifier import predict, train_classifier
from dcgan.evaluate import score_images
from dcgan.metrics import (
    digit_stats,
    frechet_distance,
    frechet_distance_of_features,
    kernel_inception_distance,
    kl_to_uniform,
    stacked_stats,
)
from dcgan.sources import load_mnist_digits


def test_kl_to_uniform_bounds():
    assert kl_to_uniform(np.full(10, 7)) == pytest.approx(0.0, abs=1e-12)
    assert kl_to_uniform(np.eye(10)[3] * 50) == pytest.approx(math.log(10))
    half = np.array([1, 1, 0, 0])
    assert kl_to_uniform(half) == pytest.approx(math.log(2))


def test_digit_and_stacked_stats_count_what_they_say():
    classes = np.array([0, 1, 1, 2, 9])
    stats = digit_stats(classes, np.array([0.95, 0.5, 0.99, 0.91, 0.2]))
    assert stats["classes_present"] == 4 and stats["confident"] == pytest.approx(0.6)
    assert stats["class_histogram"] == [1, 2, 1, 0, 0, 0, 0, 0, 0, 1]
    channel_classes = np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0], [9, 9, 9]])
    stacked = stacked_stats(channel_classes, np.full((4, 3), 0.95))
    assert stacked["modes"] == 3 and stacked["confident"] == 1.0
    assert stacked["kl_uniform"] == pytest.approx(0.5 * math.log(500) + 2 * 0.25 * math.log(250))


def _reference_fid(x, y):
    """FID with Tr((S1 S2)^1/2) from the eigenvalues of S1 S2 (real and non-negative for covariances)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eigenvalues = np.linalg.eigvals(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.abs(eigenvalues.real))))


def test_frechet_distance_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    y = rng.normal(loc=0.3, scale=1.5, size=(300, 8)) @ rng.normal(size=(8, 8))
    ours = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert ours == pytest.approx(_reference_fid(x, y), rel=1e-6)
    assert frechet_distance(x.mean(0), np.cov(x, rowvar=False), x.mean(0), np.cov(x, rowvar=False)) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_few_features_in_many_dimensions_is_exact():
    """Fewer samples than dimensions, as in a small FID: the subspace shortcut agrees with the full formula."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 60))
    y = rng.normal(loc=0.2, size=(9, 60)) @ rng.normal(scale=0.3, size=(60, 60))
    assert frechet_distance_of_features(x, y) == pytest.approx(_reference_fid(x, y), rel=1e-6)
    assert frechet_distance_of_features(x, x + 1.5) == pytest.approx(60 * 1.5**2, rel=1e-6)  # a shift: the mean term alone
    big = rng.normal(size=(80, 6))  # more samples than dimensions: the plain formula
    assert frechet_distance_of_features(big, big[::-1] * 2) == pytest.approx(_reference_fid(big, big * 2), rel=1e-6)


def _slow_kid(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as the double sums of its definition."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_a_slow_reference_on_small_features():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 5)), rng.normal(loc=0.5, size=(30, 5))
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=30)  # the whole sets: every subset is the same
    assert mean == pytest.approx(_slow_kid(x, y), rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)
    same, _ = kernel_inception_distance(x, x.copy(), subsets=1, subset_size=30)
    assert abs(same) < abs(mean)


@pytest.fixture(scope="module")
def classifier_and_held_out():
    images, labels = load_mnist_digits()
    order = np.random.default_rng(0).permutation(len(images))
    train, held_out = order[:4000], order[4000:]
    return train_classifier(images[train], labels[train], epochs=2), images[held_out], labels[held_out]


def test_the_digit_classifier_learns_the_embedded_digits(classifier_and_held_out):
    model, images, labels = classifier_and_held_out
    classes, confidences = predict(model, images)
    assert (classes == labels).mean() > 0.9


def test_real_digits_score_as_digits_and_noise_does_not(classifier_and_held_out):
    model, images, _ = classifier_and_held_out
    real = score_images(images[..., None], "digits", model)
    assert real["classes_present"] == 10 and real["kl_uniform"] < 0.05 and real["confident"] > 0.6
    noise = np.random.default_rng(0).integers(0, 256, size=(500, 28, 28, 1), dtype=np.uint8)
    assert score_images(noise, "digits", model)["confident"] < real["confident"] - 0.3


def test_stacked_real_digits_cover_many_modes(classifier_and_held_out):
    model, images, _ = classifier_and_held_out
    picks = np.random.default_rng(0).integers(0, len(images), size=(3000, 3))
    stacked = np.stack([images[picks[:, c]] for c in range(3)], axis=-1)  # (3000, 28, 28, 3)
    stats = score_images(stacked, "stacked", model)
    assert stats["modes"] > 900 and stats["kl_uniform"] < 0.6
    one_mode = np.repeat(stacked[:1], 200, axis=0)
    assert score_images(one_mode, "stacked", model)["modes"] == 1


def test_eval_command_scores_a_run_and_appends_a_row(tmp_path, capsys):
    import json
    import os
    from pathlib import Path

    from dcgan.checkpoint import save_atomic
    from dcgan.classifier import CLASSIFIER_VERSION
    from dcgan.cli import main

    images, labels = load_mnist_digits()
    quick = train_classifier(images[:300], labels[:300], epochs=1)  # stands in for the cached one: wiring, not accuracy
    cache = Path(os.environ["DCGAN_CACHE"])
    cache.mkdir(parents=True, exist_ok=True)
    save_atomic(quick.state_dict(), cache / f"digit-classifier-v{CLASSIFIER_VERSION}.pt")
    run = tmp_path / "run"
    argv = ["train", "--data", "digits", "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4", "--batch-size", "64",
            "--max-steps", "2", "--no-progress", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    assert main(["eval", "--run", str(run), "--n", "40"]) == 0
    assert "classes_present" in capsys.readouterr().out
    row = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
    assert row["n"] == 40 and sum(row["class_histogram"]) == 40 and 0 <= row["confident"] <= 1
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2


def test_importing_the_trainer_does_not_import_scipy():
    # scipy.linalg is only needed by FID; every `dcgan train` would otherwise pay for it at start-up
    import subprocess
    import sys

    code = "import dcgan.train, sys; print('scipy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
