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


# ---------------------------------------------------------------- interpolation (slerp)


def test_slerp_ends_are_exactly_the_given_latents():
    from dcgan.sample import slerp

    start, end = latent(2, 8, seed=1)  # each (8, 1, 1)
    path = slerp(start, end, torch.linspace(0, 1, 11))
    assert path.shape == (11, 8, 1, 1) and path.dtype == start.dtype
    assert torch.equal(path[0], start) and torch.equal(path[-1], end)


def test_slerp_keeps_the_norm_where_a_straight_line_does_not():
    from dcgan.sample import slerp

    start, end = latent(2, 100, seed=0)
    end = end * (start.norm() / end.norm())  # equal norms: the whole arc lies on their sphere
    t = torch.linspace(0, 1, 9)
    norms = slerp(start, end, t).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, start.norm().item()), rtol=1e-5, atol=0)
    straight_middle = ((start + end) / 2).norm()
    assert straight_middle < 0.8 * start.norm()  # two random 100-d vectors are nearly orthogonal: about 1/sqrt(2)


def test_slerp_of_parallel_vectors_is_the_straight_line():
    from dcgan.sample import slerp

    start = latent(1, 8, seed=3)[0]
    torch.testing.assert_close(slerp(start, 3 * start, [0.5])[0], 2 * start)


def test_interpolation_rows_start_and_end_at_seeded_latents(run, tmp_path):
    from dcgan.sample import interpolation_latents, save_interpolation

    z = interpolation_latents(rows=3, steps=5, nz=8, seed=7)
    assert z.shape == (15, 8, 1, 1)
    for row in range(3):
        assert torch.equal(z[row * 5], latent(1, 8, seed=7 + row)[0])  # the image `dcgan sample --n 1 --seed 7+row` draws
        assert torch.equal(z[row * 5 + 4], latent(1, 8, seed=8 + row)[0])
    images = generate(load_generator(run), z)
    save_interpolation(images, 5, tmp_path / "walk.png")
    assert Image.open(tmp_path / "walk.png").size == (5 * 18 + 2, 3 * 18 + 2)  # a row per pair of seeds
    gif = Image.open(tmp_path / "walk.gif")
    assert gif.n_frames == 3 * 4 + 1 and gif.size == (128, 128)  # shared ends shown once; 16 px enlarged 8x


def test_interpolate_through_the_cli(run, tmp_path, capsys):
    from dcgan.cli import main

    out = tmp_path / "walk.png"
    assert main(["sample", "--run", str(run), "--n", "2", "--interpolate", "4", "--seed", "5", "--out", str(out)]) == 0
    assert "2 interpolations of 4 steps" in capsys.readouterr().out and out.with_suffix(".gif").is_file()
    grid = np.asarray(Image.open(out))
    first = generate(load_generator(run), latent(1, 8, seed=5))[0]  # (16, 16, 3)
    np.testing.assert_array_equal(grid[2:18, 2:18], first)
    for argv, message in (
        (["--interpolate", "1", "--out", str(out)], "at least 2 steps"),
        (["--interpolate", "3", "--out", str(tmp_path / "walk.npz")], "give --out FILE.png"),
    ):
        assert main(["sample", "--run", str(run)] + argv) == 2
        assert message in capsys.readouterr().err
