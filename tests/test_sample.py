import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.checkpoint import read_file
from dcgan.config import ModelConfig, TrainConfig
from dcgan.errors import DcganError
from dcgan.models import build_models
from dcgan.sample import generate, latent, load_generator, save_samples
from dcgan.train import Trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "run"
    config = TrainConfig(data="fake", image_size=16, nz=8, ngf=4, ndf=4, batch_size=64, max_steps=2, n_fixed=8, progress=False, out=str(out))
    return Trainer(config, log=lambda m: None).fit()


def test_same_seed_same_images_whatever_the_batch(run):
    generator = load_generator(run)
    z = latent(10, 8, seed=4)
    a, b = generate(generator, z), generate(generator, z, batch_size=3)
    assert a.shape == (10, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate(generator, latent(10, 8, seed=5)))


def test_sampling_does_not_change_the_generator(run):
    generator = load_generator(run)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    generate(generator.train(), latent(4, 8, 0))
    assert generator.training  # mode restored
    assert all(torch.equal(v, before[k]) for k, v in generator.state_dict().items())  # running stats too


def test_grid_folder_and_npz_outputs(tmp_path, run):
    images = generate(load_generator(run), latent(5, 8, 0))
    save_samples(images, tmp_path / "grid.png")
    assert Image.open(tmp_path / "grid.png").size == (5 * 18 + 2, 18 + 2)
    save_samples(images, tmp_path / "singles")
    files = sorted((tmp_path / "singles").iterdir())
    assert len(files) == 5
    np.testing.assert_array_equal(np.asarray(Image.open(files[2])), images[2])
    save_samples(images, tmp_path / "arr.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "arr.npz")["images"], images)


def test_npz_of_grayscale_is_n_h_w(tmp_path):
    generator, _ = build_models(ModelConfig(image_size=16, channels=1, nz=8, ngf=4, ndf=4))
    images = generate(generator, latent(3, 8, 0))
    save_samples(images, tmp_path / "g", "npz")
    assert np.load(tmp_path / "g.npz")["images"].shape == (3, 16, 16)


def test_checkpoint_generator_matches_training_weights(run):
    saved = read_file(run / "checkpoints" / "final.pt")["generator"]
    generator = load_generator(checkpoint=run / "checkpoints" / "final.pt")
    assert all(torch.equal(v, saved[k]) for k, v in generator.state_dict().items())


def test_missing_run_and_checkpoint_errors(tmp_path):
    with pytest.raises(DcganError, match="run folder not found"):
        load_generator(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DcganError, match="no checkpoints"):
        load_generator(tmp_path / "empty")
    with pytest.raises(DcganError, match="checkpoint not found"):
        load_generator(checkpoint=tmp_path / "x.pt")
