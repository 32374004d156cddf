"""Drawing images from a trained generator.

Images are generated with BatchNorm in eval mode (running statistics), so each image depends only
on its own z: the same seed gives the same images whatever the batch size, and sampling never
changes the generator. z comes from a torch.Generator seeded with `seed`.

Interpolation walks the latent space along great circles (slerp) between latents drawn with
consecutive seeds, so its endpoints are exactly the images `dcgan sample --n 1 --seed S` draws.

A run set up with `--truncation PSI` draws from z scaled by PSI (`truncate`); sample, eval and the
run's own grids all use the run's value unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .checkpoint import load_network_weights, load_weights, network_state, newest_good, read_file
from .config import check_truncation
from .data import to_uint8
from .errors import DcganError
from .models import Generator
from .plots import save_animation, save_grid, to_pil

GIF_MIN_SIDE = 128  # interpolation GIF frames are enlarged (nearest neighbour) to at least this many pixels
GIF_MS_PER_FRAME = 80  # interpolation GIF frame duration in milliseconds


def latent(n: int, nz: int, seed: int) -> torch.Tensor:
    """n latent vectors (n, nz, 1, 1) ~ N(0, I), the same for the same seed."""
    return torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed))


def with_categories(z: torch.Tensor, info_codes: tuple[int, ...], categories: list[int]) -> torch.Tensor:
    """z with each InfoGAN code set to the given category (its numbers: that category's one-hot vector).

    Only the argmax of a code's numbers reaches G, so this is z's image drawn in that category.
    """
    if not info_codes:
        raise DcganError("--code picks InfoGAN categories, and this generator has none (train with --info-codes)")
    if len(categories) != len(info_codes):
        raise DcganError(f"--code gives {len(categories)} categories, and this generator has {len(info_codes)} codes ({','.join(map(str, info_codes))})")
    for category, k in zip(categories, info_codes):
        if not 0 <= category < k:
            raise DcganError(f"--code category {category} is outside 0..{k - 1}, the categories of a code with {k}")
    z = z.clone()
    start = z.shape[1] - sum(info_codes)
    for category, k in zip(categories, info_codes):
        z[:, start : start + k] = 0.0
        z[:, start + category] = 1.0
        start += k
    return z


def truncate(z: torch.Tensor, truncation: float) -> torch.Tensor:
    """z scaled by `truncation` (the truncation trick): nearer the centre of N(0, I), cleaner, less varied images.

    A positive scale keeps the argmax of every InfoGAN code, so each sample keeps its categories;
    1 returns z itself, so draws without truncation are bit for bit what they were.
    """
    check_truncation(truncation)
    return z if truncation == 1 else z * truncation


def sampling_truncation(run: Optional[Path] = None, checkpoint: Optional[Path] = None) -> float:
    """The truncation a run draws with, from the configuration saved in the checkpoint that gives the weights.

    That is `checkpoint`, else the run's newest, as `load_generator` picks them; 1 (none) for a
    tutorial netG, a .safetensors export, or a run made before the option existed.
    """
    if checkpoint is None and run is not None:
        checkpoint, payload = newest_good(Path(run) / "checkpoints")
    elif checkpoint is None or Path(checkpoint).suffix.lower() == ".safetensors":
        return 1.0
    else:
        payload = read_file(Path(checkpoint))  # already read once by load_generator, so it is readable
    config = payload.get("config") if isinstance(payload, dict) else None  # a tutorial netG has none
    value = config.get("truncation", 1.0) if isinstance(config, dict) else 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DcganError(f"{checkpoint}: its truncation must be a number in (0, 1], not {value!r}: give --truncation")
    check_truncation(value)
    return float(value)


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
    """A generator from a given checkpoint, tutorial netG .pth or .safetensors export, else from a run's newest checkpoint."""
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if checkpoint.suffix.lower() == ".safetensors":  # written by `dcgan export`
            from .export import load_safetensors_generator

            return load_safetensors_generator(checkpoint)
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


def slerp(start: torch.Tensor, end: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation from `start` (t=0) to `end` (t=1), for each t in a 1-D `t`: (K, *start.shape).

    Latents drawn from N(0, I) in nz dimensions lie near the sphere of radius sqrt(nz). A straight line
    between two of them cuts inside it (the midpoint of two orthogonal ones has 1/sqrt(2) of their
    norm), where the generator never saw an input; the great circle keeps it: between ends of equal
    norm every point has that norm.
    """
    # float64 inside: the ends then round back to exactly `start` and `end`, even where sin's
    # vectorised and scalar paths differ in the last bit
    a, b = start.double(), end.double()
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *([1] * start.dim()))  # (K, 1, ..., 1)
    cos_omega = torch.dot(a.flatten(), b.flatten()) / (a.norm() * b.norm())
    omega = torch.arccos(cos_omega.clamp(-1.0, 1.0))  # the angle between the ends
    sin_omega = torch.sin(omega)
    if sin_omega < 1e-6:
        # (anti)parallel ends: no unique great circle; a straight line is the limit for parallel ones
        return ((1 - t) * a + t * b).to(start.dtype)
    weight_start = torch.sin((1 - t) * omega) / sin_omega  # 1 at t=0, 0 at t=1
    weight_end = torch.sin(t * omega) / sin_omega  # 0 at t=0, 1 at t=1
    return (weight_start * a + weight_end * b).to(start.dtype)


def interpolation_latents(rows: int, steps: int, nz: int, seed: int) -> torch.Tensor:
    """(rows * steps, nz, 1, 1): row i walks by slerp from the latent of seed+i to that of seed+i+1.

    Each end is `latent(1, nz, seed + i)`, one seed per endpoint, so a row can be redrawn alone and
    row i ends where row i+1 starts.
    """
    ends = [latent(1, nz, seed + i)[0] for i in range(rows + 1)]  # each (nz, 1, 1)
    t = torch.linspace(0, 1, steps)
    return torch.cat([slerp(ends[i], ends[i + 1], t) for i in range(rows)])


def save_interpolation(images: np.ndarray, steps: int, out: Path) -> str:
    """A grid (one row per pair of seeds, `steps` columns) at `out` (.png), and the walk as a GIF beside it."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DcganError(f"--interpolate writes a .png grid and a .gif beside it: give --out FILE.png, not {out}")
    gif = out.with_suffix(".gif")
    # the walk through every row in turn, without repeating the image a row shares with the next
    walk = [image for index, image in enumerate(images) if index < steps or index % steps != 0]
    scale = max(1, -(-GIF_MIN_SIDE // images.shape[1]))  # ceil: small images are enlarged to be seen
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_grid(images, out, nrow=steps)
        save_animation([frame.repeat(scale, 0).repeat(scale, 1) for frame in walk], gif, GIF_MS_PER_FRAME)
    except OSError as error:
        raise DcganError(f"cannot write {out}: {error.strerror or error}") from None
    rows = len(images) // steps
    return f"{rows} interpolations of {steps} steps in {out}, and the walk as {len(walk)} GIF frames in {gif}"
