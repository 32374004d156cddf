"""The FID Inception (layout of pytorch-fid's weights file), its loading, and `dcgan eval --fid`.

The real weights file is never downloaded: a random state dict with the same keys stands in for it.
Inception runs at 299x299 (about 0.5 s an image on 2 CPU cores), so only a handful of images go through it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import error_line, random_images, write_png_folder
from dcgan.cli import main
from dcgan.errors import DcganError
from dcgan.inception import (
    FIDInceptionV3,
    WEIGHTS_NAME,
    check_weights,
    expected_shapes,
    load_inception,
    pool_features,
    same_size_max_pool,
    tf_average_pool,
)
from dcgan.metrics import frechet_distance_of_features

# Shapes read off pytorch-fid's fid_inception_v3 (torchvision's Inception3 with num_classes=1008,
# aux_logits=False and the FID blocks), which the weights file pt_inception-2015-12-05-6726825d.pth fills.
KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_mean": (32,),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_4a_3x3.bn.weight": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch1x1.conv.weight": (320, 1280, 1, 1),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3_2a.conv.weight": (384, 384, 1, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.running_var": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
CONVOLUTIONS = 94  # 5 stem + 3 x 7 (A) + 4 (B) + 4 x 10 (C) + 6 (D) + 2 x 9 (E), each conv + BatchNorm
PARAMETERS = 23_850_960  # torchvision inception_v3's 27,161,264 - AuxLogits' 3,326,696 + 8 more fc classes' 16,392


def test_the_network_has_exactly_the_weights_file_layout():
    shapes = expected_shapes()  # what a weights file must hold (BatchNorm's step counters aside)
    assert len(shapes) == CONVOLUTIONS * 5 + 2  # conv.weight, bn.{weight, bias, running_mean, running_var}; fc
    assert sum(name.endswith("conv.weight") for name in shapes) == CONVOLUTIONS
    assert {name: shapes[name] for name in KNOWN_SHAPES} == KNOWN_SHAPES
    assert not any(name.startswith("AuxLogits") or name.endswith(".bias") and ".conv." in name for name in shapes)
    with torch.device("meta"):
        network = FIDInceptionV3()
    assert sum(p.numel() for p in network.parameters()) == PARAMETERS
    step_counters = {name.replace("running_var", "num_batches_tracked") for name in shapes if "running_var" in name}
    assert set(network.state_dict()) == set(shapes) | step_counters


def test_the_fid_blocks_pool_as_tensorflow_does():
    ones = torch.ones(1, 2, 5, 5)
    assert torch.equal(tf_average_pool(ones), ones)  # the zero padding is left out of the mean at the borders
    ramp = torch.arange(25.0).reshape(1, 1, 5, 5)
    assert same_size_max_pool(ramp)[0, 0, 0, 0] == 6 and same_size_max_pool(ramp).shape == ramp.shape
    with torch.device("meta"):
        network = FIDInceptionV3()
    assert network.Mixed_7b.pool is tf_average_pool and network.Mixed_7c.pool is same_size_max_pool


def test_weights_without_step_counters_pass_and_torchvision_imagenet_weights_fail():
    shapes = expected_shapes()
    check_weights({name: torch.empty(shape, device="meta") for name, shape in shapes.items()}, Path("ok.pth"))
    imagenet = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.empty(1000, 2048, device="meta"), torch.empty(1000, device="meta")
    imagenet["AuxLogits.fc.weight"] = torch.empty(1000, 768, device="meta")
    with pytest.raises(DcganError) as error:
        check_weights(imagenet, Path("inception_v3_google.pth"))
    message = str(error.value)
    assert "1 unexpected (e.g. AuxLogits.fc.weight)" in message and "fc.bias (1000,) (expected (1008,))" in message
    assert "torchvision's ImageNet Inception" in message and "\n" not in message


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A random stand-in for pytorch-fid's file: the same tensors, He-initialised so features differ between images."""
    torch.manual_seed(0)
    network = FIDInceptionV3()
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # keeps activations O(1) through 94 layers
    path = tmp_path_factory.mktemp("weights") / WEIGHTS_NAME
    torch.save(network.state_dict(), path)
    return path


