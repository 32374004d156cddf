"""Small data made in the tests; nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # every test gets its own decoded-image cache, never the user's
    monkeypatch.setenv("DCGAN_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(2)


def random_images(count: int, height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random uint8 images (blocks), so resizing has something to preserve."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(count, max(1, height // 4), max(1, width // 4), channels), dtype=np.uint8)
    big = small.repeat(4, axis=1).repeat(4, axis=2)[:, :height, :width]
    return np.ascontiguousarray(big)


def write_png_folder(folder, images: np.ndarray, prefix: str = "img") -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{prefix}_{index:03d}.png"
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)
        paths.append(path)
    return paths


def error_line(capsys, argv):
    """Run the CLI; assert exit status 2 with one line on stderr and no traceback; return that line."""
    from dcgan.cli import main

    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err
