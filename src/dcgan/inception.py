"""The Inception-v3 feature extractor of FID, in plain PyTorch, loading pytorch-fid's weights file.

FID numbers are only comparable when computed with the same network as the papers': the TensorFlow
Inception of 2015-12-05, which pytorch-fid ported to PyTorch as `pt_inception-2015-12-05-6726825d.pth`.
This module rebuilds that network (pytorch-fid's `fid_inception_v3`: torchvision's `Inception3`
layout with FID-specific blocks) without torchvision, so its state_dict keys and shapes are exactly
the file's: `Conv2d_1a_3x3.conv.weight`, ..., `Mixed_7c.branch_pool.bn.running_var`, `fc.weight`
(1008, 2048), `fc.bias`; no `AuxLogits`. The 1008-class `fc` is never run; it is here so that the
file loads as it is.

What differs from torchvision's ImageNet Inception (and what makes its features the FID ones):
- the average pools inside the A, C and first E blocks leave the zero padding out of the mean
  (`count_include_pad=False`), as TensorFlow's average pool does;
- the last E block (Mixed_7c) max-pools where the others average-pool, as the TF graph does.

Input (pytorch-fid with resize_input=True, normalize_input=True): images in [0, 1] (uint8 is
divided by 255), resized to 299x299 bilinearly (align_corners=False), scaled to [-1, 1];
grayscale is repeated to three channels, as pytorch-fid's `Image.convert("RGB")` does. Output: the
2048-d average pool of the last block ("pool3"), the features FID and KID are computed on.

Nothing is downloaded: the weights file is one users fetch themselves (see `find_weights`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import UnreadableFile, load_tensors_only
from .data import default_cache_dir
from .errors import DcganError

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's port of TF's 2015-12-05 Inception
WEIGHTS_PATTERN = "pt_inception-2015-12-05-*.pth"  # what the cache folder is searched for
# shown in error messages only; this package never fetches it
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
INPUT_SIZE = 299  # the side every image is resized to, as pytorch-fid does
FEATURE_DIM = 2048  # length of a pool3 feature vector
NUM_CLASSES = 1008  # the TF graph's classifier width (1000 ImageNet classes + 8 unused); fc is never run


class BasicConv2d(nn.Module):
    """conv (no bias: BatchNorm's shift replaces it) -> BatchNorm (TF's eps 0.001) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_options: Any):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_options)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def tf_average_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, that divides by the pixels inside the image, as TensorFlow's does."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def same_size_max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


# The block names (A to E) and branch names are torchvision's, which the weights file's keys use.


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d): out = 64 + 64 + 96 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(tf_average_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (Mixed_6a): out = 384 + 96 + in_channels channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e): out = 4 x 192 = 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(tf_average_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (Mixed_7a): out = 320 + 192 + in_channels channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 convolutions (Mixed_7b, 7c): out = 320 + 768 + 768 + 192 = 2048.

    `max_pool` selects the pool branch's pooling: the FID graph's Mixed_7b averages (without the
    padding), its Mixed_7c takes the maximum.
    """

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__()
        self.pool = same_size_max_pool if max_pool else tf_average_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionV3(nn.Module):
    """Images (B, C, H, W), C 1 or 3, uint8 in [0, 255] or float in [0, 1] -> pool3 features (B, 2048)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # in the weights file; never run

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()  # [0, 1]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale as RGB, as pytorch-fid's convert("RGB") makes it
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1  # (B, 3, 299, 299) in [-1, 1], the range the TF graph was trained on
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        x = self.Mixed_7a(x)  # (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (B, 2048)


@torch.no_grad()
def pool_features(network: FIDInceptionV3, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """float32 (N, 2048) pool3 features of uint8 images (N, H, W, C), on the network's device.

    The batch size only bounds memory (about 20 MB of activations an image at 299x299): in eval
    mode each image's features depend on that image alone.
    """
    network.eval()
    device = next(network.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
        chunks.append(network(batch.to(device)).cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, FEATURE_DIM), np.float32)


# ---------------------------------------------------------------- the weights file


def weights_folder(cache_dir: Optional[Path] = None) -> Path:
    """Where the weights file is looked for: <cache dir>/inception/ ($DCGAN_CACHE or ~/.cache/dcgan)."""
    return Path(cache_dir or default_cache_dir()) / "inception"


def find_weights(path: Optional[Path] = None, cache_dir: Optional[Path] = None) -> Path:
    """The given weights file, else the one in the cache folder; a missing file is one actionable line."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DcganError(f"Inception weights file not found: {path} (--inception-weights)")
        return path
    folder = weights_folder(cache_dir)
    found = sorted(folder.glob(WEIGHTS_PATTERN)) if folder.is_dir() else []
    if not found:
        raise DcganError(
            f"FID needs pytorch-fid's Inception weights {WEIGHTS_NAME}, which is not in {folder}/: "
            f"fetch it yourself ({WEIGHTS_URL}) and put it in that folder, or pass --inception-weights PATH"
        )
    exact = folder / WEIGHTS_NAME
    return exact if exact in found else found[0]


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor the weights file must hold, with its shape; BatchNorm's step counters are optional."""
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        network = FIDInceptionV3()
    return {name: tuple(t.shape) for name, t in network.state_dict().items() if not name.endswith("num_batches_tracked")}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = load_tensors_only(path)  # refuses pickles that would run code
    except UnreadableFile as error:
        if error.calls:  # the file names a function or class to call; weights never need that
            raise DcganError(f"refusing to load Inception weights {path}: it asks to call {error.calls}; weights are tensors") from None
        raise DcganError(f"cannot read Inception weights {path}: not a PyTorch weights file, or corrupt ({error.detail})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DcganError(f"{path} is not a state dict of tensors, so not pytorch-fid's Inception weights {WEIGHTS_NAME}")
    return state


def check_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Every FID Inception tensor present with its shape, nothing else; else one line saying what is wrong."""
    expected = expected_shapes()
    names = {name for name in state if not name.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
    wrong = [f"{name} {tuple(state[name].shape)} (expected {expected[name]})" for name in sorted(names & set(expected))
             if tuple(state[name].shape) != expected[name]]  # fmt: skip
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
    imagenet = any(name.startswith("AuxLogits") for name in unexpected)  # torchvision's inception_v3 weights
    hint = "; torchvision's ImageNet Inception is a different network" if imagenet else ""
    raise DcganError(f"{path} is not pytorch-fid's Inception weights {WEIGHTS_NAME}: {', '.join(problems)}{hint}")


def file_digest(path: Path) -> str:
    """sha256 of a file, read in chunks (the weights file is about 92 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_inception(path: Optional[Path] = None, cache_dir: Optional[Path] = None) -> FIDInceptionV3:
    """The FID Inception in eval mode with the weights of `path` (or the cache folder's file), on the CPU."""
    path = find_weights(path, cache_dir)
    state = _read_state_dict(path)
    check_weights(state, path)
    network = FIDInceptionV3()
    network.load_state_dict(state, strict=False)  # strict on every weight (checked above); step counters may be absent
    return network.eval().requires_grad_(False)