def test_features_are_2048_wide_finite_deterministic_and_grayscale_is_rgb(weights_file):
    network = load_inception(weights_file)
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    gray = random_images(1, 24, 24, 1, seed=2)
    images = np.concatenate([random_images(1, 24, 24, 3, seed=1), np.repeat(gray, 3, axis=-1)])  # (2, 24, 24, 3)
    features = pool_features(network, images)
    assert features.shape == (2, 2048) and features.dtype == np.float32 and np.isfinite(features).all()
    assert np.array_equal(features, pool_features(network, images, batch_size=1))  # deterministic, batch-independent
    assert not np.allclose(features[0], features[1])
    assert np.allclose(pool_features(network, gray), features[1:], atol=1e-6)  # grayscale is read as gray RGB


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> Path:
    """A 1-step colour run on 12 PNG files (a folder source, so its decoded images and features are cached)."""
    root = tmp_path_factory.mktemp("colour")
    write_png_folder(root / "photos", random_images(12, 16, 16, 3, seed=3))
    run = root / "run"
    argv = ["train", "--data", str(root / "photos"), "--image-size", "16", "--nz", "8", "--ngf", "4", "--ndf", "4",
            "--batch-size", "4", "--max-steps", "1", "--no-progress", "--out", str(run),
            "--cache-dir", str(root / "cache")]  # fmt: skip
    assert main(argv) == 0
    return run


def test_eval_fid_without_weights_or_with_wrong_ones_is_one_line(colour_run, tmp_path, capsys):
    missing = error_line(capsys, ["eval", "--run", str(colour_run), "--fid"])
    folder = Path(os.environ["DCGAN_CACHE"]) / "inception"
    assert WEIGHTS_NAME in missing and str(folder) in missing and "--inception-weights" in missing
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    wrong_line = error_line(capsys, ["eval", "--run", str(colour_run), "--inception-weights", str(wrong)])  # implies --fid
    assert "is not pytorch-fid's Inception weights" in wrong_line
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not weights")
    garbage_line = error_line(capsys, ["eval", "--run", str(colour_run), "--fid", "--inception-weights", str(garbage)])
    assert "cannot read Inception weights" in garbage_line
    assert "add --fid" in error_line(capsys, ["eval", "--run", str(colour_run)])  # colour runs have no classifier metric


def test_eval_fid_scores_a_colour_run_and_caches_the_real_features(colour_run, weights_file, capsys):
    assert main(["eval", "--run", str(colour_run), "--n", "3", "--fid", "--inception-weights", str(weights_file)]) == 0
    assert "fid" in capsys.readouterr().out
    row = json.loads((colour_run / "eval.jsonl").read_text().splitlines()[-1])
    assert row["n"] == 3 and row["n_real"] == 3 and row["fid"] > 0 and np.isfinite([row["kid"], row["kid_std"]]).all()
    assert "classes_present" not in row
    # the real features were cached; computed afresh from the same 3 training images they agree, so FID(real, real) ~ 0
    (cached_file,) = (Path(os.environ["DCGAN_CACHE"]) / "inception" / "features").glob("real-*-3.npy")
    cached = np.load(cached_file)
    from dcgan.fid import real_images
    from dcgan.run_files import read_config

    images, _ = real_images(read_config(colour_run), 3)
    again = pool_features(load_inception(weights_file), images)
    assert np.allclose(cached, again, atol=1e-6)
    assert abs(frechet_distance_of_features(cached, again)) < 1e-6 < row["fid"]


def test_digit_runs_get_classifier_metrics_and_fid_together():
    """score_generator's wiring, with a cheap stand-in for Inception's features (pixels) and for the classifier."""
    from dcgan.config import ModelConfig
    from dcgan.evaluate import metric_kind, score_generator
    from dcgan.fid import FeatureNetwork, FidReference
    from dcgan.models import Generator

    class PixelFeatures(FeatureNetwork):
        def features(self, images: np.ndarray) -> np.ndarray:
            return images.reshape(len(images), -1).astype(np.float32)

    class ConstantClassifier(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 10)

    assert metric_kind("mnist", 1, fid=True) == "digits" and metric_kind("photos.zip", 3, fid=True) is None
    generator = Generator(ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4))
    real = random_images(6, 16, 16, 1).reshape(6, -1).astype(np.float32)
    reference = FidReference(PixelFeatures(network=None, weights_digest=""), real, log=lambda _: None)
    result = score_generator(generator, "digits", 5, 0, ConstantClassifier(), fid=reference)
    assert result["classes_present"] == 1 and result["n_real"] == 6 and result["fid"] > 0
    assert {"kid", "kid_std", "seconds"} <= set(result)
