"""Pictures of a run: image grids, the loss plot, the progress animation, real vs fake.

Grids are built with numpy (torchvision's make_grid layout: `padding` pixels between tiles) and
written with Pillow; plots use matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, nrow: int = 8, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (rows*(H+p)+p, nrow*(W+p)+p, C) image, row-major tiles."""
    count, height, width, channels = images.shape
    ncol = min(nrow, count)
    nrows = math.ceil(count / ncol)
    grid = np.full((nrows * (height + padding) + padding, ncol * (width + padding) + padding, channels), pad_value, np.uint8)
    for index, image in enumerate(images):
        row, col = divmod(index, ncol)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def to_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def save_grid(images: np.ndarray, path: Path, nrow: int = 8) -> np.ndarray:
    grid = image_grid(images, nrow)
    to_pil(grid).save(path)
    return grid


def save_animation(grids: Sequence[np.ndarray], path: Path, ms_per_frame: int = 500) -> None:
    """The fixed-noise grids in order, as a looping GIF (the tutorial's animation)."""
    frames = [to_pil(g).convert("RGB") if g.shape[-1] == 3 else to_pil(g) for g in grids]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)


def load_grids(folder: Path) -> list[np.ndarray]:
    """The saved grids of a run in order (epoch_0001.png, ..., then a closing step_*.png)."""
    grids = []
    for path in sorted(Path(folder).glob("*.png")):
        array = np.asarray(Image.open(path))
        grids.append(array[..., None] if array.ndim == 2 else array)
    return grids


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display needed; set here so importing dcgan never touches matplotlib
    import matplotlib.pyplot as plt

    return plt


def save_loss_plot(steps: Sequence[int], loss_g: Sequence[float], loss_d: Sequence[float], path: Path) -> None:
    """Generator and discriminator loss against iteration, as the tutorial's figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.set_title("Generator and Discriminator Loss During Training")
    ax.plot(steps, loss_g, label="G", linewidth=0.8)
    ax.plot(steps, loss_d, label="D", linewidth=0.8)
    ax.set_xlabel("iterations")
    ax.set_ylabel("Loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_real_vs_fake(real: np.ndarray, fake: np.ndarray, path: Path) -> None:
    """Real images beside generated ones, as the tutorial's last figure."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4))
    for ax, images, title in ((axes[0], real, "Real Images"), (axes[1], fake, "Fake Images")):
        grid = image_grid(images)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray" if grid.shape[-1] == 1 else None, vmin=0, vmax=255)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
