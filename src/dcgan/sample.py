"""Drawing images from a trained generator.

Images are generated with BatchNorm in eval mode (running statistics), so each image depends only
on its own z: the same seed gives the same images whatever the batch size, and sampling never
changes the generator. z comes from a torch.Generator seeded with `seed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .checkpoint import load_network_weights, load_weights, network_state, newest_good
from .data import to_uint8
from .errors import DcganError
from .models import Generator
from .plots import save_grid, to_pil


def latent(n: int, nz: int, seed: int) -> torch.Tensor:
    """n latent vectors (n, nz, 1, 1) ~ N(0, I), the same for the same seed."""
    return torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()  # inference: no graph is stored, so memory stays at the activations of one batch
def generate(generator: Generator, z: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, H, W, C) images for the latent vectors z, BatchNorm in eval mode."""
    was_training = generator.training
    generator.eval()
    try:
        device = next(generator.parameters()).device
        chunks = [to_uint8(generator(z[i : i + batch_size].to(device))) for i in range(0, len(z), batch_size)]
    finally:
        generator.train(was_training)
    return np.concatenate(chunks)


def load_generator(run: Optional[Path] = None, checkpoint: Optional[Path] = None) -> Generator:
    """A generator from a given checkpoint or tutorial netG .pth, else from a run's newest checkpoint."""
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        state_dict, model_config = load_network_weights(checkpoint, "generator")
    elif run is not None:
        if not Path(run).is_dir():
            raise DcganError(f"run folder not found: {run}")
        checkpoint, payload = newest_good(Path(run) / "checkpoints")
        state_dict, model_config = network_state(payload, "generator", checkpoint)
    else:
        raise DcganError("give --run RUN or --checkpoint FILE")
    generator = Generator(model_config)
    load_weights(generator, state_dict, f"generator weights in {checkpoint}")
    return generator.eval()


def save_samples(images: np.ndarray, out: Path, fmt: Optional[str] = None) -> str:
    """Write images as a grid PNG (out ends in .png), an .npz (uint8 'images'), or a folder of PNGs."""
    out = Path(out)
    fmt = fmt or ("npz" if out.suffix.lower() == ".npz" else "png")
    if fmt not in ("png", "npz"):
        raise DcganError(f"unknown format '{fmt}': use png or npz")
    try:
        if fmt == "npz":
            if out.suffix.lower() != ".npz":
                out = out.with_name(out.name + ".npz")
            out.parent.mkdir(parents=True, exist_ok=True)
            array = images[..., 0] if images.shape[-1] == 1 else images  # (N, H, W) or (N, H, W, C)
            np.savez_compressed(out, images=array)
            return f"{len(images)} images in {out} (array 'images', uint8 {array.shape})"
        if out.suffix.lower() == ".png":
            out.parent.mkdir(parents=True, exist_ok=True)
            save_grid(images, out)
            return f"a grid of {len(images)} images in {out}"
        out.mkdir(parents=True, exist_ok=True)
        width = max(4, len(str(len(images) - 1)))
        for index, image in enumerate(images):
            to_pil(image).save(out / f"{index:0{width}d}.png")
        return f"{len(images)} PNG files in {out}/"
    except OSError as error:
        raise DcganError(f"cannot write samples to {out}: {error.strerror or error}") from None
